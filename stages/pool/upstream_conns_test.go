package pool

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"spooky/internal/testkit"

	"golang.org/x/net/http2"
)

// zeroStreamsH2C plays an HTTP/2 server that offers no stream slot at all
// (SETTINGS_MAX_CONCURRENT_STREAMS 0) and keeps every connection open.
func zeroStreamsH2C(c net.Conn) {
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c, preface); err != nil {
		return
	}
	fr := http2.NewFramer(c, c)
	if fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 0}) != nil {
		return
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
			if fr.WriteSettingsAck() != nil {
				return
			}
		}
	}
}

// TestNoStreamSlotIsNoReasonToDialAgain: an upstream that offers
// MAX_CONCURRENT_STREAMS 0 gets at most max_connections connections from a
// request that waits for a stream until its deadline, not a dial per turn
// of a loop; the dials that brought no slot are counted.
func TestNoStreamSlotIsNoReasonToDialAgain(t *testing.T) {
	b := listen(t, zeroStreamsH2C)
	g := h2cGroup("g", b.addr)
	g.MaxConnections = 3
	p := newPool(t, testConfig(g))
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	r := run(t, p, newEnvelope(ctx, b.addr, httptest.NewRequest(http.MethodGet, "http://example.com/", nil)))
	if r.status < 500 {
		t.Fatalf("a request no connection had room for ended %d, %v", r.status, r.err)
	}
	if n := b.accepted.Load(); n < 1 || n > 3 {
		t.Fatalf("%d connections dialed; want 1 to max_connections (3)", n)
	}
	if st := p.Endpoints()[0]; st.NoSlotDials == 0 || st.NoSlotDials > 3 {
		t.Fatalf("no_slot_dials = %d; want 1 to 3", st.NoSlotDials)
	}
}

// TestRequestsWaitForAStreamAtMaxConnections: with every connection full
// and max_connections reached, a request waits for a stream to end rather
// than dial, and is served once one does.
func TestRequestsWaitForAStreamAtMaxConnections(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 2)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			arrived <- struct{}{}
			<-release
		}
		io.WriteString(w, "ok")
	})
	b := startH2C(t, h, 1)
	g := h2cGroup("g", b.addr)
	g.MaxConnections = 1
	p := newPool(t, testConfig(g))
	held := make(chan result, 1)
	go func() { held <- get(t, p, b.addr, "http://example.com/hold") }()
	<-arrived
	waiting := make(chan result, 1)
	go func() { waiting <- get(t, p, b.addr, "http://example.com/") }()
	testkit.WaitFor(t, "the second request to wait for a stream", func() bool {
		_, ec := p.lookup("g", b.addr)
		return ec.waiters.Load() == 1
	})
	if n := b.accepted.Load(); n != 1 {
		t.Fatalf("%d connections with max_connections 1", n)
	}
	close(release)
	for _, ch := range []chan result{held, waiting} {
		if r := <-ch; r.status != http.StatusOK {
			t.Fatalf("finished with %d, %v", r.status, r.err)
		}
	}
}

// TestSurplusIdleConnectionsClose: connections beyond the first that carry
// no stream for idle_timeout are shut down; the first stays warm.
func TestSurplusIdleConnectionsClose(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 3)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
	})
	b := startH2C(t, h, 1)
	g := h2cGroup("g", b.addr)
	g.IdleTimeout = time.Millisecond
	p := newPool(t, testConfig(g))
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx) }()
	defer func() {
		stop()
		<-served
	}()
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { get(t, p, b.addr, "http://example.com/") })
	}
	for range 3 {
		<-arrived
	}
	if c := p.Endpoints()[0].Conns; c != 3 {
		t.Fatalf("%d connections for 3 concurrent requests at one stream each", c)
	}
	close(release)
	wg.Wait()
	testkit.WaitFor(t, "the surplus connections to close", func() bool { return b.ended.Load() == 2 })
	if c := p.Endpoints()[0].Conns; c != 1 {
		t.Fatalf("%d connections left; want the first, warm", c)
	}
}

// TestFailureLogIsRateLimited: an endpoint's failures are logged with
// their cause at most once a failureLogEvery; the next log says how many
// were left out.
func TestFailureLogIsRateLimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var out strings.Builder
		f := newFailureLog(slog.New(slog.NewTextHandler(&out, nil)), "10.0.0.1:80")
		cause := errors.New("connection refused")
		for range 5 {
			f.failed("connect", cause)
		}
		time.Sleep(failureLogEvery)
		f.failed("reset-before-response", cause)
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != 2 ||
			!strings.Contains(lines[0], `failure=connect err="connection refused" suppressed_since_last=0`) ||
			!strings.Contains(lines[1], `failure=reset-before-response err="connection refused" suppressed_since_last=4`) {
			t.Fatalf("log:\n%s", out.String())
		}
	})
}

package pool

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"spooky/internal/testkit"
	"spooky/stages"
)

func TestServeWarmsForwardsAndStops(t *testing.T) {
	b := startH2C(t, okHandler, 0)
	cfg := testConfig(h2cGroup("g", b.addr))
	p := newPool(t, cfg)
	if info := p.Inspect(); info.Workers != cfg.Stages.Pool.Workers || info.Mailbox == nil {
		t.Errorf("Inspect() = %+v", info)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx) }()
	testkit.WaitFor(t, "the warm connection", func() bool { return p.Endpoints()[0].Conns == 1 })

	e := newEnvelope(context.Background(), b.addr, httptest.NewRequest(http.MethodGet, "http://example.com/", nil))
	if err := p.Inbox.Send(ctx, e); err != nil {
		t.Fatal(err)
	}
	testkit.Recv(t, e.Done(), "the envelope to be finished")
	e.Relay()
	if e.Status != http.StatusOK {
		t.Errorf("finished with %d, %v", e.Status, e.Err)
	}
	e.Release()
	if n := b.accepted.Load(); n != 1 {
		t.Errorf("backend accepted %d connections, want the warm one only", n)
	}

	cancel()
	if err := testkit.Recv(t, served, "Serve to return"); err != nil {
		t.Errorf("Serve returned %v", err)
	}
}

// TestServeWarmFailureIsNotFatal: a warm dial that fails (here the
// upstream closes every connection at once) leaves Serve running.
func TestServeWarmFailureIsNotFatal(t *testing.T) {
	b := listen(t, func(net.Conn) {})
	p := newPool(t, testConfig(h2cGroup("g", b.addr)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx) }()
	ec := p.current.Load().groups["g"].endpoints[b.addr]
	testkit.WaitFor(t, "the warm dial to fail", func() bool {
		ec.mu.Lock()
		defer ec.mu.Unlock()
		return b.ended.Load() == 1 && ec.dialing == nil && len(ec.conns) == 0
	})
	select {
	case err := <-served:
		t.Fatalf("Serve returned %v after the warm dial failed", err)
	default:
	}
	cancel()
	if err := testkit.Recv(t, served, "Serve to return"); err != nil {
		t.Errorf("Serve returned %v", err)
	}
}

// TestReconfigureKeepsAndRetiresConnections: a reload keeps the
// connections of the endpoints that stay; one that is removed still serves
// for a while and is then retired gracefully, letting the request in
// flight on it finish.
func TestReconfigureKeepsAndRetiresConnections(t *testing.T) {
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		io.WriteString(w, "ok")
	})
	kept, gone := startH2C(t, h, 0), startH2C(t, h, 0)
	p := newPool(t, testConfig(h2cGroup("g", kept.addr, gone.addr)))
	p.retireAfter = time.Minute // outlasts the checks of the window below
	for _, addr := range []string{kept.addr, gone.addr} {
		if r := get(t, p, addr, "http://example.com/"); r.status != http.StatusOK {
			t.Fatalf("%s: finished with %d, %v", addr, r.status, r.err)
		}
	}
	goneConns := p.current.Load().groups["g"].endpoints[gone.addr]

	// A request in flight to the endpoint that is removed must finish.
	slow := make(chan result, 1)
	go func() { slow <- get(t, p, gone.addr, "http://example.com/slow") }()
	testkit.Recv(t, arrived, "the slow request to reach the endpoint to remove")
	p.Control(stages.Reconfigure{Config: testConfig(h2cGroup("g", kept.addr))})

	// Until it is retired, the removed endpoint still serves what the
	// balancer picked for it before it applied the same config.
	if r := get(t, p, gone.addr, "http://example.com/"); r.status != http.StatusOK {
		t.Errorf("removed endpoint while draining: finished with %d, %v; want 200", r.status, r.err)
	}
	if r := get(t, p, kept.addr, "http://example.com/"); r.status != http.StatusOK {
		t.Errorf("kept endpoint: finished with %d, %v", r.status, r.err)
	}
	if n := kept.accepted.Load(); n != 1 {
		t.Errorf("kept endpoint accepted %d connections, want its first one only", n)
	}

	// The window ends, with the slow request still in flight: here through
	// a second removal with a short window, after the endpoint was added
	// back and took its connection back.
	p.Control(stages.Reconfigure{Config: testConfig(h2cGroup("g", kept.addr, gone.addr))})
	p.retireAfter = time.Millisecond
	p.Control(stages.Reconfigure{Config: testConfig(h2cGroup("g", kept.addr))})
	testkit.WaitFor(t, "the removed endpoint to be retired", func() bool {
		goneConns.mu.Lock()
		defer goneConns.mu.Unlock()
		return goneConns.closed
	})
	close(release)
	if r := testkit.Recv(t, slow, "the in-flight request to finish"); r.status != http.StatusOK || r.rec.Body.String() != "ok" {
		t.Errorf("in-flight request finished with %d %q, %v", r.status, r.rec.Body, r.err)
	}
	testkit.WaitFor(t, "the removed endpoint's connection to close", func() bool { return gone.ended.Load() == 1 })
	if n := gone.accepted.Load(); n != 1 {
		t.Errorf("removed endpoint accepted %d connections, want its first one only", n)
	}
	if st := p.Endpoints(); len(st) != 1 || st[0].Address != kept.addr || st[0].Conns != 1 {
		t.Errorf("endpoint stats %+v", st)
	}
}

func TestReconfigureNewProtocolReplacesConnections(t *testing.T) {
	b := startH2C(t, okHandler, 0)
	p := newPool(t, testConfig(h2cGroup("g", b.addr)))
	get(t, p, b.addr, "http://example.com/")

	u := h2cGroup("g", b.addr)
	u.Protocol = "h2"
	p.retireAfter = time.Millisecond
	p.Control(stages.Reconfigure{Config: testConfig(u)})
	// The warm h2 dials are accepted too, and fail; once every connection
	// has ended, the h2c one has been let go.
	testkit.WaitFor(t, "the h2c connection to close", func() bool { return b.ended.Load() == b.accepted.Load() })
	// The h2 dial reaches an h2c server, so the TLS handshake fails.
	if r := get(t, p, b.addr, "https://example.com/"); r.status != http.StatusBadGateway {
		t.Errorf("finished with %d, %v; want 502", r.status, r.err)
	}
}

func TestCloseClosesConnections(t *testing.T) {
	b := startH2C(t, okHandler, 0)
	p := newPool(t, testConfig(h2cGroup("g", b.addr)))
	get(t, p, b.addr, "http://example.com/")

	p.Close()
	testkit.WaitFor(t, "the connection to close", func() bool { return b.ended.Load() == 1 })
	if st := p.Endpoints(); st[0].Conns != 0 {
		t.Errorf("after Close: %d conns", st[0].Conns)
	}
	if r := get(t, p, b.addr, "http://example.com/"); r.status != http.StatusServiceUnavailable {
		t.Errorf("after Close: finished with %d, %v; want 503", r.status, r.err)
	}
}

// TestFlippingConfigsKeepConnections: an endpoint removed and added back
// within the drain window keeps the connection it had, rather than have it
// retired under the requests on it and another dialled.
func TestFlippingConfigsKeepConnections(t *testing.T) {
	a, b := startH2C(t, okHandler, 0), startH2C(t, okHandler, 0)
	p := newPool(t, testConfig(h2cGroup("g", a.addr)))
	p.retireAfter = time.Minute
	if r := get(t, p, a.addr, "http://example.com/"); r.status != http.StatusOK {
		t.Fatalf("finished with %d, %v", r.status, r.err)
	}
	for range 3 {
		p.Control(stages.Reconfigure{Config: testConfig(h2cGroup("g", b.addr))})
		p.Control(stages.Reconfigure{Config: testConfig(h2cGroup("g", a.addr))})
	}
	if r := get(t, p, a.addr, "http://example.com/"); r.status != http.StatusOK {
		t.Fatalf("finished with %d, %v", r.status, r.err)
	}
	if n, ended := a.accepted.Load(), a.ended.Load(); n != 1 || ended != 0 {
		t.Fatalf("endpoint a accepted %d connections and %d ended; want its first kept", n, ended)
	}
}

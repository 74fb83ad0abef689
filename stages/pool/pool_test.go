package pool

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"spooky/config"
	"spooky/envelope"
	"spooky/internal/testkit"
	"spooky/stages"
	"spooky/upstream"
)

func TestForwardGet(t *testing.T) {
	type seen struct {
		method, host, requestURI, userAgent, acceptEncoding string
		forwardedFor                                        []string
	}
	got := make(chan seen, 1)
	b := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{
			method:         r.Method,
			host:           r.Host,
			requestURI:     r.RequestURI,
			userAgent:      r.UserAgent(),
			acceptEncoding: r.Header.Get("Accept-Encoding"),
			forwardedFor:   r.Header.Values("X-Forwarded-For"),
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("X-Backend", "one")
		io.WriteString(w, "hello")
	}), 0)
	p := newPool(t, testConfig(h2cGroup("g", b.addr)))

	req := httptest.NewRequest(http.MethodGet, "https://example.com/a%2Fb/c?x=1&y=%20z&y=2", nil)
	req.Header.Set("User-Agent", "spooky-test/1")
	req.Header.Set("X-Forwarded-For", "192.0.2.1")
	r := run(t, p, newEnvelope(context.Background(), b.addr, req))

	if r.status != http.StatusOK || r.err != nil || !r.responseStarted || r.aborted {
		t.Fatalf("finished with %d, %v, started %v, aborted %v", r.status, r.err, r.responseStarted, r.aborted)
	}
	if r.rec.Code != http.StatusOK || r.rec.Body.String() != "hello" {
		t.Errorf("client got %d %q, want 200 \"hello\"", r.rec.Code, r.rec.Body)
	}
	if h := r.rec.Header(); h.Get("X-Backend") != "one" || h.Get("Content-Type") != "text/plain" {
		t.Errorf("client got header %v", h)
	}
	want := seen{
		method:       http.MethodGet,
		host:         "example.com",
		requestURI:   "/a%2Fb/c?x=1&y=%20z&y=2",
		userAgent:    "spooky-test/1",
		forwardedFor: []string{"192.0.2.1"},
	}
	if s := <-got; fmt.Sprint(s) != fmt.Sprint(want) {
		t.Errorf("backend saw %+v, want %+v", s, want)
	}
}

func TestForwardPostEchoesBody(t *testing.T) {
	body := make([]byte, 1<<20)
	rand.Read(body)
	b := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Length", fmt.Sprint(r.ContentLength))
		w.Header().Set("X-User-Agent", r.UserAgent())
		io.Copy(w, r.Body)
	}), 0)
	p := newPool(t, testConfig(h2cGroup("g", b.addr)))

	for _, tc := range []struct {
		name       string
		body       io.Reader
		wantLength string
	}{
		{"known length", bytes.NewReader(body), "1048576"},
		// A reader httptest cannot measure leaves ContentLength at -1,
		// as quic-go does for a request without content-length.
		{"unknown length", iotest.HalfReader(bytes.NewReader(body)), "-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "http://example.com/echo", tc.body)
			r := run(t, p, newEnvelope(context.Background(), b.addr, req))
			if r.status != http.StatusOK || r.err != nil {
				t.Fatalf("finished with %d, %v", r.status, r.err)
			}
			if !bytes.Equal(r.rec.Body.Bytes(), body) {
				t.Errorf("echo differs: got %d bytes, want %d", r.rec.Body.Len(), len(body))
			}
			if got := r.rec.Header().Get("X-Length"); got != tc.wantLength {
				t.Errorf("backend saw Content-Length %s, want %s", got, tc.wantLength)
			}
			if ua := r.rec.Header().Get("X-User-Agent"); ua != "" {
				t.Errorf("backend saw User-Agent %q, want none added", ua)
			}
		})
	}
}

func TestForwardTrailers(t *testing.T) {
	b := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		io.WriteString(w, "body")
		w.Header().Set("X-Checksum", "abc")
		w.Header().Set(http.TrailerPrefix+"X-Undeclared", "late")
	}), 0)
	p := newPool(t, testConfig(h2cGroup("g", b.addr)))

	r := get(t, p, b.addr, "http://example.com/")
	if r.status != http.StatusOK || r.rec.Body.String() != "body" {
		t.Fatalf("finished with %d %q", r.status, r.rec.Body)
	}
	tr := r.rec.Result().Trailer
	if tr.Get("X-Checksum") != "abc" || tr.Get("X-Undeclared") != "late" {
		t.Errorf("client got trailers %v", tr)
	}
}

// A response with connection-specific fields is malformed (RFC 9113
// §8.2.2): the client gets a 502, and none of the upstream's header.
func TestForwardRejectsHopByHopResponseFields(t *testing.T) {
	for _, field := range []hpack.HeaderField{
		{Name: "connection", Value: "x-secret, close"},
		{Name: "keep-alive", Value: "timeout=5"},
		{Name: "transfer-encoding", Value: "chunked"},
		{Name: "upgrade", Value: "websocket"},
		{Name: "proxy-connection", Value: "keep-alive"},
		{Name: "te", Value: "trailers"},
	} {
		t.Run(field.Name, func(t *testing.T) {
			b := startRawH2C(t, []hpack.HeaderField{
				{Name: ":status", Value: "200"},
				field,
				{Name: "x-secret", Value: "1"},
			}, "ok")
			p := newPool(t, testConfig(h2cGroup("g", b.addr)))

			r := get(t, p, b.addr, "http://example.com/")
			if r.status != http.StatusBadGateway || !errors.Is(r.err, ErrProtocol) {
				t.Fatalf("finished with %d, %v; want 502 and ErrProtocol", r.status, r.err)
			}
			if v := r.rec.Header().Get("X-Secret"); v != "" {
				t.Errorf("client got X-Secret: %q", v)
			}
		})
	}
}

func TestForwardHead(t *testing.T) {
	b := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "hello")
	}), 0)
	p := newPool(t, testConfig(h2cGroup("g", b.addr)))

	req := httptest.NewRequest(http.MethodHead, "http://example.com/", nil)
	r := run(t, p, newEnvelope(context.Background(), b.addr, req))
	if r.status != http.StatusOK || r.err != nil {
		t.Fatalf("finished with %d, %v", r.status, r.err)
	}
	if r.rec.Body.Len() != 0 || r.rec.Header().Get("Content-Length") != "5" {
		t.Errorf("client got body %q, Content-Length %q", r.rec.Body, r.rec.Header().Get("Content-Length"))
	}
}

func TestConnectFailed(t *testing.T) {
	addr := testkit.FreeAddr(t, "tcp")
	p := newPool(t, testConfig(h2cGroup("g", addr)))

	r := get(t, p, addr, "http://example.com/")
	if r.status != http.StatusBadGateway || !errors.Is(r.err, ErrConnectFailed) {
		t.Fatalf("finished with %d, %v; want 502, %v", r.status, r.err, ErrConnectFailed)
	}
	if r.rec.Code != http.StatusBadGateway || !strings.Contains(r.rec.Body.String(), "upstream connect failed") {
		t.Errorf("client got %d %q", r.rec.Code, r.rec.Body)
	}
}

// TestUnknownEndpointIsPickedAgain: an endpoint the pool does not know
// (the balancer picked from a config the pool has moved past) goes back to
// the balancer without counting as an attempt, three times at most; then
// the client gets 503.
func TestUnknownEndpointIsPickedAgain(t *testing.T) {
	b := startH2C(t, http.NotFoundHandler(), 0)
	p := newPool(t, testConfig(h2cGroup("g", b.addr)))
	e := newEnvelope(context.Background(), "127.0.0.1:1", httptest.NewRequest(http.MethodGet, "http://example.com/", nil))
	for range 3 {
		p.Handle(e)
		msg, err := p.balancer.Receive(context.Background())
		if err != nil || msg.Data != e || e.Attempt != 0 || e.Finished() {
			t.Fatalf("not handed back for another pick: %+v, %v, attempt %d", msg, err, e.Attempt)
		}
		e.BeginTry(upstream.NewEndpoint("127.0.0.1:1", 1, 0, 0)) // the balancer's pick
	}
	if r := run(t, p, e); r.status != http.StatusServiceUnavailable || !errors.Is(r.err, ErrNoEndpoint) {
		t.Errorf("finished with %d, %v; want 503, %v", r.status, r.err, ErrNoEndpoint)
	}
}

func TestDeadlineBeforeResponse(t *testing.T) {
	b := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}), 0)
	p := newPool(t, testConfig(h2cGroup("g", b.addr)))

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req := httptest.NewRequest(http.MethodGet, "http://example.com/slow", nil)
	r := run(t, p, newEnvelope(ctx, b.addr, req))
	if r.status != http.StatusGatewayTimeout || !errors.Is(r.err, stages.ErrTimeout) || r.responseStarted {
		t.Errorf("finished with %d, %v, started %v; want 504, %v", r.status, r.err, r.responseStarted, stages.ErrTimeout)
	}
	if r.rec.Code != http.StatusGatewayTimeout {
		t.Errorf("client got %d", r.rec.Code)
	}
}

func TestClientGoneBeforeResponse(t *testing.T) {
	arrived := make(chan struct{})
	b := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-r.Context().Done()
	}), 0)
	p := newPool(t, testConfig(h2cGroup("g", b.addr)))

	// The client goes once its request is with the upstream.
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-arrived; cancel() }()
	req := httptest.NewRequest(http.MethodGet, "http://example.com/slow", nil)
	r := run(t, p, newEnvelope(ctx, b.addr, req))
	if r.status != envelope.StatusClientClosed || !errors.Is(r.err, stages.ErrClientClosed) {
		t.Errorf("finished with %d, %v; want %d, %v", r.status, r.err, envelope.StatusClientClosed, stages.ErrClientClosed)
	}
}

func TestUpstreamResetMidBody(t *testing.T) {
	b := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the server resets the stream
	}), 0)
	p := newPool(t, testConfig(h2cGroup("g", b.addr)))

	r := get(t, p, b.addr, "http://example.com/")
	if r.status != http.StatusBadGateway || !errors.Is(r.err, ErrUpstreamReset) || !r.responseStarted || !r.aborted {
		t.Errorf("finished with %d, %v, started %v, aborted %v; want 502, %v, aborted",
			r.status, r.err, r.responseStarted, r.aborted, ErrUpstreamReset)
	}
	if r.rec.Code != http.StatusOK || r.rec.Body.String() != "partial" {
		t.Errorf("client got %d %q, want the 200 and the part that came", r.rec.Code, r.rec.Body)
	}
}

func TestUpstreamShortContentLength(t *testing.T) {
	b := startRawH2C(t, []hpack.HeaderField{
		{Name: ":status", Value: "200"},
		{Name: "content-length", Value: "100"},
	}, "only ten b")
	p := newPool(t, testConfig(h2cGroup("g", b.addr)))

	// A small body is read whole before the response starts, so the
	// client gets a clean 502 rather than a cut stream.
	r := get(t, p, b.addr, "http://example.com/")
	if r.status != http.StatusBadGateway || !errors.Is(r.err, ErrUpstreamReset) || r.aborted || r.responseStarted || r.rec.Code != http.StatusBadGateway {
		t.Errorf("finished with %d, %v, aborted %v, started %v; want a clean 502, %v", r.status, r.err, r.aborted, r.responseStarted, ErrUpstreamReset)
	}
}

// TestUpstreamShortLargeBody: past what is read ahead, a body that ends
// short can only be cut: the client's stream is reset.
func TestUpstreamShortLargeBody(t *testing.T) {
	b := startRawH2C(t, []hpack.HeaderField{
		{Name: ":status", Value: "200"},
		{Name: "content-length", Value: "100000"},
	}, strings.Repeat("x", 40000))
	p := newPool(t, testConfig(h2cGroup("g", b.addr)))
	r := get(t, p, b.addr, "http://example.com/")
	if r.status != http.StatusBadGateway || !errors.Is(r.err, ErrUpstreamReset) || !r.aborted {
		t.Errorf("finished with %d, %v, aborted %v; want 502, %v, aborted", r.status, r.err, r.aborted, ErrUpstreamReset)
	}
}

// failingWriter is a client that has gone away: every write fails.
type failingWriter struct{ header http.Header }

func (w *failingWriter) Header() http.Header       { return w.header }
func (w *failingWriter) WriteHeader(int)           {}
func (w *failingWriter) Write([]byte) (int, error) { return 0, net.ErrClosed }

func TestClientWriteFailsCancelsUpstream(t *testing.T) {
	canceled := make(chan struct{})
	b := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(canceled)
		chunk := bytes.Repeat([]byte("x"), 1024)
		for r.Context().Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	}), 0)
	p := newPool(t, testConfig(h2cGroup("g", b.addr)))

	e := newEnvelope(context.Background(), b.addr, httptest.NewRequest(http.MethodGet, "http://example.com/stream", nil))
	e.Writer = &failingWriter{header: http.Header{}}
	r := run(t, p, e)
	if r.status != envelope.StatusClientClosed || !errors.Is(r.err, stages.ErrClientClosed) || !r.aborted {
		t.Errorf("finished with %d, %v, aborted %v; want %d, %v, aborted",
			r.status, r.err, r.aborted, envelope.StatusClientClosed, stages.ErrClientClosed)
	}
	testkit.Recv(t, canceled, "the upstream request to be cancelled")
}

func TestH2OverTLS(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || r.ProtoMajor != 2 {
			http.Error(w, "want HTTP/2 over TLS, got "+r.Proto, http.StatusBadRequest)
			return
		}
		io.WriteString(w, "secure")
	})
	addr, ca := startTLS(t, h, true)
	h1addr, h1ca := startTLS(t, h, false)

	for _, tc := range []struct {
		name       string
		addr, ca   string
		wantStatus int
		wantBody   string
	}{
		{"trusted CA", addr, ca, http.StatusOK, "secure"},
		{"unrelated CA", addr, unrelatedCA(t), http.StatusBadGateway, "upstream connect failed"},
		{"no h2 in ALPN", h1addr, h1ca, http.StatusBadGateway, "upstream connect failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := h2cGroup("g", tc.addr)
			u.Protocol = "h2"
			u.TLS.CA = tc.ca
			p := newPool(t, testConfig(u))
			r := get(t, p, tc.addr, "https://example.com/")
			if r.status != tc.wantStatus || !strings.Contains(r.rec.Body.String(), tc.wantBody) {
				t.Errorf("got %d %q, %v; want %d with %q", r.status, r.rec.Body, r.err, tc.wantStatus, tc.wantBody)
			}
		})
	}
}

func TestNewFailsOnUnreadableCA(t *testing.T) {
	u := h2cGroup("g", "127.0.0.1:1")
	u.Protocol = "h2"
	u.TLS.CA = t.TempDir() + "/missing.pem"
	if _, err := New(testConfig(u), stages.NewMailbox(config.Stage{}), stages.NewMailbox(config.Stage{}), slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("New succeeded with a CA file that does not exist")
	}
}

func TestConnectionReused(t *testing.T) {
	b := startH2C(t, okHandler, 0)
	p := newPool(t, testConfig(h2cGroup("g", b.addr)))

	for i := range 20 {
		if r := get(t, p, b.addr, "http://example.com/"); r.status != http.StatusOK {
			t.Fatalf("request %d finished with %d, %v", i, r.status, r.err)
		}
	}
	if n := b.accepted.Load(); n != 1 {
		t.Errorf("backend accepted %d connections for 20 sequential requests, want 1", n)
	}
	st := p.Endpoints()
	if len(st) != 1 || st[0].Conns != 1 || st[0].Streams != 0 {
		t.Errorf("endpoint stats %+v", st)
	}
}

func TestMaxConcurrentStreamsOpensMoreConnections(t *testing.T) {
	const requests, perConn = 6, 2
	arrived := make(chan struct{}, requests)
	release := make(chan struct{})
	b := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
			io.WriteString(w, "ok")
		case <-r.Context().Done():
		}
	}), perConn)
	p := newPool(t, testConfig(h2cGroup("g", b.addr)))

	results := make(chan result, requests)
	var wg sync.WaitGroup
	for range requests {
		wg.Go(func() { results <- get(t, p, b.addr, "http://example.com/slow") })
	}
	for range requests {
		select {
		case <-arrived:
		case <-time.After(testkit.Watchdog):
			close(release)
			t.Fatal("the requests did not all reach the backend at once")
		}
	}
	st := p.Endpoints()[0]
	close(release)
	wg.Wait()
	close(results)

	for r := range results {
		if r.status != http.StatusOK || r.rec.Body.String() != "ok" {
			t.Errorf("request finished with %d %q, %v", r.status, r.rec.Body, r.err)
		}
	}
	if n := b.accepted.Load(); n != requests/perConn {
		t.Errorf("backend accepted %d connections, want %d", n, requests/perConn)
	}
	if st.Conns != requests/perConn || st.Streams != requests {
		t.Errorf("while all were in flight: %d conns, %d streams; want %d, %d", st.Conns, st.Streams, requests/perConn, requests)
	}
}

// TestConcurrentFirstRequestsDialOnce: requests that find no connection
// while one is being dialled wait for that dial rather than start their
// own, and a caller that gives up does not cancel the dial the others wait
// on, even the caller that started it.
func TestConcurrentFirstRequestsDialOnce(t *testing.T) {
	// The backend takes its connections only when the test says so: until
	// then a dial waits for the server's SETTINGS.
	open := make(chan struct{})
	b := startH2CWith(t, okHandler, 0, func(int32, net.Conn) bool {
		select {
		case <-open:
		case <-t.Context().Done():
		}
		return false
	})
	u := h2cGroup("g", b.addr)
	u.ConnectTimeout = time.Minute // the dial waits for the test, not for a clock
	p := newPool(t, testConfig(u))

	// The caller that gives up comes first, so the dial is its own.
	ctx, giveUp := context.WithCancel(context.Background())
	gaveUp := make(chan result, 1)
	go func() {
		req := httptest.NewRequest(http.MethodGet, "http://example.com/", nil)
		gaveUp <- run(t, p, newEnvelope(ctx, b.addr, req))
	}()
	testkit.WaitFor(t, "the first request to wait on the dial", func() bool { return waitingOnDial() == 1 })
	const requests = 10
	results := make(chan result, requests)
	var wg sync.WaitGroup
	for range requests {
		wg.Go(func() { results <- get(t, p, b.addr, "http://example.com/") })
	}
	testkit.WaitFor(t, "every request to wait on the dial", func() bool { return waitingOnDial() == requests+1 })
	giveUp()
	if r := testkit.Recv(t, gaveUp, "the request that gave up"); r.status != envelope.StatusClientClosed {
		t.Errorf("the request that gave up finished with %d, %v; want %d", r.status, r.err, envelope.StatusClientClosed)
	}
	close(open)
	wg.Wait()
	close(results)

	for r := range results {
		if r.status != http.StatusOK {
			t.Errorf("request finished with %d, %v", r.status, r.err)
		}
	}
	if n := b.accepted.Load(); n != 1 {
		t.Errorf("backend accepted %d connections, want 1", n)
	}
}

// waitingOnDial counts the goroutines inside endpointConns.get: with the
// backend holding every connection back, each is a request waiting for a
// dial. Nothing else tells when a request has got that far.
func waitingOnDial() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "spooky/stages/pool.(*endpointConns).get(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// TestGetWithoutContentLengthGoesWithoutBody: quic-go gives every request
// without Content-Length a body of unknown length; a GET must still reach
// the upstream as a request with no body at all (END_STREAM on HEADERS),
// while a POST keeps its streamed body.
func TestGetWithoutContentLengthGoesWithoutBody(t *testing.T) {
	lengths := make(chan int64, 2)
	b := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		lengths <- r.ContentLength
		io.WriteString(w, strconv.FormatInt(n, 10))
	}), 0)
	p := newPool(t, testConfig(h2cGroup("g", b.addr)))
	for _, tc := range []struct {
		method     string
		wantLength int64
		wantBody   string
	}{
		{http.MethodGet, 0, "0"},
		{http.MethodPost, -1, "5"},
	} {
		req := httptest.NewRequest(tc.method, "https://example.com/", io.NopCloser(strings.NewReader("hello")))
		req.ContentLength = -1
		r := run(t, p, newEnvelope(context.Background(), b.addr, req))
		if got := <-lengths; got != tc.wantLength || r.rec.Body.String() != tc.wantBody {
			t.Errorf("%s: upstream saw Content-Length %d and a %s-byte body; want %d, %s", tc.method, got, r.rec.Body, tc.wantLength, tc.wantBody)
		}
	}
}

// TestClientGoingAwayIsNotAnUpstreamFailure: a request cancelled by its
// client must not count against the endpoint, or clients hanging up would
// get healthy endpoints ejected.
func TestClientGoingAwayIsNotAnUpstreamFailure(t *testing.T) {
	arrived := make(chan struct{})
	b := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-r.Context().Done()
	}), 0)
	p := newPool(t, testConfig(h2cGroup("g", b.addr)))
	ctx, cancel := context.WithCancel(context.Background())
	e := newEnvelope(ctx, b.addr, httptest.NewRequest(http.MethodGet, "https://example.com/", nil))
	ep := e.Endpoint
	go func() { <-arrived; cancel() }()
	r := run(t, p, e)
	if r.status != envelope.StatusClientClosed {
		t.Fatalf("finished with %d, %v", r.status, r.err)
	}
	notBlamed(t, ep, "a client cancel")
}

// notBlamed fails the test unless ep, after what, counts no failure and
// nothing in flight.
func notBlamed(t *testing.T, ep *upstream.Endpoint, what string) {
	t.Helper()
	if st := ep.Stats(time.Now().UnixNano()); st.Failures != 0 || st.InFlight != 0 {
		t.Fatalf("endpoint after %s: %+v", what, st)
	}
}

// TestStatusOutOfRangeIsAProtocolError: x/net accepts any number as
// :status; one no response writer takes must be a 502, not a stage panic.
func TestStatusOutOfRangeIsAProtocolError(t *testing.T) {
	for _, status := range []string{"99", "1000"} {
		b := startRawH2C(t, []hpack.HeaderField{{Name: ":status", Value: status}}, "x")
		p := newPool(t, testConfig(h2cGroup("g", b.addr)))
		if r := get(t, p, b.addr, "/"); r.status != http.StatusBadGateway || !errors.Is(r.err, ErrProtocol) {
			t.Errorf(":status %s: finished with %d, %v", status, r.status, r.err)
		}
	}
}

// TestExpiredInTheQueueEndsTheTry: an envelope whose client left while it
// waited in the pool's mailbox never reaches Handle; its try must still
// end, or the endpoint's in-flight count (and its breaker) leaks.
func TestExpiredInTheQueueEndsTheTry(t *testing.T) {
	b := startH2C(t, okHandler, 0)
	p := newPool(t, testConfig(h2cGroup("g", b.addr)))
	ctx, cancel := context.WithCancel(context.Background())
	e := newEnvelope(ctx, b.addr, httptest.NewRequest(http.MethodGet, "/", nil))
	ep := e.Endpoint
	if err := p.Inbox.Send(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	cancel()
	sctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Serve(sctx); close(done) }()
	<-e.Done()
	e.Relay()
	stop()
	<-done
	e.Release()
	if n := ep.InFlight(); n != 0 {
		t.Fatalf("%d in flight after the envelope ended", n)
	}
}

// TestPerTryTimeoutBoundsOnlyTheHeaders: a response whose headers come at
// once streams on past the per-try timeout.
func TestPerTryTimeoutBoundsOnlyTheHeaders(t *testing.T) {
	const perTry = 100 * time.Millisecond
	b := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "chunk\n")
		w.(http.Flusher).Flush()
		// The rest waits until the per-try timeout, started before this
		// request was sent, is well past. Were it not stopped when the
		// headers came, it would cancel the stream first, and that
		// cancel is what ends the wait early.
		select {
		case <-r.Context().Done():
			return
		case <-time.After(3 * perTry):
		}
		for range 3 {
			io.WriteString(w, "chunk\n")
			w.(http.Flusher).Flush()
		}
	}), 0)
	p := newPool(t, testConfig(h2cGroup("g", b.addr)))
	e := newEnvelope(context.Background(), b.addr, httptest.NewRequest(http.MethodGet, "/", nil))
	e.Route = &config.Route{Upstream: "g", Timeout: time.Minute, Retries: config.Retries{Attempts: 1, PerTryTimeout: perTry}}
	if r := run(t, p, e); r.aborted || r.err != nil || strings.Count(r.rec.Body.String(), "chunk") != 4 {
		t.Fatalf("status %d err %v aborted %v body %q", r.status, r.err, r.aborted, r.rec.Body)
	}
}

// TestDrainingIsPerGroup: one address in two groups, removed from both in
// one reload, has both groups' connections retired.
func TestDrainingIsPerGroup(t *testing.T) {
	b, other := startH2C(t, okHandler, 0), startH2C(t, okHandler, 0)
	p := newPool(t, testConfig(h2cGroup("g", b.addr), h2cGroup("h", b.addr)))
	p.retireAfter = 50 * time.Millisecond
	p.warm()
	testkit.WaitFor(t, "two warm connections", func() bool { return b.accepted.Load() == 2 })
	p.Control(stages.Reconfigure{Config: testConfig(h2cGroup("g", other.addr), h2cGroup("h", other.addr))})
	testkit.WaitFor(t, "both removed connections to close", func() bool { return b.ended.Load() == 2 })
}

// quicBody stands in for quic-go's request body: it fills the request's
// trailers, in a new map, when it reaches the end.
type quicBody struct {
	io.Reader
	req      *http.Request
	trailers http.Header
}

func (b *quicBody) Read(p []byte) (int, error) {
	n, err := b.Reader.Read(p)
	if err == io.EOF {
		b.req.Trailer = b.trailers
	}
	return n, err
}

func (b *quicBody) Close() error { return nil }

// TestRequestTrailersReachTheUpstream. (Trailers a client did not announce
// are forwarded too, but Go's HTTP/2 server, the backend here, keeps only
// announced ones, so only those can be checked this way.)
func TestRequestTrailersReachTheUpstream(t *testing.T) {
	b := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Got-Checksum", r.Trailer.Get("X-Checksum"))
	}), 0)
	p := newPool(t, testConfig(h2cGroup("g", b.addr)))
	req := httptest.NewRequest(http.MethodPost, "https://example.com/", nil)
	req.Body = &quicBody{Reader: strings.NewReader("payload"), req: req, trailers: http.Header{"X-Checksum": {"abc"}}}
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Checksum": nil} // announced, as quic-go leaves it
	r := run(t, p, newEnvelope(context.Background(), b.addr, req))
	if got := r.rec.Header().Get("Got-Checksum"); got != "abc" {
		t.Errorf("upstream saw trailer %q (status %d, %v)", got, r.status, r.err)
	}
}

// An upstream that goes away from a connection (a GOAWAY that says it did
// not process the request, as servers send on idle timeouts and graceful
// restarts) gets the request again on a new connection, for any method and
// with retries off: it never reached the upstream.
func TestForwardResendsWhatAGoAwayLeftUnprocessed(t *testing.T) {
	var served atomic.Int32
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		io.WriteString(w, r.Method+" ok")
	})
	b := startH2CWith(t, ok, 0, func(n int32, c net.Conn) bool {
		if n > 1 {
			return false
		}
		// The first connection refuses its first request with GOAWAY
		// (last stream ID 0) and closes.
		rawH2C(c, func(fr *http2.Framer, req *http2.MetaHeadersFrame) bool {
			fr.WriteGoAway(0, http2.ErrCodeNo, nil)
			return true
		})
		c.Close()
		return true
	})
	p := newPool(t, testConfig(h2cGroup("g", b.addr)))

	for _, method := range []string{http.MethodGet, http.MethodDelete, http.MethodPost} {
		req := httptest.NewRequest(method, "http://example.com/", nil)
		r := run(t, p, newEnvelope(context.Background(), b.addr, req))
		if r.status != http.StatusOK || r.rec.Body.String() != method+" ok" {
			t.Fatalf("%s: finished with %d %q, %v", method, r.status, r.rec.Body, r.err)
		}
	}
	if n := served.Load(); n != 3 {
		t.Errorf("upstream served %d requests, want 3", n)
	}
}

// TestFailingRequestBodyIsNotAnUpstreamFailure: a client whose upload
// fails half-way (it reset its stream) gets 499, before or after the
// upstream started answering, and the endpoint is not blamed; blaming it
// would let clients that abort uploads get healthy endpoints ejected.
func TestFailingRequestBodyIsNotAnUpstreamFailure(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"before the response", func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			io.WriteString(w, "read it all")
		}},
		{"while the response streams", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			http.NewResponseController(w).Flush()
			io.Copy(w, r.Body)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startH2C(t, tc.handler, 0)
			p := newPool(t, testConfig(h2cGroup("g", b.addr)))
			body := io.MultiReader(bytes.NewReader(make([]byte, 100<<10)), iotest.ErrReader(errors.New("client reset the stream")))
			req := httptest.NewRequest(http.MethodPost, "https://example.com/", io.NopCloser(body))
			req.ContentLength = -1
			e := newEnvelope(context.Background(), b.addr, req)
			ep := e.Endpoint
			r := run(t, p, e)
			if r.status != envelope.StatusClientClosed {
				t.Fatalf("finished with %d, %v; want 499", r.status, r.err)
			}
			notBlamed(t, ep, "a failed upload")
		})
	}
}

// A 304 carries the Content-Length of the representation it stands for,
// and no body (RFC 9110 §8.6, §15.4.5): it passes as it is.
func TestNotModifiedWithContentLength(t *testing.T) {
	b := startRawH2C(t, []hpack.HeaderField{
		{Name: ":status", Value: "304"},
		{Name: "content-length", Value: "1234"},
		{Name: "etag", Value: `"v1"`},
	}, "")
	p := newPool(t, testConfig(h2cGroup("g", b.addr)))
	r := get(t, p, b.addr, "http://example.com/")
	if r.status != http.StatusNotModified || r.err != nil || r.rec.Code != http.StatusNotModified || r.rec.Body.Len() != 0 {
		t.Fatalf("finished with %d, %v; client got %d and %d body bytes", r.status, r.err, r.rec.Code, r.rec.Body.Len())
	}
	if got := r.rec.Header().Get("Etag"); got != `"v1"` {
		t.Errorf("client got ETag %q", got)
	}
}

// unrelatedCA is a CA file for a fresh self-signed CA that signed nothing
// the tests serve.
func unrelatedCA(t testing.TB) string {
	ca, _ := testkit.SelfSigned(t, "unrelated test CA", true)
	return ca
}

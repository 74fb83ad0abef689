package pool

import (
	"bytes"
	"context"
	"encoding/pem"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"spooky/config"
	"spooky/envelope"
	"spooky/internal/testkit"
	"spooky/stages"
	"spooky/upstream"
)

// okHandler answers every request with 200 "ok".
var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	io.WriteString(w, "ok")
})

// backend is an in-process upstream on a loopback port that counts the
// connections it accepted and the ones that have ended.
type backend struct {
	addr     string
	accepted atomic.Int32
	ended    atomic.Int32
}

// listen serves every connection accepted on a fresh loopback port with
// serve, each in its own goroutine, until the test ends.
func listen(t testing.TB, serve func(net.Conn)) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{addr: ln.Addr().String()}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		open     = map[net.Conn]bool{}
		stopping bool
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.accepted.Add(1)
			mu.Lock()
			if stopping {
				mu.Unlock()
				c.Close()
				return
			}
			open[c] = true
			mu.Unlock()
			wg.Go(func() {
				serve(c)
				c.Close()
				mu.Lock()
				delete(open, c)
				mu.Unlock()
				b.ended.Add(1)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		stopping = true
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return b
}

// startH2C serves h with net/http's HTTP/2 server (testkit.StartH2C) on a
// loopback port until the test ends, counting its connections. maxStreams
// is its SETTINGS_MAX_CONCURRENT_STREAMS; 0 means net/http's default.
func startH2C(t testing.TB, h http.Handler, maxStreams int) *backend {
	t.Helper()
	return startH2CWith(t, h, maxStreams, nil)
}

// startH2CWith is startH2C where every connection accepted is handed to
// take, with its number (from 1), before the server sees it. take may hold
// it (the client's dial then waits for the server's SETTINGS), or keep it
// from the server by returning true, after which the connection is take's
// to close. take runs in the server's accept loop, so nothing else is
// accepted meanwhile; one that waits must give up when t.Context ends.
func startH2CWith(t testing.TB, h http.Handler, maxStreams int, take func(n int32, c net.Conn) bool) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{addr: ln.Addr().String()}
	testkit.StartH2C(t, h, testkit.H2COptions{
		MaxStreams: maxStreams,
		Listener:   &countingListener{Listener: ln, b: b, take: take},
	})
	return b
}

// countingListener counts, on b, the connections it accepts and those that
// have closed, and hands each to take first.
type countingListener struct {
	net.Listener
	b    *backend
	take func(n int32, c net.Conn) bool
}

func (l *countingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		cc := &countedConn{Conn: c, ended: &l.b.ended}
		n := l.b.accepted.Add(1)
		if l.take == nil || !l.take(n, cc) {
			return cc, nil
		}
	}
}

// countedConn counts its first Close in ended.
type countedConn struct {
	net.Conn
	ended *atomic.Int32
	once  sync.Once
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.ended.Add(1) })
	return err
}

// startTLS starts an HTTPS server that offers HTTP/2 when h2 is set and
// only HTTP/1.1 otherwise, and returns its address and a CA file that
// trusts its certificate.
func startTLS(t testing.TB, h http.Handler, h2 bool) (addr, caFile string) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = h2
	// The test with an unrelated CA fails the handshake on purpose.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), writePEM(t, srv.Certificate().Raw)
}

func writePEM(t testing.TB, der []byte) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "ca.pem")
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return name
}

// startRawH2C starts an HTTP/2 server written frame by frame that answers
// every request with fields and then body, ending the stream. It sends what
// net/http's server refuses to: connection-specific fields, and a body
// shorter than its Content-Length.
func startRawH2C(t testing.TB, fields []hpack.HeaderField, body string) *backend {
	return listen(t, func(c net.Conn) {
		// One encoder per connection: its dynamic table must match the
		// peer's decoder.
		var block bytes.Buffer
		enc := hpack.NewEncoder(&block)
		rawH2C(c, func(fr *http2.Framer, req *http2.MetaHeadersFrame) bool {
			block.Reset()
			for _, hf := range fields {
				enc.WriteField(hf)
			}
			err := fr.WriteHeaders(http2.HeadersFrameParam{
				StreamID:      req.StreamID,
				BlockFragment: block.Bytes(),
				EndHeaders:    true,
			})
			if err == nil {
				err = fr.WriteData(req.StreamID, true, []byte(body))
			}
			return err != nil
		})
	})
}

// rawH2C plays the server side of HTTP/2 on c frame by frame: it answers
// settings and pings itself and hands each request to answer, until answer
// reports that it is done or the connection fails.
func rawH2C(c net.Conn, answer func(fr *http2.Framer, req *http2.MetaHeadersFrame) (done bool)) {
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c, preface); err != nil {
		return
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		return
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				err = fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				err = fr.WritePing(true, f.Data)
			}
		case *http2.MetaHeadersFrame:
			if answer(fr, f) {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// h2cGroup is an upstream group named name of h2c endpoints.
func h2cGroup(name string, addrs ...string) *config.Upstream {
	u := &config.Upstream{
		Name:           name,
		Policy:         config.DefaultPolicy,
		Protocol:       "h2c",
		ConnectTimeout: 2 * time.Second,
		MaxConnections: 64,
		IdleTimeout:    time.Minute,
	}
	for _, a := range addrs {
		u.Endpoints = append(u.Endpoints, config.Endpoint{Address: a, Weight: 1})
	}
	return u
}

// testConfig is a config with the given groups and one route to the first.
func testConfig(groups ...*config.Upstream) *config.Config {
	cfg := &config.Config{
		Stages:    config.Stages{Pool: config.Stage{Workers: 4, Queue: 16}},
		Routes:    []config.Route{{Upstream: groups[0].Name, Timeout: config.DefaultRouteTimeout}},
		Upstreams: map[string]*config.Upstream{},
	}
	for _, g := range groups {
		cfg.Upstreams[g.Name] = g
		cfg.UpstreamNames = append(cfg.UpstreamNames, g.Name)
	}
	return cfg
}

// newPool makes a pool for cfg that is closed when the test ends, before
// the backends it talks to stop.
func newPool(t testing.TB, cfg *config.Config) *Pool {
	t.Helper()
	p, err := New(cfg, stages.NewMailbox(cfg.Stages.Pool), stages.NewMailbox(cfg.Stages.Pool), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// newEnvelope wraps req for endpoint in group "g", writing to a recorder.
func newEnvelope(ctx context.Context, endpoint string, req *http.Request) *envelope.Envelope {
	e := envelope.Get()
	e.Ctx = ctx
	e.Request = req
	e.Writer = httptest.NewRecorder()
	e.Route = &config.Route{Upstream: "g"}
	e.BeginTry(upstream.NewEndpoint(endpoint, 1, 0, 0))
	return e
}

// result is what an envelope carried when it was finished.
type result struct {
	rec             *httptest.ResponseRecorder // nil when another writer was used
	status          int
	err             error
	responseStarted bool
	aborted         bool
}

// run hands e to p, waits for it to finish, and releases it.
func run(t testing.TB, p *Pool, e *envelope.Envelope) result {
	t.Helper()
	p.Handle(e)
	testkit.Recv(t, e.Done(), "the envelope to be finished")
	e.Relay()
	rec, _ := e.Writer.(*httptest.ResponseRecorder)
	r := result{rec: rec, status: e.Status, err: e.Err, responseStarted: e.ResponseStarted, aborted: e.Aborted}
	e.Release()
	return r
}

// get forwards a GET of target to endpoint with a background context.
func get(t testing.TB, p *Pool, endpoint, target string) result {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	return run(t, p, newEnvelope(context.Background(), endpoint, req))
}

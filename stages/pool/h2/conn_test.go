package h2

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// ---------------------------------------------------------------------
// Helpers for tests against net/http's HTTP/2 server.

// startH2C serves h over unencrypted HTTP/2 (prior knowledge) on loopback.
func startH2C(t testing.TB, h http.Handler, maxStreams int) string {
	t.Helper()
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &p, ErrorLog: log.New(io.Discard, "", 0)}
	if maxStreams > 0 {
		srv.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: maxStreams}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		srv.Serve(ln)
		close(served)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-served
	})
	return ln.Addr().String()
}

// dialH2 opens a Conn to addr; the test's cleanup closes it.
func dialH2(t testing.TB, addr string, cfg Config) *Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Handshake(ctx, nc, cfg)
	if err != nil {
		t.Fatalf("Handshake: %v", err)
	}
	t.Cleanup(func() { closeConn(t, c) })
	return c
}

// reserve waits until c has room for a stream.
func reserve(t testing.TB, c *Conn) {
	t.Helper()
	if !eventually(5*time.Second, c.Reserve) {
		t.Fatalf("Reserve never returned true")
	}
}

// do reserves a stream and sends req.
func do(t testing.TB, c *Conn, ctx context.Context, req *Request) (*http.Response, error) {
	t.Helper()
	reserve(t, c)
	return c.RoundTrip(ctx, req)
}

// readAll reads and closes resp's body.
func readAll(t testing.TB, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return string(b)
}

func noStreams(t testing.TB, c *Conn) {
	t.Helper()
	if !eventually(time.Second, func() bool { return c.ActiveStreams() == 0 }) {
		t.Errorf("ActiveStreams() = %d, want 0", c.ActiveStreams())
	}
}

// pattern returns n deterministic pseudo-random bytes for seed.
func pattern(seed byte, n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{seed}), n)
}

// sameBytes compares got with want chunk by chunk.
func sameBytes(got, want io.Reader) error {
	g, w := make([]byte, 64<<10), make([]byte, 64<<10)
	var off int64
	for {
		n, werr := io.ReadFull(want, w)
		m, gerr := io.ReadFull(got, g[:n])
		if m != n || !bytes.Equal(g[:m], w[:n]) {
			return fmt.Errorf("bytes differ in the %d bytes at %d (read %d, err %v)", n, off, m, gerr)
		}
		off += int64(n)
		if werr != nil {
			if _, err := got.Read(g[:1]); err != io.EOF {
				return fmt.Errorf("body goes on after %d bytes (err %v)", off, err)
			}
			return nil
		}
	}
}

// ---------------------------------------------------------------------
// Against net/http's HTTP/2 server.

func TestGET(t *testing.T) {
	addr := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Method", r.Method)
		w.Header().Set("X-Host", r.Host)
		w.Header().Set("X-Uri", r.URL.RequestURI())
		w.Header().Set("X-Custom", strings.Join(r.Header.Values("X-Custom"), ","))
		w.Header().Set("X-Mixed", r.Header.Get("X-Mixed"))
		w.Header().Set("X-Te", r.Header.Get("Te"))
		w.Header()["x-lower"] = []string{"lower"}
		io.WriteString(w, "hello")
	}), 0)
	c := dialH2(t, addr, Config{})

	req := getReq("/a/b?q=1")
	req.Header = http.Header{
		"X-Custom":   {"a", "b"},
		"x-MiXed":    {"m"}, // not canonical: must go out in lower case
		"Connection": {"keep-alive"},
		"Keep-Alive": {"300"},
		"Te":         {"gzip"},
		"Accept":     {"*/*"},
	}
	resp, err := do(t, c, context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); got != "hello" {
		t.Errorf("body = %q", got)
	}
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || resp.ContentLength != 5 {
		t.Errorf("status %d proto %d length %d", resp.StatusCode, resp.ProtoMajor, resp.ContentLength)
	}
	for k, want := range map[string]string{
		"X-Method": "GET", "X-Host": "upstream.test", "X-Uri": "/a/b?q=1",
		"X-Custom": "a,b", "X-Mixed": "m", "X-Te": "", "X-Lower": "lower",
		"Content-Type": "text/plain; charset=utf-8",
	} {
		if got := resp.Header[k]; len(got) != 1 || got[0] != want {
			t.Errorf("response header %s = %q, want %q", k, got, want)
		}
	}
	for k := range resp.Header {
		if k != http.CanonicalHeaderKey(k) {
			t.Errorf("response header key %q is not canonical", k)
		}
	}
	noStreams(t, c)
}

func TestRequestBodies(t *testing.T) {
	addr := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(400)
			return
		}
		w.Header().Set("X-Content-Length", strconv.FormatInt(r.ContentLength, 10))
		w.Write(b)
	}), 0)
	c := dialH2(t, addr, Config{})

	big := bytes.Repeat([]byte("0123456789abcdef"), 300<<10/16)
	pipe := func(p []byte) io.ReadCloser {
		pr, pw := io.Pipe()
		go func() {
			for len(p) > 0 {
				n := min(len(p), 1000)
				pw.Write(p[:n])
				p = p[n:]
			}
			pw.Close()
		}()
		return pr
	}
	for _, tc := range []struct {
		name   string
		method string
		length int64
		body   func() io.ReadCloser
		want   []byte
		wantCL int64
	}{
		{"known length", "POST", 11, func() io.ReadCloser { return io.NopCloser(strings.NewReader("hello world")) }, []byte("hello world"), 11},
		{"known length over the windows", "PUT", int64(len(big)), func() io.ReadCloser { return io.NopCloser(bytes.NewReader(big)) }, big, int64(len(big))},
		{"unknown length", "POST", -1, func() io.ReadCloser { return pipe([]byte("streamed")) }, []byte("streamed"), -1},
		{"unknown length over the windows", "POST", -1, func() io.ReadCloser { return pipe(big) }, big, -1},
		{"empty POST without body", "POST", 0, nil, nil, 0},
		{"empty POST with body", "POST", 0, func() io.ReadCloser { return io.NopCloser(strings.NewReader("")) }, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := getReq("/")
			req.Method, req.ContentLength = tc.method, tc.length
			if tc.body != nil {
				req.Body = tc.body()
			}
			resp, err := do(t, c, context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			got := readAll(t, resp)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if got != string(tc.want) {
				t.Errorf("echoed %d bytes, want %d", len(got), len(tc.want))
			}
			if cl := resp.Header.Get("X-Content-Length"); cl != strconv.FormatInt(tc.wantCL, 10) {
				t.Errorf("server saw ContentLength %s, want %d", cl, tc.wantCL)
			}
			noStreams(t, c)
		})
	}
}

// TestFullDuplexEcho streams 8 MiB, more than the 4 MiB stream window,
// through a handler that echoes as it reads.
func TestFullDuplexEcho(t *testing.T) {
	addr := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		w.WriteHeader(200)
		rc.Flush()
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				if _, err := w.Write(buf[:n]); err != nil {
					return
				}
				rc.Flush()
			}
			if err != nil {
				return
			}
		}
	}), 0)
	c := dialH2(t, addr, Config{})
	const size = 8 << 20

	// Lockstep: each chunk goes out only once the one before has come
	// back, which works only if the body is sent while the response is
	// read.
	t.Run("lockstep", func(t *testing.T) {
		pr, pw := io.Pipe()
		req := getReq("/")
		req.Method, req.ContentLength, req.Body = "POST", -1, pr
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := do(t, c, ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		src := pattern(1, size)
		chunk, back := make([]byte, 64<<10), make([]byte, 64<<10)
		for sent := 0; sent < size; sent += len(chunk) {
			io.ReadFull(src, chunk)
			if _, err := pw.Write(chunk); err != nil {
				t.Fatalf("writing the body at %d: %v", sent, err)
			}
			if _, err := io.ReadFull(resp.Body, back); err != nil {
				t.Fatalf("reading the echo at %d: %v", sent, err)
			}
			if !bytes.Equal(chunk, back) {
				t.Fatalf("echo differs at %d", sent)
			}
		}
		pw.Close()
		if n, err := io.Copy(io.Discard, resp.Body); n != 0 || err != nil {
			t.Fatalf("after the echo: %d bytes, %v", n, err)
		}
	})

	// Free running, with the reader late: the response fills the client's
	// stream window, the handler stops reading, the request fills the
	// server's; both must recover.
	t.Run("free running", func(t *testing.T) {
		req := getReq("/")
		req.Method, req.ContentLength, req.Body = "POST", size, io.NopCloser(pattern(2, size))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := do(t, c, ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		time.Sleep(200 * time.Millisecond)
		if err := sameBytes(resp.Body, pattern(2, size)); err != nil {
			t.Fatal(err)
		}
	})
	noStreams(t, c)
}

// trailerBody fills its request's trailer when it reaches EOF.
type trailerBody struct {
	r   io.Reader
	req *Request
}

func (b *trailerBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.req.Trailer.Set("X-Checksum", "sum-42")
		b.req.Trailer.Set("X-Count", "7")
	}
	return n, err
}

func (b *trailerBody) Close() error { return nil }

func TestRequestTrailers(t *testing.T) {
	addr := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(400)
			return
		}
		w.Header().Set("X-Got-Checksum", r.Trailer.Get("X-Checksum"))
		w.Header().Set("X-Got-Count", r.Trailer.Get("X-Count"))
		w.Write(b)
	}), 0)
	c := dialH2(t, addr, Config{})
	for _, length := range []int64{9, -1} {
		t.Run(fmt.Sprint("length ", length), func(t *testing.T) {
			req := getReq("/")
			req.Method, req.ContentLength = "POST", length
			req.Trailer = http.Header{"X-Checksum": nil, "X-Count": nil}
			req.Body = &trailerBody{r: strings.NewReader("some body"), req: req}
			resp, err := do(t, c, context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, resp); got != "some body" {
				t.Errorf("body %q", got)
			}
			if got := resp.Header.Get("X-Got-Checksum"); got != "sum-42" {
				t.Errorf("handler saw trailer X-Checksum %q", got)
			}
			if got := resp.Header.Get("X-Got-Count"); got != "7" {
				t.Errorf("handler saw trailer X-Count %q", got)
			}
		})
	}
	noStreams(t, c)
}

func TestResponseTrailers(t *testing.T) {
	addr := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "body bytes")
		w.Header().Set("X-Sum", "s1")
		w.Header().Set(http.TrailerPrefix+"X-Late", "l1")
	}), 0)
	c := dialH2(t, addr, Config{})
	resp, err := do(t, c, context.Background(), getReq("/"))
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); got != "body bytes" {
		t.Errorf("body %q", got)
	}
	if got := resp.Trailer.Get("X-Sum"); got != "s1" {
		t.Errorf("trailer X-Sum = %q (trailer %v)", got, resp.Trailer)
	}
	if got := resp.Trailer.Get("X-Late"); got != "l1" {
		t.Errorf("trailer X-Late = %q (trailer %v)", got, resp.Trailer)
	}
	noStreams(t, c)
}

func TestBodilessResponses(t *testing.T) {
	addr := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/head":
			w.Header().Set("Content-Length", "1234")
		case "/204":
			w.WriteHeader(204)
		}
	}), 0)
	c := dialH2(t, addr, Config{})
	for _, tc := range []struct {
		method, path string
		status       int
		length       int64
	}{
		{"HEAD", "/head", 200, 1234},
		{"GET", "/204", 204, 0},
		{"POST", "/204", 204, 0},
	} {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			req := getReq(tc.path)
			req.Method = tc.method
			resp, err := do(t, c, context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, resp); got != "" {
				t.Errorf("body %q", got)
			}
			if resp.StatusCode != tc.status || resp.ContentLength != tc.length {
				t.Errorf("status %d length %d, want %d %d", resp.StatusCode, resp.ContentLength, tc.status, tc.length)
			}
		})
	}
	noStreams(t, c)
}

func TestConcurrentRequests(t *testing.T) {
	const limit, n = 10, 300
	var conn atomic.Pointer[Conn]
	var inflight, peak, overActive atomic.Int32
	addr := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := inflight.Add(1)
		defer inflight.Add(-1)
		for p := peak.Load(); now > p && !peak.CompareAndSwap(p, now); p = peak.Load() {
		}
		if a := conn.Load().ActiveStreams(); a > limit {
			overActive.Store(int32(a))
		}
		time.Sleep(time.Millisecond)
		io.WriteString(w, r.URL.Query().Get("i"))
	}), limit)
	c := dialH2(t, addr, Config{})
	conn.Store(c)

	var full atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			deadline := time.Now().Add(10 * time.Second)
			for !c.Reserve() {
				full.Add(1)
				if time.Now().After(deadline) {
					errs <- errors.New("Reserve never succeeded")
					return
				}
				time.Sleep(time.Duration(1+rand.IntN(2)) * time.Millisecond)
			}
			resp, err := c.RoundTrip(context.Background(), getReq("/?i="+strconv.Itoa(i)))
			if err != nil {
				errs <- err
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(b) != strconv.Itoa(i) {
				errs <- fmt.Errorf("request %d: body %q, %v", i, b, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if p := peak.Load(); p > limit {
		t.Errorf("%d handlers ran at once, the server allows %d", p, limit)
	}
	if a := overActive.Load(); a > 0 {
		t.Errorf("ActiveStreams() = %d, over the limit %d", a, limit)
	}
	if full.Load() == 0 {
		t.Errorf("Reserve never returned false with %d requests and a limit of %d", n, limit)
	}
	noStreams(t, c)
	if c.Closed() {
		t.Errorf("connection closed")
	}
}

func TestCancelWhileWaitingForHeaders(t *testing.T) {
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, func())
		want error
	}{
		{"cancel", func() (context.Context, func()) { return context.WithCancel(context.Background()) }, context.Canceled},
		{"deadline", func() (context.Context, func()) {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			return ctx, func() { <-ctx.Done(); cancel() }
		}, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entered, canceled := make(chan struct{}, 1), make(chan struct{}, 1)
			addr := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/quick" {
					io.WriteString(w, "quick")
					return
				}
				entered <- struct{}{}
				select {
				case <-r.Context().Done():
					canceled <- struct{}{}
				case <-time.After(10 * time.Second):
				}
			}), 0)
			c := dialH2(t, addr, Config{})
			ctx, cancel := tc.ctx()
			defer cancel()
			ch := goRoundTrip(ctx, c, getReq("/"))
			select {
			case <-entered:
			case <-time.After(5 * time.Second):
				t.Fatal("handler not called")
			}
			start := time.Now()
			cancel()
			r := await(t, ch)
			if !errors.Is(r.err, tc.want) {
				t.Fatalf("RoundTrip: %v, %v; want %v", r.resp, r.err, tc.want)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("RoundTrip returned %v after the cancellation", d)
			}
			select {
			case <-canceled:
			case <-time.After(2 * time.Second):
				t.Errorf("the handler's context was not canceled")
			}
			noStreams(t, c)
			// The connection goes on.
			resp, err := do(t, c, context.Background(), getReq("/quick"))
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, resp); got != "quick" {
				t.Errorf("next request: %q", got)
			}
		})
	}
}

func TestCloseBodyEarlyResetsStream(t *testing.T) {
	result := make(chan error, 1)
	addr := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/small" {
			io.WriteString(w, "ok")
			return
		}
		rc := http.NewResponseController(w)
		w.WriteHeader(200)
		rc.Flush()
		chunk := make([]byte, 16<<10)
		for range 1 << 16 {
			if _, err := w.Write(chunk); err != nil {
				result <- err
				return
			}
			if err := rc.Flush(); err != nil {
				result <- err
				return
			}
			if err := r.Context().Err(); err != nil {
				result <- err
				return
			}
		}
		result <- nil
	}), 0)
	c := dialH2(t, addr, Config{})
	resp, err := do(t, c, context.Background(), getReq("/long"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, err := resp.Body.Read(make([]byte, 1)); err == nil {
		t.Errorf("Read after Close succeeded")
	}
	select {
	case err := <-result:
		if err == nil {
			t.Errorf("the handler wrote the whole response")
		}
	case <-time.After(3 * time.Second):
		t.Errorf("the handler did not notice the reset")
	}
	noStreams(t, c)
	resp, err = do(t, c, context.Background(), getReq("/small"))
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); got != "ok" {
		t.Errorf("next request: %q", got)
	}
}

// blockingServer's handler blocks until release is closed or its request
// is canceled, then writes "done".
func blockingServer(t *testing.T) (addr string, entered chan struct{}, release func()) {
	entered = make(chan struct{}, 10)
	rel := make(chan struct{})
	addr = startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/partial" {
			io.WriteString(w, "partial")
			http.NewResponseController(w).Flush()
		}
		entered <- struct{}{}
		select {
		case <-rel:
			io.WriteString(w, "done")
		case <-r.Context().Done():
		}
	}), 0)
	var once sync.Once
	release = func() { once.Do(func() { close(rel) }) }
	t.Cleanup(release)
	return addr, entered, release
}

func waitChan(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func goAwayStarted(c *Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.goAway || c.shutdown
}

func TestShutdownWaitsForInFlight(t *testing.T) {
	addr, entered, release := blockingServer(t)
	c := dialH2(t, addr, Config{})
	ch := goRoundTrip(context.Background(), c, getReq("/"))
	waitChan(t, entered, "the handler")

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- c.Shutdown(ctx)
	}()
	if !eventually(time.Second, func() bool { return goAwayStarted(c) }) {
		t.Fatal("Shutdown did not start")
	}
	if c.Reserve() {
		t.Errorf("Reserve succeeded during Shutdown")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	r := await(t, ch)
	if r.err != nil {
		t.Fatalf("in-flight request: %v", r.err)
	}
	if got := readAll(t, r.resp); got != "done" {
		t.Errorf("body %q", got)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown did not return once the request ended")
	}
	if !c.Closed() {
		t.Errorf("connection not closed after Shutdown")
	}
}

func TestShutdownContextEnds(t *testing.T) {
	addr, entered, release := blockingServer(t)
	c := dialH2(t, addr, Config{})
	ch := goRoundTrip(context.Background(), c, getReq("/"))
	waitChan(t, entered, "the handler")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := c.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the context's error", err)
	}
	if c.Closed() || c.Reserve() {
		t.Fatalf("after Shutdown's context ended: Closed %v; want an open conn taking no streams", c.Closed())
	}
	release()
	r := await(t, ch)
	if r.err != nil {
		t.Fatal(r.err)
	}
	readAll(t, r.resp)
	// The last stream of a connection going away closes it.
	if !eventually(time.Second, c.Closed) {
		t.Errorf("connection still open after its last stream")
	}
}

func TestCloseFailsInFlight(t *testing.T) {
	t.Run("waiting for headers", func(t *testing.T) {
		addr, entered, _ := blockingServer(t)
		c := dialH2(t, addr, Config{})
		ch := goRoundTrip(context.Background(), c, getReq("/"))
		waitChan(t, entered, "the handler")
		closeConn(t, c)
		r := await(t, ch)
		if !errors.Is(r.err, ErrConnClosed) {
			t.Errorf("RoundTrip = %v, want ErrConnClosed", r.err)
		}
		if c.Reserve() {
			t.Errorf("Reserve succeeded after Close")
		}
	})
	t.Run("reading the body", func(t *testing.T) {
		addr, entered, _ := blockingServer(t)
		c := dialH2(t, addr, Config{})
		resp, err := do(t, c, context.Background(), getReq("/partial"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		waitChan(t, entered, "the handler")
		buf := make([]byte, 7)
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			t.Fatal(err)
		}
		closeConn(t, c)
		if _, err := resp.Body.Read(buf); !errors.Is(err, ErrConnClosed) {
			t.Errorf("Read = %v, want ErrConnClosed", err)
		}
		noStreams(t, c)
	})
	t.Run("reserved", func(t *testing.T) {
		addr, _, _ := blockingServer(t)
		c := dialH2(t, addr, Config{})
		reserve(t, c)
		closeConn(t, c)
		if _, err := c.RoundTrip(context.Background(), getReq("/")); !errors.Is(err, ErrUnprocessed) {
			t.Errorf("RoundTrip after Close = %v, want ErrUnprocessed", err)
		}
	})
}

func TestPingRealServer(t *testing.T) {
	c := dialH2(t, startH2C(t, http.NotFoundHandler(), 0), Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 3 {
		if err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// ---------------------------------------------------------------------
// Against a scripted fake server.

func streamErr(t *testing.T, err error, code http2.ErrCode) {
	t.Helper()
	var se http2.StreamError
	if !errors.As(err, &se) || se.Code != code {
		t.Errorf("error %v, want a stream error %v", err, code)
	}
}

func expectReset(f *fake, id uint32, code http2.ErrCode) {
	f.t.Helper()
	rst := expect[*http2.RSTStreamFrame](f)
	if rst.StreamID != id || rst.ErrCode != code {
		f.t.Errorf("fake got %s, want RST_STREAM %v on stream %d", describe(rst), code, id)
	}
}

func TestRefusedStream(t *testing.T) {
	c, f := startFake(t, Config{})
	ch := goRoundTrip(context.Background(), c, getReq("/"))
	h := f.readRequest()
	f.fr.WriteRSTStream(h.StreamID, http2.ErrCodeRefusedStream)
	r := await(t, ch)
	streamErr(t, r.err, http2.ErrCodeRefusedStream)
	noStreams(t, c)
}

func TestGoAway(t *testing.T) {
	c, f := startFake(t, Config{})
	ch1 := goRoundTrip(context.Background(), c, getReq("/1"))
	h1 := f.readRequest()
	ch3 := goRoundTrip(context.Background(), c, getReq("/3"))
	h3 := f.readRequest()
	if h1.StreamID != 1 || h3.StreamID != 3 {
		t.Fatalf("streams %d and %d", h1.StreamID, h3.StreamID)
	}
	f.fr.WriteGoAway(1, http2.ErrCodeNo, []byte("bye"))

	if r := await(t, ch3); !errors.Is(r.err, ErrUnprocessed) {
		t.Errorf("stream 3: %v, want ErrUnprocessed", r.err)
	}
	if !eventually(time.Second, func() bool { return !c.Reserve() }) {
		t.Errorf("Reserve succeeded after GOAWAY")
	}
	f.respond(1, "one")
	r := await(t, ch1)
	if r.err != nil {
		t.Fatalf("stream 1: %v", r.err)
	}
	if got := readAll(t, r.resp); got != "one" {
		t.Errorf("stream 1 body %q", got)
	}
	if !eventually(time.Second, c.Closed) {
		t.Errorf("connection open after its last stream ended following GOAWAY")
	}
}

func TestGoAwayBeforeRoundTrip(t *testing.T) {
	c, f := startFake(t, Config{})
	reserve(t, c)
	f.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	f.fr.WritePing(false, [8]byte{1})
	expect[*http2.PingFrame](f) // the GOAWAY has been read
	if _, err := c.RoundTrip(context.Background(), getReq("/")); !errors.Is(err, ErrUnprocessed) {
		t.Errorf("RoundTrip = %v, want ErrUnprocessed", err)
	}
	if !eventually(time.Second, c.Closed) {
		t.Errorf("connection open with no streams after GOAWAY")
	}
}

func TestInterimResponses(t *testing.T) {
	c, f := startFake(t, Config{})
	ch := goRoundTrip(context.Background(), c, getReq("/"))
	h := f.readRequest()
	f.headers(h.StreamID, false, ":status", "100")
	f.headers(h.StreamID, false, ":status", "103", "link", "</style.css>; rel=preload")
	f.headers(h.StreamID, false, ":status", "200", "x-final", "yes")
	f.data(h.StreamID, true, []byte("final"))
	r := await(t, ch)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.resp.StatusCode != 200 || r.resp.Header.Get("X-Final") != "yes" || r.resp.Header.Get("Link") != "" {
		t.Errorf("status %d header %v", r.resp.StatusCode, r.resp.Header)
	}
	if got := readAll(t, r.resp); got != "final" {
		t.Errorf("body %q", got)
	}
}

func TestMalformedStatus(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fields []string
		end    bool
	}{
		{"letters", []string{":status", "abc"}, false},
		{"four digits", []string{":status", "2000"}, false},
		{"two digits", []string{":status", "20"}, false},
		{"below 100", []string{":status", "099"}, false},
		{"signed", []string{":status", "+20"}, false},
		{"empty", []string{":status", ""}, false},
		{"missing", []string{"x-no-status", "1"}, false},
		{"101", []string{":status", "101"}, false},
		{"interim with END_STREAM", []string{":status", "103"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, f := startFake(t, Config{})
			ch := goRoundTrip(context.Background(), c, getReq("/"))
			h := f.readRequest()
			f.headers(h.StreamID, tc.end, tc.fields...)
			r := await(t, ch)
			streamErr(t, r.err, http2.ErrCodeProtocol)
			if !tc.end {
				expectReset(f, h.StreamID, http2.ErrCodeProtocol)
			}
			noStreams(t, c)
			if c.Closed() {
				t.Errorf("a stream error closed the connection")
			}
		})
	}
}

func TestMalformedContentLength(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values []string
	}{
		{"letters", []string{"abc"}},
		{"negative", []string{"-1"}},
		{"plus sign", []string{"+5"}},
		{"space", []string{" 5"}},
		{"overflow", []string{"99999999999999999999"}},
		{"conflicting", []string{"5", "6"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, f := startFake(t, Config{})
			ch := goRoundTrip(context.Background(), c, getReq("/"))
			h := f.readRequest()
			fields := []string{":status", "200"}
			for _, v := range tc.values {
				fields = append(fields, "content-length", v)
			}
			f.headers(h.StreamID, false, fields...)
			f.data(h.StreamID, true, []byte("hello"))
			r := await(t, ch)
			if r.err == nil {
				t.Fatalf("accepted Content-Length %q: ContentLength %d", tc.values, r.resp.ContentLength)
			}
			streamErr(t, r.err, http2.ErrCodeProtocol)
			expectReset(f, h.StreamID, http2.ErrCodeProtocol)
		})
	}
}

// A body that does not match its Content-Length fails the read with a
// stream error, after the bytes that came.
func TestResponseBodyLengthMismatch(t *testing.T) {
	for _, tc := range []struct {
		name, length, body string
	}{
		{"shorter", "10", "12345"},
		{"longer", "5", "1234567890"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, f := startFake(t, Config{})
			ch := goRoundTrip(context.Background(), c, getReq("/"))
			h := f.readRequest()
			f.headers(h.StreamID, false, ":status", "200", "content-length", tc.length)
			f.data(h.StreamID, true, []byte(tc.body))
			r := await(t, ch)
			if r.err != nil {
				t.Fatal(r.err)
			}
			defer r.resp.Body.Close()
			b, err := io.ReadAll(r.resp.Body)
			if err == nil || err == io.EOF || len(b) > len(tc.body) {
				t.Fatalf("read %q, %v; want at most the body sent and an error", b, err)
			}
			streamErr(t, err, http2.ErrCodeProtocol)
		})
	}
}

func TestStreamFlowControlViolation(t *testing.T) {
	c, f := startFake(t, Config{})
	if got := f.clientSettings[http2.SettingInitialWindowSize]; got != streamWindow {
		t.Fatalf("client's SETTINGS_INITIAL_WINDOW_SIZE %d", got)
	}
	ch := goRoundTrip(context.Background(), c, getReq("/"))
	h := f.readRequest()
	f.headers(h.StreamID, false, ":status", "200")
	r := await(t, ch)
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.resp.Body.Close()
	mb := make([]byte, 1<<20)
	for range streamWindow >> 20 {
		f.data(h.StreamID, false, mb) // the whole window, unread
	}
	f.data(h.StreamID, false, []byte{1})
	expectReset(f, h.StreamID, http2.ErrCodeFlowControl)
	n, err := io.Copy(io.Discard, r.resp.Body)
	if n != streamWindow {
		t.Errorf("read %d bytes, want the %d within the window", n, streamWindow)
	}
	streamErr(t, err, http2.ErrCodeFlowControl)
	if c.Closed() {
		t.Errorf("a stream error closed the connection")
	}
}

// TestConnectionErrors sends frames that break the protocol for the
// connection as a whole, with a request in flight.
func TestConnectionErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		send func(f *fake)
		code http2.ErrCode
	}{
		{"HEADERS on idle stream 99", func(f *fake) { f.headers(99, true, ":status", "200") }, http2.ErrCodeProtocol},
		{"DATA on idle stream 99", func(f *fake) { f.data(99, true, []byte("x")) }, http2.ErrCodeProtocol},
		{"DATA on stream 3, not yet opened", func(f *fake) { f.data(3, true, []byte("x")) }, http2.ErrCodeProtocol},
		{"HEADERS on even stream 2", func(f *fake) { f.headers(2, true, ":status", "200") }, http2.ErrCodeProtocol},
		{"RST_STREAM on idle stream 99", func(f *fake) { f.fr.WriteRSTStream(99, http2.ErrCodeCancel) }, http2.ErrCodeProtocol},
		{"WINDOW_UPDATE on idle stream 99", func(f *fake) { f.fr.WriteWindowUpdate(99, 100) }, http2.ErrCodeProtocol},
		{"DATA on stream 0", func(f *fake) { f.data(0, false, []byte("x")) }, http2.ErrCodeProtocol},
		{"CONTINUATION without HEADERS", func(f *fake) { f.fr.WriteContinuation(1, true, f.block("x-a", "b")) }, http2.ErrCodeProtocol},
		{"PUSH_PROMISE", func(f *fake) {
			f.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, EndHeaders: true,
				BlockFragment: f.block(":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/")})
		}, http2.ErrCodeProtocol},
		{"connection window overflow", func(f *fake) { f.fr.WriteWindowUpdate(0, 1<<31-1) }, http2.ErrCodeFlowControl},
		{"initial window too large", func(f *fake) {
			f.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31})
		}, http2.ErrCodeFlowControl},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, f := startFake(t, Config{})
			ch := goRoundTrip(context.Background(), c, getReq("/"))
			f.readRequest()
			tc.send(f)
			ga := f.expectClosed()
			if ga == nil || ga.ErrCode != tc.code {
				t.Errorf("client's GOAWAY %+v, want one with %v", ga, tc.code)
			}
			r := await(t, ch)
			var ce http2.ConnectionError
			if !errors.As(r.err, &ce) || http2.ErrCode(ce) != tc.code {
				t.Errorf("in-flight request: %v, want connection error %v", r.err, tc.code)
			}
			if !eventually(time.Second, c.Closed) {
				t.Errorf("connection not closed")
			}
		})
	}
}

// TestGoAwayLastStreamID checks the client's GOAWAY names the last
// server-initiated stream it processed (RFC 9113 §6.8): with push disabled
// there is none, so 0.
func TestGoAwayLastStreamID(t *testing.T) {
	for _, inFlight := range []bool{false, true} {
		t.Run(fmt.Sprint("in flight ", inFlight), func(t *testing.T) {
			c, f := startFake(t, Config{})
			if inFlight {
				goRoundTrip(context.Background(), c, getReq("/"))
				f.readRequest()
			}
			f.data(99, true, []byte("x"))
			ga := f.expectClosed()
			if ga == nil {
				t.Fatal("no GOAWAY")
			}
			if ga.LastStreamID != 0 {
				t.Errorf("GOAWAY last stream ID %d, want 0 (no server-initiated streams)", ga.LastStreamID)
			}
		})
	}
}

func TestSendFlowControl(t *testing.T) {
	const frameSize, size = 16384, 100 << 10
	c, f := startFake(t, Config{},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: frameSize})
	req := getReq("/")
	req.Method, req.ContentLength, req.Body = "PUT", size, io.NopCloser(pattern(3, size))
	ch := goRoundTrip(context.Background(), c, req)
	h := f.readRequest()

	streamWin, connWin := int64(10), int64(65535)
	var got bytes.Buffer
	for i := 0; ; i++ {
		d := expect[*http2.DataFrame](f)
		n := int64(d.Length)
		if n > frameSize || n > streamWin || n > connWin {
			t.Fatalf("DATA of %d bytes; frame size %d, stream window %d, connection window %d", n, frameSize, streamWin, connWin)
		}
		streamWin -= n
		connWin -= n
		got.Write(d.Data())
		if d.StreamEnded() {
			break
		}
		if streamWin < 100 {
			inc := int64(1000 + i*7919%20000)
			f.fr.WriteWindowUpdate(h.StreamID, uint32(inc))
			streamWin += inc
		}
		if connWin < 30000 {
			f.fr.WriteWindowUpdate(0, 40000)
			connWin += 40000
		}
	}
	if err := sameBytes(&got, pattern(3, size)); err != nil {
		t.Fatal(err)
	}
	f.respond(h.StreamID, "")
	r := await(t, ch)
	if r.err != nil {
		t.Fatal(r.err)
	}
	readAll(t, r.resp)
	noStreams(t, c)
}

// TestInitialWindowSizeChange: a new SETTINGS_INITIAL_WINDOW_SIZE moves the
// window of a stream already open by the difference (RFC 9113 §6.9.2).
func TestInitialWindowSizeChange(t *testing.T) {
	c, f := startFake(t, Config{}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	req := getReq("/")
	req.Method, req.ContentLength = "POST", 50
	req.Body = io.NopCloser(strings.NewReader(strings.Repeat("x", 50)))
	ch := goRoundTrip(context.Background(), c, req)
	h := f.readRequest()
	if fr, err := f.readFrame(100 * time.Millisecond); err == nil && !noise(fr) {
		t.Fatalf("sent %s with a window of 0", describe(fr))
	}
	f.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 20})
	if d := expect[*http2.DataFrame](f); d.Length != 20 || d.StreamEnded() {
		t.Fatalf("got %s, want 20 bytes", describe(d))
	}
	f.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 50})
	if d := expect[*http2.DataFrame](f); d.Length != 30 || !d.StreamEnded() {
		t.Fatalf("got %s, want the last 30 bytes", describe(d))
	}
	respondOK(t, f, ch, h.StreamID)
}

func TestResponseHeaderContinuation(t *testing.T) {
	c, f := startFake(t, Config{})
	ch := goRoundTrip(context.Background(), c, getReq("/"))
	h := f.readRequest()
	fields := []string{":status", "200"}
	for i := range 50 {
		fields = append(fields, fmt.Sprintf("x-h-%d", i), strings.Repeat(string(rune('a'+i%26)), 500))
	}
	block := f.block(fields...)
	f.headerBlock(h.StreamID, true, block, 100, 10000)
	r := await(t, ch)
	if r.err != nil {
		t.Fatal(r.err)
	}
	readAll(t, r.resp)
	for i := range 50 {
		if got := r.resp.Header.Get(fmt.Sprintf("X-H-%d", i)); got != fields[3+2*i] {
			t.Fatalf("header %d: %d bytes", i, len(got))
		}
	}
}

func TestRequestHeaderContinuation(t *testing.T) {
	c, f := startFake(t, Config{}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 16384})
	rnd := rand.New(rand.NewPCG(1, 2))
	const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	big := make([]byte, 40<<10)
	for i := range big {
		big[i] = alnum[rnd.IntN(len(alnum))]
	}
	req := getReq("/")
	req.Header.Set("X-Big", string(big))
	ch := goRoundTrip(context.Background(), c, req)

	// Read the raw frames to see how the block was cut.
	f.fr.ReadMetaHeaders = nil
	hf := expect[*http2.HeadersFrame](f)
	frames, block := 1, bytes.Clone(hf.HeaderBlockFragment())
	if hf.Length > 16384 || hf.HeadersEnded() || !hf.StreamEnded() {
		t.Fatalf("HEADERS: length %d, END_HEADERS %v, END_STREAM %v", hf.Length, hf.HeadersEnded(), hf.StreamEnded())
	}
	for ended := false; !ended; {
		cf := expect[*http2.ContinuationFrame](f)
		if cf.Length > 16384 || cf.StreamID != hf.StreamID {
			t.Fatalf("CONTINUATION of %d bytes on stream %d", cf.Length, cf.StreamID)
		}
		frames++
		block = append(block, cf.HeaderBlockFragment()...)
		ended = cf.HeadersEnded()
	}
	f.fr.ReadMetaHeaders = f.dec
	fields, err := f.dec.DecodeFull(block)
	if err != nil {
		t.Fatal(err)
	}
	var got string
	for _, hf := range fields {
		if hf.Name == "x-big" {
			got = hf.Value
		}
	}
	if got != string(big) || frames < 2 {
		t.Fatalf("x-big: %d bytes in %d frames", len(got), frames)
	}
	respondOK(t, f, ch, hf.StreamID)
}

func TestServerPing(t *testing.T) {
	_, f := startFake(t, Config{})
	data := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	f.fr.WritePing(false, data)
	p := expect[*http2.PingFrame](f)
	if !p.IsAck() || p.Data != data {
		t.Errorf("got PING ack %v data %v", p.IsAck(), p.Data)
	}
}

func TestPeerMaxHeaderListSize(t *testing.T) {
	c, f := startFake(t, Config{}, http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: 1000})
	req := getReq("/")
	req.Header.Set("X-Big", strings.Repeat("b", 2000))
	r := await(t, goRoundTrip(context.Background(), c, req))
	if r.err == nil {
		r.resp.Body.Close()
		t.Fatal("a request over the peer's header list size was sent")
	}
	// Nothing went out: the next request is stream 1 and decodes.
	ch := goRoundTrip(context.Background(), c, getReq("/next"))
	h := f.readRequest()
	if h.StreamID != 1 || h.PseudoValue("path") != "/next" {
		t.Fatalf("next request: stream %d path %q", h.StreamID, h.PseudoValue("path"))
	}
	f.respond(h.StreamID, "ok")
	if r := await(t, ch); r.err != nil {
		t.Fatal(r.err)
	} else {
		readAll(t, r.resp)
	}
}

// TestRejectedRequestKeepsOtherReservations: a request turned down before
// it is sent gives back its own reservation, not someone else's.
func TestRejectedRequestKeepsOtherReservations(t *testing.T) {
	c, _ := startFake(t, Config{},
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 2},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: 1000})
	if !c.Reserve() || !c.Reserve() || c.Reserve() {
		t.Fatal("want exactly 2 reservations")
	}
	req := getReq("/")
	req.Header.Set("X-Big", strings.Repeat("b", 2000))
	if _, err := c.RoundTrip(context.Background(), req); err == nil {
		t.Fatal("a request over the peer's header list size was sent")
	}
	// One reservation is still held: one more fits, not two.
	if !c.Reserve() {
		t.Fatal("Reserve failed with one of two slots free")
	}
	if c.Reserve() {
		t.Errorf("Reserve succeeded with both slots reserved: the rejected request gave back two reservations")
	}
}

func TestInvalidRequests(t *testing.T) {
	c, f := startFake(t, Config{}, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
	for _, tc := range []struct {
		name string
		edit func(*Request)
	}{
		{"empty method", func(r *Request) { r.Method = "" }},
		{"method with space", func(r *Request) { r.Method = "GE T" }},
		{"empty path", func(r *Request) { r.Path = "" }},
		{"header name", func(r *Request) { r.Header["Bad Name"] = []string{"v"} }},
		{"header value", func(r *Request) { r.Header.Set("X-A", "a\r\nb") }},
		{"trailer name", func(r *Request) { r.Trailer = http.Header{"Bad:Name": nil} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := getReq("/")
			var closed atomic.Bool
			req.Method, req.ContentLength = "POST", 1
			req.Body = closeFunc{strings.NewReader("x"), func() { closed.Store(true) }}
			tc.edit(req)
			reserve(t, c)
			if _, err := c.RoundTrip(context.Background(), req); err == nil {
				t.Fatal("invalid request sent")
			}
			if !closed.Load() {
				t.Errorf("body not closed")
			}
		})
	}
	ch := goRoundTrip(context.Background(), c, getReq("/ok"))
	h := f.readRequest()
	if h.StreamID != 1 || h.PseudoValue("path") != "/ok" {
		t.Fatalf("stream %d path %q", h.StreamID, h.PseudoValue("path"))
	}
	f.respond(1, "ok")
	if r := await(t, ch); r.err != nil {
		t.Fatal(r.err)
	} else {
		readAll(t, r.resp)
	}
}

type closeFunc struct {
	io.Reader
	close func()
}

func (c closeFunc) Close() error {
	c.close()
	return nil
}

func TestIdlePingTimeout(t *testing.T) {
	c, f := startFake(t, Config{ReadIdleTimeout: 100 * time.Millisecond, PingTimeout: 100 * time.Millisecond})
	start := time.Now()
	ch := goRoundTrip(context.Background(), c, getReq("/"))
	f.readRequest()
	expect[*http2.PingFrame](f) // and never answer it
	if !eventually(time.Second, c.Closed) {
		t.Fatalf("connection open %v after an unanswered ping", time.Since(start))
	}
	if r := await(t, ch); r.err == nil {
		t.Errorf("in-flight request succeeded")
	}
}

func TestIdlePingAnswered(t *testing.T) {
	c, f := startFake(t, Config{ReadIdleTimeout: 50 * time.Millisecond, PingTimeout: 500 * time.Millisecond})
	count, stop := f.pingResponder()
	time.Sleep(400 * time.Millisecond)
	stop()
	if c.Closed() {
		t.Fatal("connection closed although its pings were answered")
	}
	if n := count(); n < 2 {
		t.Errorf("%d pings in 400ms with ReadIdleTimeout 50ms", n)
	}
}

// TestReadIdleTimeoutWithoutPingTimeout: a zero PingTimeout should not
// close a connection whose peer answers every ping.
func TestReadIdleTimeoutWithoutPingTimeout(t *testing.T) {
	c, f := startFake(t, Config{ReadIdleTimeout: 50 * time.Millisecond})
	count, stop := f.pingResponder()
	time.Sleep(300 * time.Millisecond)
	stop()
	if c.Closed() {
		t.Errorf("connection closed after %d answered pings: a zero PingTimeout fails every ping", count())
	}
}

// TestConnLossErrors: however the connection is lost, a request in flight
// fails with an error wrapping ErrConnClosed.
func TestConnLossErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		lose func(c *Conn, f *fake, hc *hookConn)
	}{
		{"Close", Config{}, func(c *Conn, f *fake, hc *hookConn) { c.Close() }},
		{"peer closes", Config{}, func(c *Conn, f *fake, hc *hookConn) { f.nc.Close() }},
		{"GOAWAY with an error", Config{}, func(c *Conn, f *fake, hc *hookConn) { f.fr.WriteGoAway(1, http2.ErrCodeInternal, nil) }},
		{"write fails", Config{}, func(c *Conn, f *fake, hc *hookConn) {
			hc.failWrites(errors.New("simulated write failure"))
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			c.Ping(ctx)
		}},
		{"ping unanswered", Config{ReadIdleTimeout: 50 * time.Millisecond, PingTimeout: 50 * time.Millisecond}, func(c *Conn, f *fake, hc *hookConn) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hc *hookConn
			c, f := startFakeWrapped(t, tc.cfg, func(nc net.Conn) net.Conn {
				hc = &hookConn{Conn: nc}
				return hc
			})
			ch := goRoundTrip(context.Background(), c, getReq("/"))
			f.readRequest()
			tc.lose(c, f, hc)
			r := await(t, ch)
			if !errors.Is(r.err, ErrConnClosed) {
				t.Errorf("in-flight request: %v, want an error wrapping ErrConnClosed", r.err)
			}
			if errors.Is(r.err, context.DeadlineExceeded) || errors.Is(r.err, context.Canceled) {
				t.Errorf("in-flight request: %v looks like its own context ended", r.err)
			}
			if !eventually(time.Second, c.Closed) {
				t.Errorf("connection not closed")
			}
		})
	}
}

func TestMaxConcurrentStreamsSetting(t *testing.T) {
	c, f := startFake(t, Config{}, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
	ch := goRoundTrip(context.Background(), c, getReq("/"))
	h := f.readRequest()
	if c.Reserve() {
		t.Fatal("Reserve beyond SETTINGS_MAX_CONCURRENT_STREAMS 1")
	}
	f.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 2})
	if !eventually(time.Second, c.Reserve) {
		t.Fatal("Reserve failed after the limit went up to 2")
	}
	if c.Reserve() {
		t.Fatal("Reserve beyond SETTINGS_MAX_CONCURRENT_STREAMS 2")
	}
	f.respond(h.StreamID, "x")
	r := await(t, ch)
	if r.err != nil {
		t.Fatal(r.err)
	}
	readAll(t, r.resp)
	if !c.Reserve() {
		t.Error("Reserve failed once the stream ended")
	}
}

// TestNoResetAfterCompleteExchange: once both sides have ended a stream it
// is closed, and nothing but PRIORITY may be sent on it (RFC 9113 §5.1).
func TestNoResetAfterCompleteExchange(t *testing.T) {
	for _, method := range []string{"GET", "HEAD", "POST"} {
		t.Run(method, func(t *testing.T) {
			c, f := startFake(t, Config{})
			req := getReq("/")
			req.Method = method
			if method == "POST" {
				req.ContentLength, req.Body = 1, io.NopCloser(strings.NewReader("x"))
			}
			ch := goRoundTrip(context.Background(), c, req)
			h := f.readRequest()
			if !h.StreamEnded() {
				for d := expect[*http2.DataFrame](f); !d.StreamEnded(); d = expect[*http2.DataFrame](f) {
				}
			}
			if method == "HEAD" {
				f.headers(h.StreamID, true, ":status", "200", "content-length", "10")
			} else {
				f.respond(h.StreamID, "body")
			}
			r := await(t, ch)
			if r.err != nil {
				t.Fatal(r.err)
			}
			readAll(t, r.resp)
			f.fr.WritePing(false, [8]byte{9})
			if fr := expect[http2.Frame](f); fr.Header().Type != http2.FramePing {
				t.Errorf("after a complete exchange the client sent %s", describe(fr))
			}
			noStreams(t, c)
		})
	}
}

// TestRequestBodyLengthMismatch: a body that does not match its declared
// ContentLength must not go out as a complete request (RFC 9113 §8.1.1
// makes it malformed).
func TestRequestBodyLengthMismatch(t *testing.T) {
	for _, tc := range []struct {
		name   string
		length int64
		body   io.Reader
	}{
		{"shorter", 10, strings.NewReader("12345")},
		{"longer in one read", 5, strings.NewReader("0123456789")},
		{"longer over two reads", 5, io.MultiReader(strings.NewReader("01234"), strings.NewReader("56789"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, f := startFake(t, Config{})
			req := getReq("/")
			req.Method, req.ContentLength, req.Body = "POST", tc.length, io.NopCloser(tc.body)
			ch := goRoundTrip(context.Background(), c, req)
			h := f.readRequest()
			var sent int64
			var ended bool
		frames:
			for {
				switch fr := expect[http2.Frame](f).(type) {
				case *http2.DataFrame:
					sent += int64(len(fr.Data()))
					if ended = fr.StreamEnded(); ended {
						break frames
					}
				case *http2.RSTStreamFrame:
					break frames
				default:
					t.Fatalf("got %s", describe(fr))
				}
			}
			if sent > tc.length || (ended && sent != tc.length) {
				t.Errorf("sent %d bytes and END_STREAM %v for a Content-Length of %d", sent, ended, tc.length)
			}
			if ended {
				// As a server would: the request is malformed.
				f.fr.WriteRSTStream(h.StreamID, http2.ErrCodeProtocol)
			}
			if r := await(t, ch); r.err == nil {
				r.resp.Body.Close()
				t.Errorf("RoundTrip succeeded")
			} else if !errors.Is(r.err, ErrRequestBody) {
				t.Errorf("RoundTrip = %v, want ErrRequestBody: the request's fault, not the upstream's", r.err)
			}
		})
	}
}

// TestResponseHeaderListTooLarge: a response head over the
// SETTINGS_MAX_HEADER_LIST_SIZE the client advertised must not be
// delivered with fields silently dropped.
func TestResponseHeaderListTooLarge(t *testing.T) {
	c, f := startFake(t, Config{})
	ch := goRoundTrip(context.Background(), c, getReq("/"))
	h := f.readRequest()
	fields := []string{":status", "200"}
	for range maxHeaderListSize/36 + 1000 {
		fields = append(fields, "x-f", "v") // 36 bytes each as the limit counts
	}
	fields = append(fields, "x-last", "marker")
	f.headers(h.StreamID, true, fields...)
	r := await(t, ch)
	if r.err == nil {
		r.resp.Body.Close()
		t.Errorf("response accepted with %d of %d X-F fields and X-Last %q",
			len(r.resp.Header["X-F"]), len(fields)/2-2, r.resp.Header.Get("X-Last"))
	}
}

func TestHandshakeAcksSettings(t *testing.T) {
	_, f := startFake(t, Config{}, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 50})
	deadline := time.Now().Add(time.Second)
	for {
		fr, err := f.readFrame(time.Until(deadline))
		if err != nil {
			t.Fatalf("no SETTINGS ack for the server's first SETTINGS: %v", err)
		}
		if s, ok := fr.(*http2.SettingsFrame); ok && s.IsAck() {
			return
		}
	}
}

func TestHandshakeFailures(t *testing.T) {
	for _, tc := range []struct {
		name string
		send func(f *fake)
	}{
		{"PING first", func(f *fake) { f.fr.WritePing(false, [8]byte{}) }},
		{"SETTINGS ack first", func(f *fake) { f.fr.WriteSettingsAck() }},
		{"WINDOW_UPDATE first", func(f *fake) { f.fr.WriteWindowUpdate(0, 1000) }},
		{"HTTP/1.1", func(f *fake) { io.WriteString(f.nc, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n") }},
		{"closed", func(f *fake) { f.nc.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cnc, snc := tcpPair(t)
			f := newFake(t, snc)
			errc := make(chan error, 1)
			go func() {
				err := f.readPreface()
				if err == nil {
					tc.send(f)
				}
				errc <- err
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			start := time.Now()
			c, err := Handshake(ctx, cnc, Config{})
			if ferr := <-errc; ferr != nil {
				t.Fatal(ferr)
			}
			if err == nil {
				closeConn(t, c)
				t.Fatal("Handshake succeeded")
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("Handshake took %v to fail", d)
			}
			if tc.name != "closed" {
				f.expectClosed()
			}
		})
	}
}

func TestHandshakeContext(t *testing.T) {
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, func())
		want error
	}{
		{"deadline", func() (context.Context, func()) {
			return context.WithTimeout(context.Background(), 100*time.Millisecond)
		}, context.DeadlineExceeded},
		{"cancel", func() (context.Context, func()) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(100*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cnc, snc := tcpPair(t)
			f := newFake(t, snc)
			errc := make(chan error, 1)
			go func() { errc <- f.readPreface() }() // and never answer
			ctx, cancel := tc.ctx()
			defer cancel()
			start := time.Now()
			c, err := Handshake(ctx, cnc, Config{})
			if err == nil {
				closeConn(t, c)
				t.Fatal("Handshake succeeded")
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("Handshake = %v, want %v", err, tc.want)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("Handshake took %v", d)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			f.expectClosed()
		})
	}
}

func TestHandshakeInvalidSettings(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setting http2.Setting
	}{
		{"ENABLE_PUSH 1 from a server", http2.Setting{ID: http2.SettingEnablePush, Val: 1}},
		{"INITIAL_WINDOW_SIZE 2^31", http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31}},
		{"MAX_FRAME_SIZE below 16384", http2.Setting{ID: http2.SettingMaxFrameSize, Val: 16383}},
		{"MAX_FRAME_SIZE 2^24", http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 24}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cnc, snc := tcpPair(t)
			f := newFake(t, snc)
			errc := make(chan error, 1)
			go func() { errc <- f.handshake(tc.setting) }()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			c, err := Handshake(ctx, cnc, Config{})
			<-errc
			if err == nil {
				closeConn(t, c)
				t.Fatalf("Handshake accepted %v", tc.setting)
			}
		})
	}
}

func TestShutdownIdleSendsGoAway(t *testing.T) {
	c, f := startFake(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if !c.Closed() {
		t.Errorf("open after Shutdown")
	}
	ga := f.expectClosed()
	if ga == nil || ga.ErrCode != http2.ErrCodeNo {
		t.Errorf("GOAWAY %+v, want NO_ERROR", ga)
	}
}

// TestShutdownSendsGoAway: Shutdown with a stream in flight sends GOAWAY
// once the stream ends, before it closes (RFC 9113 §6.8: endpoints SHOULD
// send GOAWAY before closing). Repeated, since it can race with the
// connection closing itself with its last stream.
func TestShutdownSendsGoAway(t *testing.T) {
	missing := 0
	const runs = 20
	for range runs {
		c, f := startFake(t, Config{})
		ch := goRoundTrip(context.Background(), c, getReq("/"))
		h := f.readRequest()
		shut := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			shut <- c.Shutdown(ctx)
		}()
		if !eventually(time.Second, func() bool { return goAwayStarted(c) }) {
			t.Fatal("Shutdown did not start")
		}
		f.respond(h.StreamID, "x")
		r := await(t, ch)
		if r.err != nil {
			t.Fatal(r.err)
		}
		readAll(t, r.resp)
		ga := f.expectClosed()
		if err := <-shut; err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		if ga == nil || ga.ErrCode != http2.ErrCodeNo {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d Shutdowns closed without GOAWAY", missing, runs)
	}
}

// TestHandshakeCallerDeadline: a deadline the caller put on the conn, with
// a ctx that has none, fails Handshake when it passes.
func TestHandshakeCallerDeadline(t *testing.T) {
	cnc, snc := tcpPair(t)
	f := newFake(t, snc)
	go f.readPreface() // and never answer
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cnc.SetDeadline(time.Now().Add(100 * time.Millisecond))
	done := make(chan error, 1)
	go func() {
		c, err := Handshake(ctx, cnc, Config{})
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Handshake succeeded")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Handshake hangs after the conn's own deadline passed")
	}
}

func TestCancelWhileReadingBody(t *testing.T) {
	c, f := startFake(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := goRoundTrip(ctx, c, getReq("/"))
	h := f.readRequest()
	f.headers(h.StreamID, false, ":status", "200")
	f.data(h.StreamID, false, []byte("part"))
	r := await(t, ch)
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.resp.Body.Close()
	buf := make([]byte, 4)
	if _, err := io.ReadFull(r.resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	go func() {
		_, err := r.resp.Body.Read(buf)
		read <- err
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-read:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Read = %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Read did not return after the cancellation")
	}
	expectReset(f, h.StreamID, http2.ErrCodeCancel)
	noStreams(t, c)
}

// TestFramesAfterEndStream: once the response has ended, the stream is
// half-closed (remote) until the request body is done, and further frames
// on it are a stream error STREAM_CLOSED (RFC 9113 §5.1).
func TestFramesAfterEndStream(t *testing.T) {
	for _, tc := range []struct {
		name string
		send func(f *fake, id uint32)
	}{
		{"DATA", func(f *fake, id uint32) { f.data(id, true, []byte("x")) }},
		{"HEADERS", func(f *fake, id uint32) { f.headers(id, true, "x-t", "v") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, f := startFake(t, Config{})
			pr, pw := io.Pipe()
			defer pw.Close()
			req := getReq("/")
			req.Method, req.ContentLength, req.Body = "POST", -1, pr
			ch := goRoundTrip(context.Background(), c, req)
			h := f.readRequest()
			f.respond(h.StreamID, "done")
			r := await(t, ch)
			if r.err != nil {
				t.Fatal(r.err)
			}
			tc.send(f, h.StreamID)
			expectReset(f, h.StreamID, http2.ErrCodeStreamClosed)
			if got := readAll(t, r.resp); got != "done" {
				t.Errorf("body %q", got)
			}
			if c.Closed() {
				t.Errorf("a stream error closed the connection")
			}
		})
	}
}

func TestDataBeforeHeaders(t *testing.T) {
	c, f := startFake(t, Config{})
	ch := goRoundTrip(context.Background(), c, getReq("/"))
	h := f.readRequest()
	f.data(h.StreamID, true, []byte("x"))
	r := await(t, ch)
	streamErr(t, r.err, http2.ErrCodeProtocol)
	expectReset(f, h.StreamID, http2.ErrCodeProtocol)
}

// TestMalformedTrailers: trailers carry no pseudo-header fields and end
// the stream (RFC 9113 §8.1).
func TestMalformedTrailers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fields []string
		end    bool
	}{
		{"pseudo-header", []string{":status", "200", "x-t", "v"}, true},
		{"without END_STREAM", []string{"x-t", "v"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, f := startFake(t, Config{})
			ch := goRoundTrip(context.Background(), c, getReq("/"))
			h := f.readRequest()
			f.headers(h.StreamID, false, ":status", "200", "trailer", "x-t")
			f.data(h.StreamID, false, []byte("body"))
			f.headers(h.StreamID, tc.end, tc.fields...)
			r := await(t, ch)
			if r.err != nil {
				t.Fatal(r.err)
			}
			defer r.resp.Body.Close()
			b, err := io.ReadAll(r.resp.Body)
			if err == nil {
				t.Fatalf("read %q and trailer %v without error", b, r.resp.Trailer)
			}
			var se http2.StreamError
			var ce http2.ConnectionError
			if !errors.As(err, &se) && !errors.As(err, &ce) {
				t.Errorf("error %v, want a stream or connection error", err)
			}
		})
	}
}

// TestConnectionSpecificResponseFields: a response with a
// connection-specific field is malformed (RFC 9113 §8.2.2).
func TestConnectionSpecificResponseFields(t *testing.T) {
	for _, field := range [][2]string{
		{"connection", "close"},
		{"keep-alive", "timeout=5"},
		{"proxy-connection", "keep-alive"},
		{"transfer-encoding", "chunked"},
		{"upgrade", "websocket"},
		{"te", "trailers"},
	} {
		t.Run(field[0], func(t *testing.T) {
			c, f := startFake(t, Config{})
			ch := goRoundTrip(context.Background(), c, getReq("/"))
			h := f.readRequest()
			f.headers(h.StreamID, false, ":status", "200", field[0], field[1])
			f.data(h.StreamID, true, []byte("body"))
			r := await(t, ch)
			if r.err == nil {
				r.resp.Body.Close()
				t.Fatalf("response with %s: %s accepted", field[0], field[1])
			}
			streamErr(t, r.err, http2.ErrCodeProtocol)
		})
	}
}

// TestStreamIDExhaustion: the last client stream ID is 2^31-1; a
// connection that used it takes no more streams (RFC 9113 §5.1.1).
func TestStreamIDExhaustion(t *testing.T) {
	c, f := startFake(t, Config{})
	c.mu.Lock()
	c.nextID = maxStreamID - 2
	c.mu.Unlock()
	if !c.Reserve() || !c.Reserve() {
		t.Fatal("Reserve failed with two stream IDs left")
	}
	if c.Reserve() {
		t.Fatal("Reserve succeeded beyond the last stream ID")
	}
	var chs []<-chan rtResult
	for _, want := range []uint32{maxStreamID - 2, maxStreamID} {
		ch := make(chan rtResult, 1)
		go func() {
			resp, err := c.RoundTrip(context.Background(), getReq("/"))
			ch <- rtResult{resp, err}
		}()
		chs = append(chs, ch)
		h := f.readRequest()
		if h.StreamID != want {
			t.Fatalf("stream ID %d, want %d", h.StreamID, want)
		}
		f.respond(h.StreamID, "x")
	}
	for _, ch := range chs {
		r := await(t, ch)
		if r.err != nil {
			t.Fatal(r.err)
		}
		readAll(t, r.resp)
	}
	if c.Reserve() {
		t.Errorf("Reserve succeeded with stream IDs used up")
	}
}

// TestConnWindowNotHeldBack: data the caller has read is credited back
// to the connection's window once the peer is out of window, even while
// other streams hold unread data; else a stream that is read stalls
// behind streams that are not.
func TestConnWindowNotHeldBack(t *testing.T) {
	c, f := startFake(t, Config{})
	const mb = 1 << 20
	chunk := make([]byte, mb)
	connAvail := int64(connWindow)

	// 9 streams whose callers read nothing fill their 4 MiB windows.
	var idle []*http.Response
	for range 9 {
		ch := goRoundTrip(context.Background(), c, getReq("/idle"))
		h := f.readRequest()
		f.headers(h.StreamID, false, ":status", "200")
		r := await(t, ch)
		if r.err != nil {
			t.Fatal(r.err)
		}
		idle = append(idle, r.resp)
		for range streamWindow / mb {
			f.data(h.StreamID, false, chunk)
		}
		connAvail -= streamWindow
	}
	defer func() {
		for _, resp := range idle {
			resp.Body.Close()
		}
	}()

	// One stream whose caller reads everything.
	ctx, cancel := context.WithCancel(context.Background())
	ch := goRoundTrip(ctx, c, getReq("/active"))
	h := f.readRequest()
	f.headers(h.StreamID, false, ":status", "200")
	r := await(t, ch)
	if r.err != nil {
		t.Fatal(r.err)
	}
	var read atomic.Int64
	copied := make(chan struct{})
	go func() {
		io.Copy(io.Discard, readCounter{r.resp.Body, &read})
		close(copied)
	}()
	defer func() {
		cancel()
		<-copied
		r.resp.Body.Close()
	}()

	// The idle streams hold 36 MiB, which leaves this one 28 MiB of the
	// connection's window; go well past that.
	const target = 40 << 20
	streamAvail := int64(streamWindow)
	sent := int64(0)
	for sent < target {
		for streamAvail > 0 && connAvail > 0 && sent < target {
			n := min(mb, streamAvail, connAvail)
			f.data(h.StreamID, false, chunk[:n])
			streamAvail -= n
			connAvail -= n
			sent += n
		}
		if sent >= target {
			break
		}
		// Wait for window.
		fr, err := f.readFrame(time.Second)
		for err == nil {
			if wu, ok := fr.(*http2.WindowUpdateFrame); ok {
				if wu.StreamID == 0 {
					connAvail += int64(wu.Increment)
				} else if wu.StreamID == h.StreamID {
					streamAvail += int64(wu.Increment)
				}
				if streamAvail > 0 && connAvail > 0 {
					break
				}
			}
			fr, err = f.readFrame(time.Second)
		}
		if err != nil {
			t.Fatalf("after %d bytes sent and %d read on the active stream, no window: connection %d, stream %d",
				sent, read.Load(), connAvail, streamAvail)
		}
	}
}

type readCounter struct {
	r io.Reader
	n *atomic.Int64
}

func (rc readCounter) Read(p []byte) (int, error) {
	n, err := rc.r.Read(p)
	rc.n.Add(int64(n))
	return n, err
}

// TestInvalidTrailerFieldsNotSent: trailer fields filled in when the body
// ends are checked like the header's before they go out (RFC 9113 §8.2.1).
func TestInvalidTrailerFieldsNotSent(t *testing.T) {
	for _, tc := range []struct {
		name        string
		key, value  string
		announceKey bool
	}{
		{"value with LF", "X-Sum", "a\nb", true},
		{"value with NUL", "X-Sum", "a\x00b", true},
		{"name with space", "X Sum", "v", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, f := startFake(t, Config{})
			req := getReq("/")
			req.Method, req.ContentLength = "POST", 4
			req.Trailer = http.Header{}
			if tc.announceKey {
				req.Trailer[tc.key] = nil
			}
			req.Body = closeFunc{eofHook{strings.NewReader("body"), func() { req.Trailer[tc.key] = []string{tc.value} }}, func() {}}
			ch := goRoundTrip(context.Background(), c, req)
			f.readRequest()
		frames:
			for {
				fr, err := f.next()
				switch fr := fr.(type) {
				case *http2.DataFrame:
					if fr.StreamEnded() {
						t.Fatalf("body ended without the trailers")
					}
					continue
				case *http2.RSTStreamFrame:
					break frames
				case *http2.MetaHeadersFrame:
					t.Fatalf("trailers sent: %v", fr.Fields)
				}
				var se http2.StreamError
				if errors.As(err, &se) {
					t.Fatalf("the client sent trailers with an invalid field (%v); want RST_STREAM", err)
				}
				t.Fatalf("fake got %v, %v; want RST_STREAM", fr, err)
			}
			if r := await(t, ch); r.err == nil {
				r.resp.Body.Close()
				t.Errorf("RoundTrip succeeded")
			}
		})
	}
}

// eofHook calls hook when r reaches EOF.
type eofHook struct {
	r    io.Reader
	hook func()
}

func (e eofHook) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		e.hook()
	}
	return n, err
}

// TestPeerHeaderTableSize: with the peer's SETTINGS_HEADER_TABLE_SIZE at
// 0, the client's header blocks must decode without a dynamic table.
func TestPeerHeaderTableSize(t *testing.T) {
	c, f := startFake(t, Config{}, http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
	f.dec = hpack.NewDecoder(0, nil)
	f.fr.ReadMetaHeaders = f.dec
	for i := range 3 {
		req := getReq("/same")
		req.Header.Set("X-Repeated", "the same value each time")
		ch := goRoundTrip(context.Background(), c, req)
		h := f.readRequest()
		if got := h.PseudoValue("path"); got != "/same" {
			t.Fatalf("request %d: path %q", i, got)
		}
		respondOK(t, f, ch, h.StreamID)
	}
}

// TestPeerStopsReading: a peer that stops reading blocks the socket; a
// request sent meanwhile never waits on the socket itself (it waits for
// its answer, and gives up when its context ends), and the connection
// fails after WriteTimeout, failing the upload that filled the socket.
func TestPeerStopsReading(t *testing.T) {
	const writeTimeout = 500 * time.Millisecond
	c, f := startFake(t, Config{WriteTimeout: writeTimeout},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	f.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	// An upload the fake never reads fills the socket buffers.
	const size = 64 << 20
	upload := goRoundTrip(context.Background(), c, &Request{
		Method: http.MethodPost, Scheme: "http", Authority: "upstream.test", Path: "/",
		Header: http.Header{}, ContentLength: size, Body: io.NopCloser(bytes.NewReader(make([]byte, size))),
	})
	time.Sleep(100 * time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	// Had it waited on the socket, it would fail with the write timeout.
	r := await(t, goRoundTrip(ctx, c, getReq("/")))
	if !errors.Is(r.err, context.DeadlineExceeded) {
		t.Fatalf("request behind a stuck write side: %v, want its context's error", r.err)
	}

	// The upload waits for the socket rather than piling up in memory.
	c.lockWrite()
	held := len(c.wbuf)
	<-c.wlock
	if most := maxBuffered + 64<<10 + 9; held > most {
		t.Errorf("write side holds %d bytes for a socket that is not read; want at most %d", held, most)
	}

	if r := await(t, upload); !errors.Is(r.err, ErrConnClosed) {
		t.Fatalf("upload to a peer that stopped reading: %v, want ErrConnClosed", r.err)
	}
	if !eventually(time.Second, c.Closed) {
		t.Error("connection still open after a write timed out")
	}
}

// respondOK has f answer stream id with a 200 and "ok", and checks that
// the RoundTrip behind ch gets it whole.
func respondOK(t *testing.T, f *fake, ch <-chan rtResult, id uint32) {
	t.Helper()
	f.respond(id, "ok")
	r := await(t, ch)
	if r.err != nil {
		t.Fatal(r.err)
	}
	readAll(t, r.resp)
}

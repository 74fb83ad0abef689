package h2

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/net/http2"

	"spooky/internal/testkit"
)

func TestGET(t *testing.T) {
	addr := testkit.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Method", r.Method)
		w.Header().Set("X-Host", r.Host)
		w.Header().Set("X-Uri", r.URL.RequestURI())
		w.Header().Set("X-Custom", strings.Join(r.Header.Values("X-Custom"), ","))
		w.Header().Set("X-Mixed", r.Header.Get("X-Mixed"))
		w.Header().Set("X-Te", r.Header.Get("Te"))
		w.Header()["x-lower"] = []string{"lower"}
		io.WriteString(w, "hello")
	}), testkit.H2COptions{})
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
			addr := testkit.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
			}), testkit.H2COptions{})
			c := dialH2(t, addr, Config{})
			ctx, cancel := tc.ctx()
			defer cancel()
			ch := goRoundTrip(ctx, c, getReq("/"))
			select {
			case <-entered:
			case <-time.After(5 * time.Second):
				t.Fatal("handler not called")
			}
			cancel()
			r := await(t, ch)
			if !errors.Is(r.err, tc.want) {
				t.Fatalf("RoundTrip: %v, %v; want %v", r.resp, r.err, tc.want)
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
	addr := testkit.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	}), testkit.H2COptions{})
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

// TestCancelWhileReadingBody: a body's Read waiting for data returns the
// context's error when the request's context ends, and the stream is reset.
func TestCancelWhileReadingBody(t *testing.T) {
	bubble(t, func(t *testing.T) {
		c, f := startFakePipe(t, Config{})
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
		synctest.Wait() // Read waits for data
		select {
		case err := <-read:
			t.Fatalf("Read returned %v with no data and its context alive", err)
		default:
		}
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
	})
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

// BenchmarkRoundTrip measures a GET of 64 bytes over one connection to
// net/http's HTTP/2 server.
func BenchmarkRoundTrip(b *testing.B) {
	payload := make([]byte, 64)
	addr := testkit.StartH2C(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(payload) }), testkit.H2COptions{})
	c := dialH2(b, addr, Config{})
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			for !c.Reserve() {
				if !awaitSlot(c, 5*time.Second) {
					b.Error("no room for a stream")
					return
				}
			}
			resp, err := c.RoundTrip(context.Background(), getReq("/"))
			if err != nil {
				b.Error(err)
				return
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || n != 64 {
				b.Errorf("body: %d bytes, %v", n, err)
				return
			}
		}
	})
}

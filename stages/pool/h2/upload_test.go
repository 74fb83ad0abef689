package h2

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"spooky/internal/testkit"
)

func TestRequestBodies(t *testing.T) {
	addr := testkit.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(400)
			return
		}
		w.Header().Set("X-Content-Length", strconv.FormatInt(r.ContentLength, 10))
		w.Write(b)
	}), testkit.H2COptions{})
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
	addr := testkit.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(400)
			return
		}
		w.Header().Set("X-Got-Checksum", r.Trailer.Get("X-Checksum"))
		w.Header().Set("X-Got-Count", r.Trailer.Get("X-Count"))
		w.Write(b)
	}), testkit.H2COptions{})
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

// gatedBody returns first, then blocks until release is closed, then
// fills its request's trailer and returns (0, io.EOF). closed is closed
// by Close (the body sender closes its body when it returns).
type gatedBody struct {
	req     *Request
	first   []byte
	release chan struct{}
	closed  chan struct{}
	done    bool
}

func (b *gatedBody) Read(p []byte) (int, error) {
	if b.first != nil {
		n := copy(p, b.first)
		b.first = nil
		return n, nil
	}
	if b.done {
		return 0, io.EOF
	}
	select {
	case <-b.release:
	case <-b.closed:
		return 0, io.ErrClosedPipe
	}
	b.done = true
	b.req.Trailer.Set("X-Sum", "42")
	return 0, io.EOF
}

func (b *gatedBody) Close() error {
	select {
	case <-b.closed:
	default:
		close(b.closed)
	}
	return nil
}

// TestNoTrailersAfterPeerReset: net/http's server answers without reading
// the request body, ends the stream with RST_STREAM(NO_ERROR) and forgets
// it. When the client's body then ends with (0, io.EOF) and trailers,
// sendBody must not send the trailers: HEADERS on a stream the server
// has closed is a connection error PROTOCOL_ERROR for net/http
// ("stream_went_down"), which kills every stream on the connection.
func TestNoTrailersAfterPeerReset(t *testing.T) {
	addr := testkit.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Take the first part of the body, so that the client's body
		// sender is past it, then answer without reading the rest.
		io.ReadFull(r.Body, make([]byte, 4))
		io.WriteString(w, "early answer")
	}), testkit.H2COptions{})
	c := dialH2(t, addr, Config{})

	req := getReq("/")
	req.Method, req.ContentLength = "POST", -1
	req.Trailer = http.Header{"X-Sum": nil}
	body := &gatedBody{req: req, first: []byte("part"), release: make(chan struct{}), closed: make(chan struct{})}
	req.Body = body
	resp, err := do(t, c, context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	// Read the response without closing it: closing would close the
	// request body and stop the sender.
	defer resp.Body.Close()
	if got, err := io.ReadAll(resp.Body); err != nil || string(got) != "early answer" {
		t.Fatalf("body %q, %v", got, err)
	}
	// The server's RST_STREAM(NO_ERROR) removes the stream here. The
	// server forgets it once it has written that frame, and writes one
	// frame at a time: the ack of a PING sent after the RST_STREAM came
	// is written after it, so once Ping returns the server has forgotten
	// the stream too.
	noStreams(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}

	close(body.release)
	waitChan(t, body.closed, "the body sender to end")

	// The connection must still carry requests.
	resp2, err := do(t, c, context.Background(), getReq("/"))
	if err != nil {
		waitClosed(c, time.Second)
		c.mu.Lock()
		why := c.closeErr
		c.mu.Unlock()
		t.Fatalf("next request on the connection: %v (connection closed: %v)", err, why)
	}
	readAll(t, resp2)
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

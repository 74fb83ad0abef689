package h2

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"spooky/internal/testkit"
)

func TestResponseTrailers(t *testing.T) {
	addr := testkit.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "body bytes")
		w.Header().Set("X-Sum", "s1")
		w.Header().Set(http.TrailerPrefix+"X-Late", "l1")
	}), testkit.H2COptions{})
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
	addr := testkit.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/head":
			w.Header().Set("Content-Length", "1234")
		case "/204":
			w.WriteHeader(204)
		}
	}), testkit.H2COptions{})
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

func TestRefusedStream(t *testing.T) {
	c, f := startFake(t, Config{})
	ch := goRoundTrip(context.Background(), c, getReq("/"))
	h := f.readRequest()
	f.fr.WriteRSTStream(h.StreamID, http2.ErrCodeRefusedStream)
	r := await(t, ch)
	streamErr(t, r.err, http2.ErrCodeRefusedStream)
	noStreams(t, c)
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

func TestDataBeforeHeaders(t *testing.T) {
	c, f := startFake(t, Config{})
	ch := goRoundTrip(context.Background(), c, getReq("/"))
	h := f.readRequest()
	f.data(h.StreamID, true, []byte("x"))
	r := await(t, ch)
	streamErr(t, r.err, http2.ErrCodeProtocol)
	expectReset(f, h.StreamID, http2.ErrCodeProtocol)
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
			if !waitClosed(c, time.Second) {
				t.Errorf("connection not closed")
			}
		})
	}
}

// FuzzResponseHead answers a request with a fuzzed status and header
// field: the client must neither panic nor hang, and a response it takes
// must have a well-formed status.
func FuzzResponseHead(f *testing.F) {
	f.Add("200", "content-type", "text/plain", []byte("hello"))
	f.Add("204", "content-length", "0", []byte(nil))
	f.Add("200", "content-length", "3", []byte("abcdef"))
	f.Add("404", "x-empty", "", []byte("x"))
	f.Add("abc", "x-a", "b", []byte(nil))
	f.Add("2000", "x-a", "b", []byte(nil))
	f.Add("200", "X-Upper", "v", []byte(nil))
	f.Add("200", ":path", "/", []byte(nil))
	f.Add("200", "x-a", "line\nbreak", []byte(nil))
	f.Add("103", "link", "</a>", []byte("x"))
	f.Add("200", "trailer", "x-t", []byte("body"))
	f.Fuzz(func(t *testing.T, status, name, value string, body []byte) {
		bubble(t, func(t *testing.T) {
			c, fk := startFakePipe(t, Config{})
			fk.lenient = true
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			ch := goRoundTrip(ctx, c, getReq("/"))
			h := fk.readRequest()
			fk.fr.WriteHeaders(http2.HeadersFrameParam{
				StreamID:      h.StreamID,
				BlockFragment: fk.block(":status", status, name, value),
				EndStream:     len(body) == 0,
				EndHeaders:    true,
			})
			if len(body) > 0 {
				fk.fr.WriteData(h.StreamID, true, body)
			}
			r := awaitBounded(t, ch)
			if r.err != nil {
				if r.resp != nil {
					t.Fatalf("both a response and an error %v", r.err)
				}
				return
			}
			if r.resp == nil {
				t.Fatal("neither a response nor an error")
			}
			if strconv.Itoa(r.resp.StatusCode) != status || r.resp.StatusCode < 200 {
				t.Errorf("status %q taken as %d", status, r.resp.StatusCode)
			}
			drainBounded(t, r.resp)
		})
	})
}

// FuzzServerFrames answers a request with a sequence of server frames,
// seeded with well-formed ones (a response, its trailers, window updates,
// resets, GOAWAY, pings, settings, a header block split over
// CONTINUATION). Whatever comes, the client must not panic, RoundTrip and
// the body's reads must end, and Close must end the connection.
func FuzzServerFrames(f *testing.F) {
	for _, raw := range serverFrameSeeds() {
		f.Add(false, raw)
		f.Add(true, raw)
	}
	f.Fuzz(func(t *testing.T, post bool, raw []byte) {
		bubble(t, func(t *testing.T) { answerWith(t, post, raw) })
	})
}

// TestMangledServerFrames runs FuzzServerFrames's body on copies of its
// seeds mangled at a few random bytes, from a fixed seed so that a failure
// repeats: a sample of what fuzzing tries, for every go test run.
func TestMangledServerFrames(t *testing.T) {
	seeds := serverFrameSeeds()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 60 {
		raw := bytes.Clone(seeds[i%len(seeds)])
		for range 1 + rng.IntN(4) {
			raw[rng.IntN(len(raw))] = byte(rng.IntN(256))
		}
		n := len(seeds) + i
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			bubble(t, func(t *testing.T) { answerWith(t, n%2 == 1, raw) })
		})
	}
}

// serverFrameSeeds returns well-formed sequences of frames a server may
// answer a request on stream 1 with.
func serverFrameSeeds() [][]byte {
	seed := func(write func(fr *http2.Framer, block func(kv ...string) []byte)) []byte {
		var out, hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		fr := http2.NewFramer(&out, nil)
		fr.AllowIllegalWrites = true
		write(fr, func(kv ...string) []byte {
			hb.Reset()
			for i := 0; i+1 < len(kv); i += 2 {
				enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
			}
			return append([]byte(nil), hb.Bytes()...)
		})
		return out.Bytes()
	}
	return [][]byte{
		seed(func(fr *http2.Framer, block func(...string) []byte) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(":status", "200", "content-length", "2"), EndHeaders: true})
			fr.WriteData(1, true, []byte("hi"))
		}),
		seed(func(fr *http2.Framer, block func(...string) []byte) {
			fr.WriteWindowUpdate(0, 1000)
			fr.WriteWindowUpdate(1, 1000)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(":status", "200"), EndHeaders: true})
			fr.WriteDataPadded(1, false, []byte("body"), []byte{0, 0, 0})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block("grpc-status", "0"), EndStream: true, EndHeaders: true})
		}),
		seed(func(fr *http2.Framer, block func(...string) []byte) {
			fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1}, http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
			fr.WritePing(false, [8]byte{1})
			fr.WriteRSTStream(1, http2.ErrCodeNo)
		}),
		seed(func(fr *http2.Framer, block func(...string) []byte) {
			b := block(":status", "103", "link", "</a>")
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:2], EndHeaders: false})
			fr.WriteContinuation(1, true, b[2:])
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(":status", "204"), EndStream: true, EndHeaders: true})
			fr.WriteGoAway(1, http2.ErrCodeNo, []byte("bye"))
		}),
		seed(func(fr *http2.Framer, block func(...string) []byte) {
			fr.WriteGoAway(0, http2.ErrCodeEnhanceYourCalm, nil)
		}),
	}
}

// answerWith sends a request, a POST with a body when post is set, and
// writes raw where the server's frames go.
func answerWith(t *testing.T, post bool, raw []byte) {
	c, fk := startFakePipe(t, Config{})
	fk.lenient = true
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req := getReq("/")
	if post {
		req.Method, req.ContentLength = http.MethodPost, 3<<10
		req.Body = io.NopCloser(bytes.NewReader(make([]byte, 3<<10)))
	}
	ch := goRoundTrip(ctx, c, req)
	fk.readRequest()
	// Whatever the client writes from here on (its body, acks, resets)
	// is read and dropped, so that frames to answer cannot stall the
	// exchange on a full socket.
	go io.Copy(io.Discard, fk.nc)
	fk.nc.Write(raw)
	if r := awaitBounded(t, ch); r.err == nil {
		drainBounded(t, r.resp)
	}
}

// awaitBounded waits for a RoundTrip's result, failing the test if it
// hangs.
func awaitBounded(t *testing.T, ch <-chan rtResult) rtResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("RoundTrip hangs")
		return rtResult{}
	}
}

// drainBounded reads resp's body to its end, whatever that is, and closes
// it, failing the test if reading hangs.
func drainBounded(t *testing.T, resp *http.Response) {
	t.Helper()
	read := make(chan struct{})
	go func() {
		io.Copy(io.Discard, resp.Body)
		close(read)
	}()
	select {
	case <-read:
	case <-time.After(5 * time.Second):
		t.Fatal("reading the body hangs")
	}
	resp.Body.Close()
}

// TestTooManyInterimResponses: up to maxInterimResponses interim
// responses are skipped; one more fails the request with a stream error
// PROTOCOL_ERROR, and the connection goes on.
func TestTooManyInterimResponses(t *testing.T) {
	for _, n := range []int{maxInterimResponses, maxInterimResponses + 1} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			c, f := startFake(t, Config{})
			ch := goRoundTrip(context.Background(), c, getReq("/"))
			h := f.readRequest()
			for range n {
				f.headers(h.StreamID, false, ":status", "103", "link", "</a.css>; rel=preload")
			}
			if n <= maxInterimResponses {
				respondOK(t, f, ch, h.StreamID)
				return
			}
			r := await(t, ch)
			streamErr(t, r.err, http2.ErrCodeProtocol)
			if !strings.Contains(fmt.Sprint(r.err), "interim") {
				t.Errorf("error %v does not say why", r.err)
			}
			expectReset(f, h.StreamID, http2.ErrCodeProtocol)
			respondOK(t, f, goRoundTrip(context.Background(), c, getReq("/next")), f.readRequest().StreamID)
		})
	}
}

// TestFramesOnClosedStreams: once the peer has ended a stream (END_STREAM
// or RST_STREAM), DATA or HEADERS on it is a connection error
// STREAM_CLOSED (RFC 9113 §5.1); WINDOW_UPDATE and RST_STREAM may still
// be in flight, and anything on a stream this side reset may be, so they
// are dropped, without a RST_STREAM for a closed stream.
func TestFramesOnClosedStreams(t *testing.T) {
	ended := func(f *fake, id uint32) { f.respond(id, "") }
	reset := func(f *fake, id uint32) { f.fr.WriteRSTStream(id, http2.ErrCodeInternal) }
	for _, tc := range []struct {
		name  string
		end   func(f *fake, id uint32) // ends the stream; nil: the client cancels it
		send  func(f *fake, id uint32)
		fatal bool
	}{
		{"DATA after END_STREAM", ended, func(f *fake, id uint32) { f.data(id, true, []byte("x")) }, true},
		{"HEADERS after END_STREAM", ended, func(f *fake, id uint32) { f.headers(id, true, "x-t", "v") }, true},
		{"DATA after RST_STREAM", reset, func(f *fake, id uint32) { f.data(id, true, []byte("x")) }, true},
		{"HEADERS after RST_STREAM", reset, func(f *fake, id uint32) { f.headers(id, true, ":status", "200") }, true},
		{"WINDOW_UPDATE after END_STREAM", ended, func(f *fake, id uint32) { f.fr.WriteWindowUpdate(id, 100) }, false},
		{"RST_STREAM after END_STREAM", ended, func(f *fake, id uint32) { f.fr.WriteRSTStream(id, http2.ErrCodeNo) }, false},
		{"DATA after this side's reset", nil, func(f *fake, id uint32) { f.data(id, true, []byte("x")) }, false},
		{"malformed HEADERS after this side's reset", nil, func(f *fake, id uint32) { f.headers(id, true, ":status", "200", "X-Upper", "v") }, false},
		{"zero WINDOW_UPDATE after this side's reset", nil, func(f *fake, id uint32) {
			f.fr.WriteRawFrame(http2.FrameWindowUpdate, 0, id, []byte{0, 0, 0, 0})
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, f := startFake(t, Config{})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ch := goRoundTrip(ctx, c, getReq("/"))
			h := f.readRequest()
			if tc.end == nil {
				cancel()
				expectReset(f, h.StreamID, http2.ErrCodeCancel)
			} else {
				tc.end(f, h.StreamID)
			}
			if r := await(t, ch); r.err == nil {
				readAll(t, r.resp)
			}
			noStreams(t, c)
			tc.send(f, h.StreamID)
			if tc.fatal {
				ga := f.expectClosed()
				if ga == nil || ga.ErrCode != http2.ErrCodeStreamClosed {
					t.Errorf("client's GOAWAY %+v, want STREAM_CLOSED", ga)
				}
				return
			}
			// Dropped: the next frame the client sends answers the
			// fake's PING.
			f.fr.WritePing(false, [8]byte{7})
			if p := expect[*http2.PingFrame](f); !p.IsAck() {
				t.Errorf("got a PING, want the ack")
			}
			if c.Closed() {
				t.Errorf("connection closed")
			}
		})
	}
}

// TestHeadersPaddingTooLong: a HEADERS frame whose padding is longer than
// the frame is a connection error (RFC 9113 §6.2); its block was never
// decoded, so HPACK state is lost.
func TestHeadersPaddingTooLong(t *testing.T) {
	c, f := startFake(t, Config{})
	ch := goRoundTrip(context.Background(), c, getReq("/"))
	h := f.readRequest()
	block := f.block(":status", "200")
	payload := append([]byte{byte(len(block) + 1)}, block...)
	f.fr.WriteRawFrame(http2.FrameHeaders, http2.FlagHeadersEndHeaders|http2.FlagHeadersPadded, h.StreamID, payload)
	ga := f.expectClosed()
	if ga == nil || ga.ErrCode != http2.ErrCodeProtocol {
		t.Errorf("client's GOAWAY %+v, want PROTOCOL_ERROR", ga)
	}
	if r := await(t, ch); r.err == nil {
		t.Errorf("request succeeded")
	}
	if !waitClosed(c, time.Second) {
		t.Errorf("connection not closed")
	}
}

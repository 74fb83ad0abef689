package h2

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"spooky/internal/testkit"
)

// TestFullDuplexEcho streams 8 MiB, more than the 4 MiB stream window,
// through a handler that echoes as it reads.
func TestFullDuplexEcho(t *testing.T) {
	addr := testkit.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	}), testkit.H2COptions{})
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

	// Free running, with the reader late: it starts once the response has
	// filled the client's stream window, the handler then stops reading,
	// and the request goes on to fill the server's; both must recover.
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
		awaitRecvWindowFull(t, resp)
		if err := sameBytes(resp.Body, pattern(2, size)); err != nil {
			t.Fatal(err)
		}
	})
	noStreams(t, c)
}

// awaitRecvWindowFull waits, without reading, until the peer has used up
// the receive window of the stream behind resp. Each DATA frame wakes the
// stream's reader, which this goroutine is until it reads.
func awaitRecvWindowFull(t *testing.T, resp *http.Response) {
	t.Helper()
	s := resp.Body.(*body).s
	timeout := time.After(10 * time.Second)
	for {
		s.c.mu.Lock()
		full, done := s.recvAvail <= 0, s.recvDone
		s.c.mu.Unlock()
		if full {
			return
		}
		if done {
			t.Fatal("the response ended before it filled the stream's window")
		}
		select {
		case <-s.wake:
		case <-timeout:
			t.Fatal("the response did not fill the stream's window")
		}
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
	chunk := make([]byte, 16<<10)
	for range streamWindow / len(chunk) {
		f.data(h.StreamID, false, chunk) // the whole window, unread
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
// window of a stream already open by the difference (RFC 9113 §6.9.2). In
// a bubble, the wait for a frame sent with a window of 0 ends only once
// the client has nothing left to do.
func TestInitialWindowSizeChange(t *testing.T) {
	bubble(t, func(t *testing.T) {
		c, f := startFakePipe(t, Config{}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		req := getReq("/")
		req.Method, req.ContentLength = "POST", 50
		req.Body = io.NopCloser(strings.NewReader(strings.Repeat("x", 50)))
		ch := goRoundTrip(context.Background(), c, req)
		h := f.readRequest()
		for {
			fr, err := f.readFrame(100 * time.Millisecond)
			if err != nil {
				break
			}
			if !noise(fr) {
				t.Fatalf("sent %s with a window of 0", describe(fr))
			}
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
	})
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

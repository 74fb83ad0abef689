package h2

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// fakeTimeout bounds every wait of the fake on the client.
const fakeTimeout = 2 * time.Second

// fake is the server side of a connection to a Conn, driven frame by frame
// from the test goroutine.
type fake struct {
	t    testing.TB
	nc   net.Conn
	fr   *http2.Framer
	dec  *hpack.Decoder
	enc  *hpack.Encoder
	ebuf bytes.Buffer

	// lenient makes write errors non-fatal (the client may have closed).
	lenient bool

	// A reader goroutine reads one frame per request on readReq, so that
	// a wait for a frame can time out without a socket deadline, which
	// could cut a frame in two.
	readReq chan struct{}
	frames  chan frameResult
	pending bool  // a frame was asked for and not yet taken
	readErr error // the reader's error, once it has failed
	// clientSettings are the settings of the client's first SETTINGS frame.
	clientSettings map[http2.SettingID]uint32
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		client.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}

// memPair returns the two ends of an in-memory connection that, like a
// socket, takes writes its peer has not read yet, up to a limit (see
// pump), and that works inside a synctest bubble, unlike loopback TCP.
func memPair(t testing.TB) (client, server net.Conn) {
	client, cPeer := net.Pipe()
	server, sPeer := net.Pipe()
	go func() { // client to server
		if !pump(sPeer, cPeer) {
			cPeer.Close() // the server closed: the client's writes fail
		}
		sPeer.Close()
	}()
	go func() { // server to client
		if pump(cPeer, sPeer) {
			cPeer.Close() // the server closed: the client reads to EOF
		}
		// Else the client closed: what the server writes is dropped
		// until the other pump closes the server's end.
	}()
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}

// pump copies src to dst through a queue of up to 64 reads of up to 16
// KiB each, so that whoever writes to src need not wait for dst's reader.
// It returns at the end of src, reporting whether everything went to dst:
// once a write to dst fails, the rest of src is dropped.
func pump(dst, src net.Conn) bool {
	chunks := make(chan []byte, 64)
	go func() {
		defer close(chunks)
		buf := make([]byte, 16<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				chunks <- bytes.Clone(buf[:n])
			}
			if err != nil {
				return
			}
		}
	}()
	ok := true
	for p := range chunks {
		if ok {
			_, err := dst.Write(p)
			ok = err == nil
		}
	}
	return ok
}

func newFake(t testing.TB, nc net.Conn) *fake {
	f := &fake{t: t, nc: nc, clientSettings: make(map[http2.SettingID]uint32)}
	f.fr = http2.NewFramer(nc, nc)
	f.fr.AllowIllegalWrites = true
	f.dec = hpack.NewDecoder(4096, nil)
	f.fr.ReadMetaHeaders = f.dec
	f.enc = hpack.NewEncoder(&f.ebuf)
	return f
}

// readPreface reads the client preface and the client's SETTINGS.
func (f *fake) readPreface() error {
	f.nc.SetReadDeadline(time.Now().Add(fakeTimeout))
	defer f.nc.SetReadDeadline(time.Time{})
	buf := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(f.nc, buf); err != nil {
		return err
	}
	if string(buf) != http2.ClientPreface {
		return errors.New("bad client preface")
	}
	fr, err := f.fr.ReadFrame()
	if err != nil {
		return err
	}
	sf, ok := fr.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		return errors.New("client did not start with SETTINGS")
	}
	return sf.ForeachSetting(func(s http2.Setting) error {
		f.clientSettings[s.ID] = s.Val
		return nil
	})
}

// handshake plays the server's part of the connection preface.
func (f *fake) handshake(settings ...http2.Setting) error {
	if err := f.readPreface(); err != nil {
		return err
	}
	if err := f.fr.WriteSettings(settings...); err != nil {
		return err
	}
	return f.fr.WriteSettingsAck()
}

// startFake connects a Conn to a fake that advertises settings, over
// loopback TCP.
func startFake(t testing.TB, cfg Config, settings ...http2.Setting) (*Conn, *fake) {
	t.Helper()
	cnc, snc := tcpPair(t)
	return startFakeOn(t, cnc, snc, cfg, settings...)
}

// startFakePipe is startFake over memPair, for tests in a synctest bubble.
func startFakePipe(t testing.TB, cfg Config, settings ...http2.Setting) (*Conn, *fake) {
	t.Helper()
	cnc, snc := memPair(t)
	return startFakeOn(t, cnc, snc, cfg, settings...)
}

// startFakeOn connects a Conn on cnc to a fake on snc.
func startFakeOn(t testing.TB, cnc, snc net.Conn, cfg Config, settings ...http2.Setting) (*Conn, *fake) {
	t.Helper()
	f := newFake(t, snc)
	errc := make(chan error, 1)
	go func() { errc <- f.handshake(settings...) }()
	ctx, cancel := context.WithTimeout(context.Background(), fakeTimeout)
	defer cancel()
	c, err := Handshake(ctx, cnc, cfg)
	if ferr := <-errc; ferr != nil {
		t.Fatalf("fake handshake: %v", ferr)
	}
	if err != nil {
		t.Fatalf("Handshake: %v", err)
	}
	t.Cleanup(func() { closeConn(t, c) })
	return c, f
}

type frameResult struct {
	fr  http2.Frame
	err error
}

// readFrame returns the next frame, valid until the next call, or an
// error that is a timeout after timeout.
func (f *fake) readFrame(timeout time.Duration) (http2.Frame, error) {
	if f.readErr != nil {
		return nil, f.readErr
	}
	if f.readReq == nil {
		f.readReq = make(chan struct{})
		f.frames = make(chan frameResult, 1)
		go func() {
			for range f.readReq {
				fr, err := f.fr.ReadFrame()
				f.frames <- frameResult{fr, err}
				if err != nil {
					return
				}
			}
		}()
		f.t.Cleanup(func() { close(f.readReq) })
	}
	if !f.pending {
		f.readReq <- struct{}{}
		f.pending = true
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case r := <-f.frames:
		f.pending = false
		f.readErr = r.err
		return r.fr, r.err
	case <-timer.C:
		return nil, os.ErrDeadlineExceeded
	}
}

// noise reports frames a test rarely cares about: acks of the fake's
// settings and window updates.
func noise(fr http2.Frame) bool {
	switch fr := fr.(type) {
	case *http2.SettingsFrame:
		return fr.IsAck()
	case *http2.WindowUpdateFrame:
		return true
	}
	return false
}

// next returns the next frame that is not noise.
func (f *fake) next() (http2.Frame, error) {
	deadline := time.Now().Add(fakeTimeout)
	for {
		fr, err := f.readFrame(time.Until(deadline))
		if err != nil || !noise(fr) {
			return fr, err
		}
	}
}

// expect returns the next frame that is not noise, which must be a T.
func expect[T http2.Frame](f *fake) T {
	f.t.Helper()
	fr, err := f.next()
	if err != nil {
		f.t.Fatalf("fake: waiting for %T: %v", *new(T), err)
	}
	t, ok := fr.(T)
	if !ok {
		f.t.Fatalf("fake: got %v, want %T", describe(fr), *new(T))
	}
	return t
}

func describe(fr http2.Frame) string {
	switch fr := fr.(type) {
	case *http2.RSTStreamFrame:
		return "RST_STREAM " + fr.ErrCode.String() + " on stream " + itoa(fr.StreamID)
	case *http2.GoAwayFrame:
		return "GOAWAY " + fr.ErrCode.String() + " last " + itoa(fr.LastStreamID) + " " + string(fr.DebugData())
	case *http2.DataFrame:
		return "DATA on stream " + itoa(fr.StreamID) + " len " + itoa(fr.Length)
	}
	return fr.Header().String()
}

func itoa[T ~uint32 | ~int](n T) string {
	return strconv.FormatInt(int64(n), 10)
}

// readRequest returns the next request HEADERS.
func (f *fake) readRequest() *http2.MetaHeadersFrame {
	f.t.Helper()
	return expect[*http2.MetaHeadersFrame](f)
}

// block HPACK-encodes name/value pairs.
func (f *fake) block(kv ...string) []byte {
	f.ebuf.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		f.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return bytes.Clone(f.ebuf.Bytes())
}

func (f *fake) check(err error) {
	if err != nil && !f.lenient {
		f.t.Helper()
		f.t.Fatalf("fake write: %v", err)
	}
}

// headers writes one HEADERS frame with the pairs kv.
func (f *fake) headers(id uint32, end bool, kv ...string) {
	f.t.Helper()
	f.check(f.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: f.block(kv...), EndStream: end, EndHeaders: true}))
}

// headerBlock writes block as HEADERS and CONTINUATION frames cut at the
// given sizes.
func (f *fake) headerBlock(id uint32, end bool, block []byte, cuts ...int) {
	f.t.Helper()
	var parts [][]byte
	for _, n := range cuts {
		n = min(n, len(block))
		parts = append(parts, block[:n])
		block = block[n:]
	}
	parts = append(parts, block)
	for i, p := range parts {
		last := i == len(parts)-1
		if i == 0 {
			f.check(f.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: p, EndStream: end, EndHeaders: last}))
		} else {
			f.check(f.fr.WriteContinuation(id, last, p))
		}
	}
}

func (f *fake) data(id uint32, end bool, p []byte) {
	f.t.Helper()
	f.check(f.fr.WriteData(id, end, p))
}

// respond sends a 200 with body on stream id.
func (f *fake) respond(id uint32, body string) {
	f.t.Helper()
	f.headers(id, body == "", ":status", "200", "content-length", itoa(len(body)))
	if body != "" {
		f.data(id, true, []byte(body))
	}
}

// expectClosed reads until the client closes the connection and returns
// the GOAWAY it sent first, if any.
func (f *fake) expectClosed() *http2.GoAwayFrame {
	f.t.Helper()
	var ga *http2.GoAwayFrame
	deadline := time.Now().Add(time.Second)
	for {
		fr, err := f.readFrame(time.Until(deadline))
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				f.t.Fatalf("fake: the client did not close the connection")
			}
			return ga
		}
		if g, ok := fr.(*http2.GoAwayFrame); ok && ga == nil {
			ga = &http2.GoAwayFrame{FrameHeader: g.FrameHeader, LastStreamID: g.LastStreamID, ErrCode: g.ErrCode}
		}
	}
}

// expectSettingsAck reads until the client acknowledges a SETTINGS frame,
// which it does once it has applied the settings.
func (f *fake) expectSettingsAck() {
	f.t.Helper()
	deadline := time.Now().Add(fakeTimeout)
	for {
		fr, err := f.readFrame(time.Until(deadline))
		if err != nil {
			f.t.Fatalf("fake: waiting for a SETTINGS ack: %v", err)
		}
		if s, ok := fr.(*http2.SettingsFrame); ok && s.IsAck() {
			return
		}
	}
}

// pingResponder answers the client's PINGs until stop is called, and
// counts them.
func (f *fake) pingResponder() (count func() int, stop func()) {
	var n atomic.Int32
	done := make(chan struct{})
	var quit atomic.Bool
	go func() {
		defer close(done)
		for !quit.Load() {
			fr, err := f.readFrame(50 * time.Millisecond)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				return
			}
			if p, ok := fr.(*http2.PingFrame); ok && !p.IsAck() {
				n.Add(1)
				if f.fr.WritePing(true, p.Data) != nil {
					return
				}
			}
		}
	}()
	stop = func() {
		quit.Store(true)
		<-done
	}
	f.t.Cleanup(stop)
	return func() int { return int(n.Load()) }, stop
}

// hookConn lets a test fail the client's writes.
type hookConn struct {
	net.Conn
	mu   sync.Mutex
	fail error // non-nil: writes fail with it
}

func (h *hookConn) Write(p []byte) (int, error) {
	h.mu.Lock()
	fail := h.fail
	h.mu.Unlock()
	if fail != nil {
		return 0, fail
	}
	return h.Conn.Write(p)
}

func (h *hookConn) failWrites(err error) {
	h.mu.Lock()
	h.fail = err
	h.mu.Unlock()
}

// expectReset reads the next frame, which must be RST_STREAM with code on
// stream id.
func expectReset(f *fake, id uint32, code http2.ErrCode) {
	f.t.Helper()
	rst := expect[*http2.RSTStreamFrame](f)
	if rst.StreamID != id || rst.ErrCode != code {
		f.t.Errorf("fake got %s, want RST_STREAM %v on stream %d", describe(rst), code, id)
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

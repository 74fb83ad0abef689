package h2

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

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
	addr := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Take the first part of the body, so that the client's body
		// sender is past it, then answer without reading the rest.
		io.ReadFull(r.Body, make([]byte, 4))
		io.WriteString(w, "early answer")
	}), 0)
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
	// The server's RST_STREAM(NO_ERROR) has removed the stream; give
	// the server's serve loop a moment to forget it too, as it does once
	// the RST_STREAM is written.
	noStreams(t, c)
	time.Sleep(20 * time.Millisecond)

	close(body.release)
	waitChan(t, body.closed, "the body sender to end")

	// The connection must still carry requests.
	resp2, err := do(t, c, context.Background(), getReq("/"))
	if err != nil {
		eventually(time.Second, c.Closed)
		c.mu.Lock()
		why := c.closeErr
		c.mu.Unlock()
		t.Fatalf("next request on the connection: %v (connection closed: %v)", err, why)
	}
	readAll(t, resp2)
}

// TestTableSizeUpdateAfterSettingsAck: when the peer lowers
// SETTINGS_HEADER_TABLE_SIZE mid-connection, the encoder's dynamic table
// size update must start the first header block that follows the SETTINGS
// ACK (RFC 7541 §4.2: "In HTTP/2, this follows a settings
// acknowledgment"). nghttp2 (nghttpd, Envoy) arms its decoder on the ACK
// and fails the connection with COMPRESSION_ERROR when the next block
// lacks the update. applySettings changes the encoder and releases the
// write side before the ACK is queued, so a request waiting for the write
// side (which is busy, here held by the test) sends its block, carrying
// the update, ahead of the ACK.
func TestTableSizeUpdateAfterSettingsAck(t *testing.T) {
	c, f := startFake(t, Config{})
	// Take the ACK of the fake's first SETTINGS, sent by Handshake.
	for {
		fr, err := f.readFrame(fakeTimeout)
		if err != nil {
			t.Fatalf("fake: %v", err)
		}
		if sf, ok := fr.(*http2.SettingsFrame); ok && sf.IsAck() {
			break
		}
	}
	// Raw header blocks, to see the encoder's instructions.
	f.fr.ReadMetaHeaders = nil
	c.lockWrite() // the write side is busy, as under load
	f.fr.WriteSettings(
		http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: 1 << 16},
	)
	// MAX_HEADER_LIST_SIZE shows the settings were taken; the read loop
	// then waits for the write side to change the encoder.
	if !eventually(time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.peerMaxHeader == 1<<16
	}) {
		<-c.wlock
		t.Fatal("settings not applied")
	}
	time.Sleep(20 * time.Millisecond)
	ch := goRoundTrip(context.Background(), c, getReq("/"))
	time.Sleep(20 * time.Millisecond) // the request waits for the write side too
	<-c.wlock

	ackSeen := false
	for {
		fr, err := f.readFrame(fakeTimeout)
		if err != nil {
			t.Fatalf("fake: %v", err)
		}
		switch fr := fr.(type) {
		case *http2.SettingsFrame:
			ackSeen = ackSeen || fr.IsAck()
		case *http2.HeadersFrame:
			// A dynamic table size update is the 001xxxxx prefix.
			frag := fr.HeaderBlockFragment()
			if len(frag) > 0 && frag[0]&0xe0 == 0x20 && !ackSeen {
				t.Errorf("request HEADERS carrying the table size update sent before the SETTINGS ACK")
			}
			f.respond(fr.StreamID, "")
			if r := await(t, ch); r.err == nil {
				r.resp.Body.Close()
			}
			return
		}
	}
}

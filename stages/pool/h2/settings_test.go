package h2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

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

func TestMaxConcurrentStreamsSetting(t *testing.T) {
	c, f := startFake(t, Config{}, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
	ch := goRoundTrip(context.Background(), c, getReq("/"))
	h := f.readRequest()
	if c.Reserve() {
		t.Fatal("Reserve beyond SETTINGS_MAX_CONCURRENT_STREAMS 1")
	}
	f.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 2})
	f.expectSettingsAck()
	if !c.Reserve() {
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

// TestTableSizeUpdateAfterSettingsAck: when the peer lowers
// SETTINGS_HEADER_TABLE_SIZE mid-connection, the encoder's dynamic table
// size update must start the first header block that follows the SETTINGS
// ACK (RFC 7541 §4.2: "In HTTP/2, this follows a settings
// acknowledgment"). nghttp2 (nghttpd, Envoy) arms its decoder on the ACK
// and fails the connection with COMPRESSION_ERROR when the next block
// lacks the update. The test holds the write side, as a busy connection
// would, until the read loop (which has taken the settings) and then a
// request both wait for it, and gets out of their way in that order: were
// the encoder changed in one hold of the write side and the ACK queued in
// a later one, the request's block, carrying the update, would go out
// ahead of the ACK.
func TestTableSizeUpdateAfterSettingsAck(t *testing.T) {
	bubble(t, func(t *testing.T) {
		c, f := startFakePipe(t, Config{})
		f.expectSettingsAck() // of the fake's first SETTINGS, sent by Handshake
		// Raw header blocks, to see the encoder's instructions.
		f.fr.ReadMetaHeaders = nil
		c.lockWrite() // the write side is busy, as under load
		f.fr.WriteSettings(
			http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0},
			http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: 1 << 16},
		)
		synctest.Wait() // the read loop waits for the write side
		c.mu.Lock()
		applied := c.peerMaxHeader == 1<<16
		c.mu.Unlock()
		if !applied {
			<-c.wlock
			t.Fatal("settings not applied")
		}
		ch := goRoundTrip(context.Background(), c, getReq("/"))
		synctest.Wait() // the request waits for the write side too, behind the read loop
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
	})
}

// TestMaxReadFrameSize: the client advertises Config.MaxReadFrameSize,
// 1 MiB by default, and a larger frame is a connection error
// FRAME_SIZE_ERROR (RFC 9113 §4.2).
func TestMaxReadFrameSize(t *testing.T) {
	for _, tc := range []struct {
		cfg, want uint32
	}{{0, 1 << 20}, {16 << 10, 16 << 10}, {1, 16 << 10}, {1 << 30, 1<<24 - 1}} {
		t.Run(fmt.Sprint(tc.cfg), func(t *testing.T) {
			c, f := startFake(t, Config{MaxReadFrameSize: tc.cfg})
			if got := f.clientSettings[http2.SettingMaxFrameSize]; got != tc.want {
				t.Errorf("SETTINGS_MAX_FRAME_SIZE %d, want %d", got, tc.want)
			}
			if tc.want >= 1<<20 {
				return
			}
			ch := goRoundTrip(context.Background(), c, getReq("/"))
			h := f.readRequest()
			f.headers(h.StreamID, false, ":status", "200")
			f.data(h.StreamID, true, make([]byte, tc.want+1))
			if ga := f.expectClosed(); ga == nil || ga.ErrCode != http2.ErrCodeFrameSize {
				t.Errorf("client's GOAWAY %+v, want FRAME_SIZE_ERROR", ga)
			}
			r := await(t, ch)
			if r.err == nil {
				_, err := io.ReadAll(r.resp.Body)
				r.resp.Body.Close()
				r.err = err
			}
			var ce http2.ConnectionError
			if !errors.As(r.err, &ce) || http2.ErrCode(ce) != http2.ErrCodeFrameSize {
				t.Errorf("request: %v, want a connection error FRAME_SIZE_ERROR", r.err)
			}
		})
	}
}

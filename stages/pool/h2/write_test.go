package h2

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/net/http2"
)

// TestPeerStopsReading: a peer that stops reading blocks the socket; a
// request sent meanwhile never waits on the socket itself (it waits for
// its answer, and gives up when its context ends), and the connection
// fails after WriteTimeout, failing the upload that filled the socket. It
// runs in a bubble, over a connection that holds 64 KiB unread: the write
// timeout passes on the bubble's clock once everything waits.
func TestPeerStopsReading(t *testing.T) {
	bubble(t, func(t *testing.T) {
		const writeTimeout = 500 * time.Millisecond
		c, f := startFakePipe(t, Config{WriteTimeout: writeTimeout},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
		f.fr.WriteWindowUpdate(0, 1<<31-1-65535)
		// An upload the fake never reads fills the socket buffers.
		const size = 64 << 20
		upload := goRoundTrip(context.Background(), c, &Request{
			Method: http.MethodPost, Scheme: "http", Authority: "upstream.test", Path: "/",
			Header: http.Header{}, ContentLength: size, Body: io.NopCloser(bytes.NewReader(make([]byte, size))),
		})
		synctest.Wait() // the upload waits for the socket, the socket for the fake

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
		if !waitClosed(c, time.Second) {
			t.Error("connection still open after a write timed out")
		}
	})
}

// TestControlFlood: a peer that sends PING or SETTINGS frames without end
// while it reads nothing has the connection fail with ENHANCE_YOUR_CALM
// once maxQueuedControl bytes of acks wait for the socket, rather than
// have them pile up until the write times out. It runs in a bubble, so the
// write timeout cannot pass while the flood goes on.
func TestControlFlood(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(fr *http2.Framer) error
	}{
		{"PING", func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{1}) }},
		{"SETTINGS", func(fr *http2.Framer) error {
			return fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				c, f := startFakePipe(t, Config{})
				ch := goRoundTrip(context.Background(), c, getReq("/"))
				f.readRequest()
				// From here on the fake reads nothing.
				sent := 0
				for !c.Closed() && sent < 1<<20 {
					if tc.write(f.fr) != nil {
						break
					}
					sent++
				}
				if !waitClosed(c, time.Second) {
					t.Fatalf("connection open after a flood of %d frames", sent)
				}
				r := await(t, ch)
				var ce http2.ConnectionError
				if !errors.Is(r.err, errControlFlood) || !errors.As(r.err, &ce) || http2.ErrCode(ce) != http2.ErrCodeEnhanceYourCalm {
					t.Errorf("request: %v, want a connection error ENHANCE_YOUR_CALM", r.err)
				}
				c.lockWrite()
				held := len(c.wbuf)
				<-c.wlock
				if most := maxQueuedControl + 4<<10; held > most {
					t.Errorf("write side holds %d bytes, want at most %d", held, most)
				}
			})
		})
	}
}

// TestControlBurstRead: a burst of PINGs whose acks the peer reads, up to
// what maxQueuedControl holds, never fails the connection, however the
// flusher is scheduled.
func TestControlBurstRead(t *testing.T) {
	bubble(t, func(t *testing.T) {
		c, f := startFakePipe(t, Config{})
		const n = maxQueuedControl / 17 // PING acks are 17 bytes
		go func() {
			for i := range n {
				if f.fr.WritePing(false, [8]byte{byte(i)}) != nil {
					return
				}
			}
		}()
		for range n {
			if p := expect[*http2.PingFrame](f); !p.IsAck() {
				t.Fatalf("got a PING, want an ack")
			}
		}
		if c.Closed() {
			t.Errorf("connection closed after a burst of %d PINGs", n)
		}
	})
}

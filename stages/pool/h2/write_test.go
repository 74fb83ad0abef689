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

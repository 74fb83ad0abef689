package h2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"spooky/internal/testkit"
)

// TestConcurrentRequests sends many more requests than the server's
// SETTINGS_MAX_CONCURRENT_STREAMS: Reserve turns the extra ones down until
// a stream ends, and no more streams are open at once than the limit.
func TestConcurrentRequests(t *testing.T) {
	const limit, n = 10, 300
	var conn atomic.Pointer[Conn]
	var inflight, peak, overActive, turnedDown atomic.Int32
	// full is closed when Reserve first turns a request down; until then
	// the handlers hold their streams, so that the connection fills up.
	full := make(chan struct{})
	var fullOnce sync.Once
	addr := testkit.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := inflight.Add(1)
		defer inflight.Add(-1)
		for p := peak.Load(); now > p && !peak.CompareAndSwap(p, now); p = peak.Load() {
		}
		if a := conn.Load().ActiveStreams(); a > limit {
			overActive.Store(int32(a))
		}
		select {
		case <-full:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, r.URL.Query().Get("i"))
	}), testkit.H2COptions{MaxStreams: limit})
	c := dialH2(t, addr, Config{})
	conn.Store(c)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			for !c.Reserve() {
				turnedDown.Add(1)
				fullOnce.Do(func() { close(full) })
				if !awaitSlot(c, 10*time.Second) {
					errs <- errors.New("Reserve never succeeded")
					return
				}
			}
			resp, err := c.RoundTrip(ctx, getReq("/?i="+strconv.Itoa(i)))
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
	if turnedDown.Load() == 0 {
		t.Errorf("Reserve never returned false with %d requests and a limit of %d", n, limit)
	}
	noStreams(t, c)
	if c.Closed() {
		t.Errorf("connection closed")
	}
}

// TestRejectedRequestKeepsOtherReservations: a request turned down before
// it is sent gives back its own reservation, not someone else's.
func TestRejectedRequestKeepsOtherReservations(t *testing.T) {
	c, _ := startFake(t, Config{},
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 2},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: 1000})
	for i := range 2 {
		if !c.Reserve() {
			t.Fatalf("reservation %d of 2 failed", i+1)
		}
	}
	if c.Reserve() {
		t.Fatal("a third reservation succeeded with a limit of 2")
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

// TestStreamIDExhaustion: the last client stream ID is 2^31-1; a
// connection that used it takes no more streams (RFC 9113 §5.1.1).
func TestStreamIDExhaustion(t *testing.T) {
	c, f := startFake(t, Config{})
	c.mu.Lock()
	c.nextID = maxStreamID - 2
	c.mu.Unlock()
	for i := range 2 {
		if !c.Reserve() {
			t.Fatalf("reservation %d failed with two stream IDs left", i+1)
		}
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
			c, err := Handshake(ctx, cnc, Config{})
			if ferr := <-errc; ferr != nil {
				t.Fatal(ferr)
			}
			if err == nil {
				closeConn(t, c)
				t.Fatal("Handshake succeeded")
			}
			if errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Handshake = %v: it failed when its context ended, not on what the peer sent", err)
			}
			if tc.name != "closed" {
				f.expectClosed()
			}
		})
	}
}

// TestHandshakeContext: Handshake with a peer that never answers returns
// its context's error when the context ends. In a bubble, a Handshake
// that missed the end of its context would deadlock the test.
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
			bubble(t, func(t *testing.T) {
				cnc, snc := memPair(t)
				f := newFake(t, snc)
				errc := make(chan error, 1)
				go func() { errc <- f.readPreface() }() // and never answer
				ctx, cancel := tc.ctx()
				defer cancel()
				c, err := Handshake(ctx, cnc, Config{})
				if err == nil {
					closeConn(t, c)
					t.Fatal("Handshake succeeded")
				}
				if !errors.Is(err, tc.want) {
					t.Errorf("Handshake = %v, want %v", err, tc.want)
				}
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
				f.expectClosed()
			})
		})
	}
}

// TestHandshakeCallerDeadline: a deadline the caller put on the conn, with
// a ctx that has none, fails Handshake when it passes.
func TestHandshakeCallerDeadline(t *testing.T) {
	bubble(t, func(t *testing.T) {
		cnc, snc := memPair(t)
		f := newFake(t, snc)
		preface := make(chan error, 1)
		go func() { preface <- f.readPreface() }() // and never answer
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
		if err := <-preface; err != nil {
			t.Fatal(err)
		}
	})
}

package h2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"spooky/internal/testkit"
)

// blockingServer's handler blocks until release is closed or its request
// is canceled, then writes "done".
func blockingServer(t *testing.T) (addr string, entered chan struct{}, release func()) {
	entered = make(chan struct{}, 10)
	rel := make(chan struct{})
	addr = testkit.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/partial" {
			io.WriteString(w, "partial")
			http.NewResponseController(w).Flush()
		}
		entered <- struct{}{}
		select {
		case <-rel:
			io.WriteString(w, "done")
		case <-r.Context().Done():
		}
	}), testkit.H2COptions{})
	var once sync.Once
	release = func() { once.Do(func() { close(rel) }) }
	t.Cleanup(release)
	return addr, entered, release
}

func TestShutdownWaitsForInFlight(t *testing.T) {
	addr, entered, release := blockingServer(t)
	c := dialH2(t, addr, Config{})
	ch := goRoundTrip(context.Background(), c, getReq("/"))
	waitChan(t, entered, "the handler")

	shut := goShutdown(t, c)
	if c.Reserve() {
		t.Errorf("Reserve succeeded during Shutdown")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	default:
	}
	release()
	r := await(t, ch)
	if r.err != nil {
		t.Fatalf("in-flight request: %v", r.err)
	}
	if got := readAll(t, r.resp); got != "done" {
		t.Errorf("body %q", got)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown did not return once the request ended")
	}
	if !c.Closed() {
		t.Errorf("connection not closed after Shutdown")
	}
}

func TestShutdownContextEnds(t *testing.T) {
	addr, entered, release := blockingServer(t)
	c := dialH2(t, addr, Config{})
	ch := goRoundTrip(context.Background(), c, getReq("/"))
	waitChan(t, entered, "the handler")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := c.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the context's error", err)
	}
	if c.Closed() || c.Reserve() {
		t.Fatalf("after Shutdown's context ended: Closed %v; want an open conn taking no streams", c.Closed())
	}
	release()
	r := await(t, ch)
	if r.err != nil {
		t.Fatal(r.err)
	}
	readAll(t, r.resp)
	// The last stream of a connection going away closes it.
	if !waitClosed(c, time.Second) {
		t.Errorf("connection still open after its last stream")
	}
}

func TestShutdownIdleSendsGoAway(t *testing.T) {
	c, f := startFake(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if !c.Closed() {
		t.Errorf("open after Shutdown")
	}
	ga := f.expectClosed()
	if ga == nil || ga.ErrCode != http2.ErrCodeNo {
		t.Errorf("GOAWAY %+v, want NO_ERROR", ga)
	}
}

// TestShutdownSendsGoAway: Shutdown with a stream in flight sends GOAWAY
// once the stream ends, before it closes (RFC 9113 §6.8: endpoints SHOULD
// send GOAWAY before closing). Repeated, since it can race with the
// connection closing itself with its last stream.
func TestShutdownSendsGoAway(t *testing.T) {
	missing := 0
	const runs = 20
	for range runs {
		c, f := startFake(t, Config{})
		ch := goRoundTrip(context.Background(), c, getReq("/"))
		h := f.readRequest()
		shut := goShutdown(t, c)
		f.respond(h.StreamID, "x")
		r := await(t, ch)
		if r.err != nil {
			t.Fatal(r.err)
		}
		readAll(t, r.resp)
		ga := f.expectClosed()
		if err := <-shut; err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		if ga == nil || ga.ErrCode != http2.ErrCodeNo {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d Shutdowns closed without GOAWAY", missing, runs)
	}
}

func TestCloseFailsInFlight(t *testing.T) {
	t.Run("waiting for headers", func(t *testing.T) {
		addr, entered, _ := blockingServer(t)
		c := dialH2(t, addr, Config{})
		ch := goRoundTrip(context.Background(), c, getReq("/"))
		waitChan(t, entered, "the handler")
		closeConn(t, c)
		r := await(t, ch)
		if !errors.Is(r.err, ErrConnClosed) {
			t.Errorf("RoundTrip = %v, want ErrConnClosed", r.err)
		}
		if c.Reserve() {
			t.Errorf("Reserve succeeded after Close")
		}
	})
	t.Run("reading the body", func(t *testing.T) {
		addr, entered, _ := blockingServer(t)
		c := dialH2(t, addr, Config{})
		resp, err := do(t, c, context.Background(), getReq("/partial"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		waitChan(t, entered, "the handler")
		buf := make([]byte, 7)
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			t.Fatal(err)
		}
		closeConn(t, c)
		if _, err := resp.Body.Read(buf); !errors.Is(err, ErrConnClosed) {
			t.Errorf("Read = %v, want ErrConnClosed", err)
		}
		noStreams(t, c)
	})
	t.Run("reserved", func(t *testing.T) {
		addr, _, _ := blockingServer(t)
		c := dialH2(t, addr, Config{})
		reserve(t, c)
		closeConn(t, c)
		if _, err := c.RoundTrip(context.Background(), getReq("/")); !errors.Is(err, ErrUnprocessed) {
			t.Errorf("RoundTrip after Close = %v, want ErrUnprocessed", err)
		}
	})
}

// TestConnLossErrors: however the connection is lost, a request in flight
// fails with an error wrapping ErrConnClosed.
func TestConnLossErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		lose func(c *Conn, f *fake, hc *hookConn)
	}{
		{"Close", Config{}, func(c *Conn, f *fake, hc *hookConn) { c.Close() }},
		{"peer closes", Config{}, func(c *Conn, f *fake, hc *hookConn) { f.nc.Close() }},
		{"GOAWAY with an error, then close", Config{}, func(c *Conn, f *fake, hc *hookConn) {
			f.fr.WriteGoAway(1, http2.ErrCodeInternal, nil)
			f.nc.Close()
		}},
		{"write fails", Config{}, func(c *Conn, f *fake, hc *hookConn) {
			hc.failWrites(errors.New("simulated write failure"))
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			c.Ping(ctx)
		}},
		{"ping unanswered", Config{ReadIdleTimeout: 50 * time.Millisecond, PingTimeout: 50 * time.Millisecond}, func(c *Conn, f *fake, hc *hookConn) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				cnc, snc := memPair(t)
				hc := &hookConn{Conn: cnc}
				c, f := startFakeOn(t, hc, snc, tc.cfg)
				ch := goRoundTrip(context.Background(), c, getReq("/"))
				f.readRequest()
				tc.lose(c, f, hc)
				r := await(t, ch)
				if !errors.Is(r.err, ErrConnClosed) {
					t.Errorf("in-flight request: %v, want an error wrapping ErrConnClosed", r.err)
				}
				if errors.Is(r.err, context.DeadlineExceeded) || errors.Is(r.err, context.Canceled) {
					t.Errorf("in-flight request: %v looks like its own context ended", r.err)
				}
				if !waitClosed(c, time.Second) {
					t.Errorf("connection not closed")
				}
			})
		})
	}
}

func TestGoAway(t *testing.T) {
	c, f := startFake(t, Config{})
	ch1 := goRoundTrip(context.Background(), c, getReq("/1"))
	h1 := f.readRequest()
	ch3 := goRoundTrip(context.Background(), c, getReq("/3"))
	h3 := f.readRequest()
	if h1.StreamID != 1 || h3.StreamID != 3 {
		t.Fatalf("streams %d and %d", h1.StreamID, h3.StreamID)
	}
	f.fr.WriteGoAway(1, http2.ErrCodeNo, []byte("bye"))

	if r := await(t, ch3); !errors.Is(r.err, ErrUnprocessed) {
		t.Errorf("stream 3: %v, want ErrUnprocessed", r.err)
	}
	// The GOAWAY that failed stream 3 stopped new streams.
	if c.Reserve() {
		t.Errorf("Reserve succeeded after GOAWAY")
	}
	f.respond(1, "one")
	r := await(t, ch1)
	if r.err != nil {
		t.Fatalf("stream 1: %v", r.err)
	}
	if got := readAll(t, r.resp); got != "one" {
		t.Errorf("stream 1 body %q", got)
	}
	if !waitClosed(c, time.Second) {
		t.Errorf("connection open after its last stream ended following GOAWAY")
	}
}

func TestGoAwayBeforeRoundTrip(t *testing.T) {
	c, f := startFake(t, Config{})
	reserve(t, c)
	f.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	f.fr.WritePing(false, [8]byte{1})
	expect[*http2.PingFrame](f) // the GOAWAY has been read
	if _, err := c.RoundTrip(context.Background(), getReq("/")); !errors.Is(err, ErrUnprocessed) {
		t.Errorf("RoundTrip = %v, want ErrUnprocessed", err)
	}
	if !waitClosed(c, time.Second) {
		t.Errorf("connection open with no streams after GOAWAY")
	}
}

// TestGoAwayLastStreamID checks the client's GOAWAY names the last
// server-initiated stream it processed (RFC 9113 §6.8): with push disabled
// there is none, so 0.
func TestGoAwayLastStreamID(t *testing.T) {
	for _, inFlight := range []bool{false, true} {
		t.Run(fmt.Sprint("in flight ", inFlight), func(t *testing.T) {
			c, f := startFake(t, Config{})
			if inFlight {
				goRoundTrip(context.Background(), c, getReq("/"))
				f.readRequest()
			}
			f.data(99, true, []byte("x"))
			ga := f.expectClosed()
			if ga == nil {
				t.Fatal("no GOAWAY")
			}
			if ga.LastStreamID != 0 {
				t.Errorf("GOAWAY last stream ID %d, want 0 (no server-initiated streams)", ga.LastStreamID)
			}
		})
	}
}

func TestPingRealServer(t *testing.T) {
	c := dialH2(t, testkit.StartH2C(t, http.NotFoundHandler(), testkit.H2COptions{}), Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 3 {
		if err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func TestServerPing(t *testing.T) {
	_, f := startFake(t, Config{})
	data := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	f.fr.WritePing(false, data)
	p := expect[*http2.PingFrame](f)
	if !p.IsAck() || p.Data != data {
		t.Errorf("got PING ack %v data %v", p.IsAck(), p.Data)
	}
}

// TestIdlePingTimeout: a connection that reads nothing for ReadIdleTimeout
// is pinged, and closed when the ping goes unanswered for PingTimeout. The
// idle tests run in a bubble: the time they wait for passes on its fake
// clock as soon as the connection and the fake have nothing else to do.
func TestIdlePingTimeout(t *testing.T) {
	bubble(t, func(t *testing.T) {
		c, f := startFakePipe(t, Config{ReadIdleTimeout: 100 * time.Millisecond, PingTimeout: 100 * time.Millisecond})
		ch := goRoundTrip(context.Background(), c, getReq("/"))
		f.readRequest()
		expect[*http2.PingFrame](f) // and never answer it
		if !waitClosed(c, time.Second) {
			t.Fatalf("connection open a second after an unanswered ping")
		}
		if r := await(t, ch); r.err == nil {
			t.Errorf("in-flight request succeeded")
		}
	})
}

func TestIdlePingAnswered(t *testing.T) {
	bubble(t, func(t *testing.T) {
		c, f := startFakePipe(t, Config{ReadIdleTimeout: 50 * time.Millisecond, PingTimeout: 500 * time.Millisecond})
		count, stop := f.pingResponder()
		time.Sleep(400 * time.Millisecond)
		stop()
		if c.Closed() {
			t.Fatal("connection closed although its pings were answered")
		}
		if n := count(); n < 2 {
			t.Errorf("%d pings in 400ms with ReadIdleTimeout 50ms", n)
		}
	})
}

// TestReadIdleTimeoutWithoutPingTimeout: a zero PingTimeout should not
// close a connection whose peer answers every ping.
func TestReadIdleTimeoutWithoutPingTimeout(t *testing.T) {
	bubble(t, func(t *testing.T) {
		c, f := startFakePipe(t, Config{ReadIdleTimeout: 50 * time.Millisecond})
		count, stop := f.pingResponder()
		time.Sleep(300 * time.Millisecond)
		stop()
		if c.Closed() {
			t.Errorf("connection closed after %d answered pings: a zero PingTimeout fails every ping", count())
		}
	})
}

// TestGoAwayWithError: a GOAWAY with an error code lets the streams it
// covers finish, fails the others as unprocessed and takes no new ones
// (RFC 9113 §6.8); a connection lost after it says so.
func TestGoAwayWithError(t *testing.T) {
	for _, peerCloses := range []bool{false, true} {
		t.Run(fmt.Sprint("peer closes ", peerCloses), func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				c, f := startFakePipe(t, Config{})
				ch1 := goRoundTrip(context.Background(), c, getReq("/1"))
				h1 := f.readRequest()
				ch3 := goRoundTrip(context.Background(), c, getReq("/3"))
				f.readRequest()
				f.fr.WriteGoAway(h1.StreamID, http2.ErrCodeEnhanceYourCalm, []byte("overloaded"))
				if r := await(t, ch3); !errors.Is(r.err, ErrUnprocessed) {
					t.Errorf("stream above the GOAWAY's last stream: %v, want ErrUnprocessed", r.err)
				}
				if c.Reserve() {
					t.Errorf("Reserve succeeded after GOAWAY")
				}
				if c.Closed() {
					t.Fatalf("connection closed with a stream the GOAWAY covers still open")
				}
				if peerCloses {
					f.nc.Close()
					r := await(t, ch1)
					if !errors.Is(r.err, ErrConnClosed) || !strings.Contains(fmt.Sprint(r.err), "GOAWAY ENHANCE_YOUR_CALM") {
						t.Errorf("stream covered by the GOAWAY, connection lost: %v, want ErrConnClosed naming the GOAWAY", r.err)
					}
				} else {
					f.respond(h1.StreamID, "one")
					r := await(t, ch1)
					if r.err != nil {
						t.Fatalf("stream covered by the GOAWAY: %v", r.err)
					}
					if got := readAll(t, r.resp); got != "one" {
						t.Errorf("body %q", got)
					}
				}
				if !waitClosed(c, time.Second) {
					t.Errorf("connection open after its last stream ended following GOAWAY")
				}
			})
		})
	}
}

// TestConcurrentPings: two pings in flight at once are told apart,
// however close together they are sent: under the bubble's clock, which
// stands still, they are sent at the same instant.
func TestConcurrentPings(t *testing.T) {
	bubble(t, func(t *testing.T) {
		c, f := startFakePipe(t, Config{})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		errs := make(chan error, 2)
		for range 2 {
			go func() { errs <- c.Ping(ctx) }()
		}
		p1 := expect[*http2.PingFrame](f)
		d1 := p1.Data
		p2 := expect[*http2.PingFrame](f)
		d2 := p2.Data
		if d1 == d2 {
			t.Errorf("two pings with the same payload %v", d1)
		}
		f.fr.WritePing(true, d1)
		f.fr.WritePing(true, d2)
		for range 2 {
			if err := <-errs; err != nil {
				t.Errorf("Ping: %v", err)
			}
		}
	})
}

// TestShutdownReportsAConnectionThatFailedMeanwhile: a connection that
// fails while Shutdown waits for its streams fails them, and Shutdown says
// so rather than report a clean close.
func TestShutdownReportsAConnectionThatFailedMeanwhile(t *testing.T) {
	c, f := startFake(t, Config{})
	ch := goRoundTrip(context.Background(), c, getReq("/"))
	f.readRequest()
	shut := goShutdown(t, c)
	f.nc.Close() // the upstream goes away under the stream
	if r := await(t, ch); r.err == nil {
		t.Fatal("the in-flight request succeeded on a connection that died")
	}
	if err := testkit.Recv(t, shut, "Shutdown to return"); err == nil {
		t.Fatal("Shutdown reported a clean close of a connection that failed")
	}
}

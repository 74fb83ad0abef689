package h2

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/net/http2"
)

// dialH2 opens a Conn to addr; the test's cleanup closes it.
func dialH2(t testing.TB, addr string, cfg Config) *Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Handshake(ctx, nc, cfg)
	if err != nil {
		t.Fatalf("Handshake: %v", err)
	}
	t.Cleanup(func() { closeConn(t, c) })
	return c
}

// closeConn closes c and checks that its read loop ends.
func closeConn(t testing.TB, c *Conn) {
	done := make(chan struct{})
	go func() {
		c.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Errorf("Close did not return: the read loop did not end")
		return
	}
	if !c.Closed() {
		t.Errorf("Closed() = false after Close")
	}
}

// waitIdle waits, for up to d, until cond, called holding c.mu, holds. It
// wakes on c.idle, which is broadcast whenever a stream or a reservation
// ends and when the connection closes.
func waitIdle(c *Conn, d time.Duration, cond func() bool) bool {
	expired := false
	timer := time.AfterFunc(d, func() {
		c.mu.Lock()
		expired = true
		c.idle.Broadcast()
		c.mu.Unlock()
	})
	defer timer.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for !cond() {
		if expired {
			return false
		}
		c.idle.Wait()
	}
	return true
}

// awaitSlot waits, for up to d, until c has room for another stream, and
// reports whether it has. A connection that takes no more streams has
// none.
func awaitSlot(c *Conn, d time.Duration) bool {
	usable := false
	ok := waitIdle(c, d, func() bool {
		usable = c.usableLocked()
		return !usable || len(c.streams)+c.reserved < c.maxStreams
	})
	return ok && usable
}

// reserve waits until c has room for a stream and reserves it.
func reserve(t testing.TB, c *Conn) {
	t.Helper()
	for !c.Reserve() {
		if !awaitSlot(c, 5*time.Second) {
			t.Fatalf("Reserve never returned true")
		}
	}
}

// noStreams checks that c has no stream open, waiting for one that is
// ending to be gone.
func noStreams(t testing.TB, c *Conn) {
	t.Helper()
	if !waitIdle(c, time.Second, func() bool { return len(c.streams) == 0 }) {
		t.Errorf("ActiveStreams() = %d, want 0", c.ActiveStreams())
	}
}

// waitClosed waits for c's read loop to end, which Closed reports.
func waitClosed(c *Conn, d time.Duration) bool {
	select {
	case <-c.done:
		return true
	case <-time.After(d):
		return false
	}
}

// waitChan waits for ch, failing the test after five seconds.
func waitChan(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// shutdownCtx is a context for Shutdown that closes asked when Shutdown
// first asks whether it has ended, which it does once it has stopped
// taking new streams, before it waits for those in flight.
type shutdownCtx struct {
	context.Context
	asked chan struct{}
	once  sync.Once
}

// goShutdown starts c.Shutdown, bounded by 5 s, and returns once it has
// started; its result arrives on the channel.
func goShutdown(t *testing.T, c *Conn) <-chan error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	sctx := newShutdownCtx(ctx)
	shut := make(chan error, 1)
	go func() { shut <- c.Shutdown(sctx) }()
	waitChan(t, sctx.asked, "Shutdown to start")
	return shut
}

func newShutdownCtx(ctx context.Context) *shutdownCtx {
	return &shutdownCtx{Context: ctx, asked: make(chan struct{})}
}

func (c *shutdownCtx) Err() error {
	c.once.Do(func() { close(c.asked) })
	return c.Context.Err()
}

// bubbleBound is how long, in real time, a test in a bubble may run.
const bubbleBound = 10 * time.Second

// bubble runs f in a synctest bubble. On the bubble's fake clock, a
// timeout passes as soon as every goroutine waits: a test, or a fuzz
// input, that leaves everything waiting ends at once. A goroutine that
// keeps busy, or waits on a mutex, holds that clock still; a watchdog on
// the real clock ends that test by crashing the test binary.
func bubble(t *testing.T, f func(*testing.T)) {
	t.Helper()
	watchdog := time.AfterFunc(bubbleBound, func() {
		panic(fmt.Sprintf("%s: still running after %v in a synctest bubble", t.Name(), bubbleBound))
	})
	defer watchdog.Stop()
	synctest.Test(t, f)
}

// rtResult is what RoundTrip returned.
type rtResult struct {
	resp *http.Response
	err  error
}

// goRoundTrip reserves a stream and runs RoundTrip in a goroutine.
func goRoundTrip(ctx context.Context, c *Conn, req *Request) <-chan rtResult {
	ch := make(chan rtResult, 1)
	if !c.Reserve() {
		ch <- rtResult{err: errors.New("test: Reserve returned false")}
		return ch
	}
	go func() {
		resp, err := c.RoundTrip(ctx, req)
		ch <- rtResult{resp, err}
	}()
	return ch
}

// await waits for a RoundTrip result.
func await(t testing.TB, ch <-chan rtResult) rtResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatalf("RoundTrip did not return")
		return rtResult{}
	}
}

// do reserves a stream and sends req.
func do(t testing.TB, c *Conn, ctx context.Context, req *Request) (*http.Response, error) {
	t.Helper()
	reserve(t, c)
	return c.RoundTrip(ctx, req)
}

// getReq returns a GET without a body.
func getReq(path string) *Request {
	return &Request{Method: http.MethodGet, Scheme: "http", Authority: "upstream.test", Path: path, Header: http.Header{}}
}

// readAll reads and closes resp's body.
func readAll(t testing.TB, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return string(b)
}

// streamErr checks that err is a stream error with code.
func streamErr(t *testing.T, err error, code http2.ErrCode) {
	t.Helper()
	var se http2.StreamError
	if !errors.As(err, &se) || se.Code != code {
		t.Errorf("error %v, want a stream error %v", err, code)
	}
}

// pattern returns n deterministic pseudo-random bytes for seed.
func pattern(seed byte, n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{seed}), n)
}

// sameBytes compares got with want chunk by chunk.
func sameBytes(got, want io.Reader) error {
	g, w := make([]byte, 64<<10), make([]byte, 64<<10)
	var off int64
	for {
		n, werr := io.ReadFull(want, w)
		m, gerr := io.ReadFull(got, g[:n])
		if m != n || !bytes.Equal(g[:m], w[:n]) {
			return fmt.Errorf("bytes differ in the %d bytes at %d (read %d, err %v)", n, off, m, gerr)
		}
		off += int64(n)
		if werr != nil {
			if _, err := got.Read(g[:1]); err != io.EOF {
				return fmt.Errorf("body goes on after %d bytes (err %v)", off, err)
			}
			return nil
		}
	}
}

// closeFunc is a request body that calls close when closed.
type closeFunc struct {
	io.Reader
	close func()
}

func (c closeFunc) Close() error {
	c.close()
	return nil
}

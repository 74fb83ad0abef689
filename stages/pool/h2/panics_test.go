package h2

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// panicReader is a request body whose Read panics.
type panicReader struct{}

func (panicReader) Read([]byte) (int, error) { panic("test: request body reader") }
func (panicReader) Close() error             { return nil }

// TestPanicsContained: a panic in any of the connection's goroutines ends
// the connection, not the process: the request in flight fails with an
// error that wraps ErrPanic and ErrConnClosed and shows the panic's value
// and where it came from, and Close still returns.
func TestPanicsContained(t *testing.T) {
	var armed atomic.Bool
	boom := func() {
		if armed.Load() {
			panic("test: injected")
		}
	}
	for _, tc := range []struct {
		name  string
		cfg   Config
		req   func() *Request
		fire  func(c *Conn, f *fake)
		where string // a function on the panicking goroutine's stack
	}{
		{"read loop", Config{hooks: &testHooks{frame: func(fr http2.Frame) {
			if p, ok := fr.(*http2.PingFrame); ok && p.Data == [8]byte{'b', 'o', 'o', 'm'} {
				panic("test: injected")
			}
		}}}, nil, func(c *Conn, f *fake) {
			f.fr.WritePing(false, [8]byte{'b', 'o', 'o', 'm'})
		}, "readFrames"},
		{"flusher", Config{hooks: &testHooks{flush: boom}}, nil, func(c *Conn, f *fake) {
			armed.Store(true)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			c.Ping(ctx) // a write, which the flusher flushes
		}, "flushLoop"},
		{"idle check", Config{ReadIdleTimeout: time.Second, hooks: &testHooks{idle: boom}}, nil, func(c *Conn, f *fake) {
			armed.Store(true) // and the next check runs within a second
		}, "checkIdle"},
		{"body sender", Config{}, func() *Request {
			req := getReq("/")
			req.Method, req.ContentLength, req.Body = http.MethodPost, 10, panicReader{}
			return req
		}, func(c *Conn, f *fake) {}, "sendBody"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				armed.Store(false)
				c, f := startFakePipe(t, tc.cfg)
				f.lenient = true
				var ch <-chan rtResult
				if tc.req != nil {
					// The body sender may fail the connection before
					// the request's HEADERS leave.
					ch = goRoundTrip(context.Background(), c, tc.req())
				} else {
					ch = goRoundTrip(context.Background(), c, getReq("/"))
					f.readRequest()
				}
				tc.fire(c, f)
				r := await(t, ch)
				if !errors.Is(r.err, ErrPanic) || !errors.Is(r.err, ErrConnClosed) {
					t.Fatalf("request in flight: %v, want an error wrapping ErrPanic and ErrConnClosed", r.err)
				}
				msg := r.err.Error()
				if !strings.Contains(msg, "test: injected") && !strings.Contains(msg, "test: request body reader") {
					t.Errorf("error %q does not carry the panic's value", msg)
				}
				if !strings.Contains(msg, "goroutine") || !strings.Contains(msg, tc.where) {
					t.Errorf("error does not carry a stack through %s:\n%s", tc.where, msg)
				}
				closeConn(t, c)
				if c.Reserve() {
					t.Errorf("Reserve succeeded on a connection that panicked")
				}
			})
		})
	}
}

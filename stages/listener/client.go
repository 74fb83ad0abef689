package listener

import (
	"errors"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"spooky/envelope"
)

// clientWriter is the response writer the pipeline sees: every write to
// the client, and the flush at the end of the handler, waits at most
// listen.write_idle_timeout for the client to take the bytes, and never
// past the request's deadline (the route timeout), so that a client that
// stops reading holds its own stream and nothing else.
//
// Setting a stream's deadline takes quic-go's stream lock, so it is not
// done on every write: the idle deadline is moved on only once an eighth of
// it has passed since it was set. A client that takes nothing is so reset
// after between seven eighths of the idle timeout and all of it.
type clientWriter struct {
	http.ResponseWriter
	e    *envelope.Envelope
	idle time.Duration

	armed  time.Time // the deadline set on the stream; zero: none yet
	capped bool      // armed is the request's deadline, not an idle one

	// abandoned is set when the request's goroutine stops waiting for a
	// stage that is stuck: what the stage writes after that goes nowhere.
	abandoned atomic.Bool

	// altSvc is the Alt-Svc field a response over TCP carries; "": none.
	altSvc string
}

// errAbandoned is what a write to an abandoned request's writer returns.
var errAbandoned = errors.New("listener: the request was abandoned")

// abandon makes every later write fail; the response writer is quic-go's
// no longer once the handler has returned.
func (w *clientWriter) abandon() { w.abandoned.Store(true) }

// Header is a throwaway map for an abandoned request: quic-go reads the
// real one as the handler returns.
func (w *clientWriter) Header() http.Header {
	if w.abandoned.Load() {
		return http.Header{}
	}
	return w.ResponseWriter.Header()
}

// WriteHeader does nothing for an abandoned request. Over TCP it sets
// spooky's Alt-Svc, whatever the upstream said: the upstream's alternative
// services are not spooky's.
func (w *clientWriter) WriteHeader(status int) {
	if w.abandoned.Load() {
		return
	}
	if w.altSvc != "" {
		w.ResponseWriter.Header().Set("Alt-Svc", w.altSvc)
	}
	w.ResponseWriter.WriteHeader(status)
}

// writeDeadliner is how quic-go's response writer bounds a write, and
// net/http's, over HTTP/2 and HTTP/1.1 alike (what http.ResponseController
// calls).
type writeDeadliner interface{ SetWriteDeadline(time.Time) error }

// bound sets the deadline for the next write or flush: the idle bound, or
// the request's deadline if that comes first.
func (w *clientWriter) bound() {
	if d, ok := w.e.Ctx.Deadline(); ok && (w.idle <= 0 || time.Until(d) < w.idle) {
		if !w.capped || !w.armed.Equal(d) {
			w.arm(d, true)
		}
		return
	}
	w.boundIdle()
}

// boundLast sets the deadline for quic-go's flush when the handler
// returns: the idle bound alone, since an error response for a request
// whose deadline passed (504) must still go out.
func (w *clientWriter) boundLast() { w.boundIdle() }

func (w *clientWriter) boundIdle() {
	if w.idle <= 0 {
		return
	}
	now := time.Now()
	if !w.capped && !w.armed.IsZero() && w.armed.Sub(now) > w.idle-w.idle/8 {
		return // set lately enough
	}
	w.arm(now.Add(w.idle), false)
}

func (w *clientWriter) arm(deadline time.Time, capped bool) {
	if wd, ok := w.ResponseWriter.(writeDeadliner); ok {
		wd.SetWriteDeadline(deadline)
	}
	w.armed, w.capped = deadline, capped
}

func (w *clientWriter) Write(p []byte) (int, error) {
	if w.abandoned.Load() {
		return 0, errAbandoned
	}
	w.bound()
	return w.ResponseWriter.Write(p)
}

// FlushError flushes within the same bound; http.ResponseController finds
// it before it unwraps.
func (w *clientWriter) FlushError() error {
	if w.abandoned.Load() {
		return errAbandoned
	}
	w.bound()
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach what clientWriter does not
// wrap.
func (w *clientWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// abortIncomplete ends a request that got no answer so that the client
// cannot read the end of the handler as a whole (empty) answer: over
// HTTP/3 its stream is reset with H3_REQUEST_INCOMPLETE; over TCP the
// handler panics with http.ErrAbortHandler, which net/http turns into a
// stream reset (HTTP/2) or the connection closed (HTTP/1.1).
func abortIncomplete(w http.ResponseWriter) {
	if !resetIncomplete(w) {
		panic(http.ErrAbortHandler)
	}
}

// resetIncomplete resets the request's stream both ways with
// H3_REQUEST_INCOMPLETE (RFC 9114 §8.1): the request could not be served
// because its own body did not arrive whole, and no response went out, so
// the client must not read the end of the handler as a whole answer. It
// reports whether w was an HTTP/3 stream it could reset.
func resetIncomplete(w http.ResponseWriter) bool {
	hs, ok := w.(http3.HTTPStreamer)
	if !ok {
		return false
	}
	str, err := hs.HTTPStream()
	if err != nil {
		return true // the stream is gone already
	}
	str.CancelRead(quic.StreamErrorCode(http3.ErrCodeRequestIncomplete))
	str.CancelWrite(quic.StreamErrorCode(http3.ErrCodeRequestIncomplete))
	return true
}

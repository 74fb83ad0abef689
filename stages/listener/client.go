package listener

import (
	"net/http"
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
type clientWriter struct {
	http.ResponseWriter
	e    *envelope.Envelope
	idle time.Duration
}

// writeDeadliner is how quic-go's response writer bounds a write.
type writeDeadliner interface{ SetWriteDeadline(time.Time) error }

// bound sets the deadline for the next write or flush: the idle bound, or
// the request's deadline if that comes first.
func (w *clientWriter) bound() {
	deadline := w.idleDeadline()
	if d, ok := w.e.Ctx.Deadline(); ok && (deadline.IsZero() || d.Before(deadline)) {
		deadline = d
	}
	w.setDeadline(deadline)
}

// boundLast sets the deadline for quic-go's flush when the handler
// returns: the idle bound alone, since an error response for a request
// whose deadline passed (504) must still go out.
func (w *clientWriter) boundLast() { w.setDeadline(w.idleDeadline()) }

func (w *clientWriter) idleDeadline() time.Time {
	if w.idle <= 0 {
		return time.Time{}
	}
	return time.Now().Add(w.idle)
}

func (w *clientWriter) setDeadline(t time.Time) {
	if wd, ok := w.ResponseWriter.(writeDeadliner); ok {
		wd.SetWriteDeadline(t)
	}
}

func (w *clientWriter) Write(p []byte) (int, error) {
	w.bound()
	return w.ResponseWriter.Write(p)
}

// FlushError flushes within the same bound; http.ResponseController finds
// it before it unwraps.
func (w *clientWriter) FlushError() error {
	w.bound()
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach what clientWriter does not
// wrap.
func (w *clientWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// resetIncomplete resets the request's stream both ways with
// H3_REQUEST_INCOMPLETE (RFC 9114 §8.1): the request could not be served
// because its own body did not arrive whole, and no response went out, so
// the client must not read the end of the handler as a whole answer.
func resetIncomplete(w http.ResponseWriter) {
	hs, ok := w.(http3.HTTPStreamer)
	if !ok {
		return
	}
	str, err := hs.HTTPStream()
	if err != nil {
		return
	}
	str.CancelRead(quic.StreamErrorCode(http3.ErrCodeRequestIncomplete))
	str.CancelWrite(quic.StreamErrorCode(http3.ErrCodeRequestIncomplete))
}

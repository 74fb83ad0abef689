// Package envelope owns the Envelope that carries one client request through
// the pipeline, its pool, and the rule that it is finished exactly once.
package envelope

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"spooky/config"
)

// Envelope carries one request from the listener to the pool and back.
//
// Ownership moves with the envelope: sending it into a mailbox hands it to
// whoever receives it, and only its current holder may touch its fields or
// the response writer. The listener that took it from the pool waits on
// Done, and only then releases it.
type Envelope struct {
	// Set by the listener.
	Ctx        context.Context // ends when the client goes away or the deadline passes
	Request    *http.Request
	Writer     http.ResponseWriter
	ClientAddr string
	Arrived    time.Time

	// Set by the router.
	Route      *config.Route
	RouteIndex int

	// Set by the balancer.
	Endpoint string
	Attempt  int

	// Set by whoever finishes it.
	Status          int
	Err             error
	ResponseStarted bool // response headers went to the client
	Aborted         bool // the response was cut short; the client's stream must be reset

	cancel   context.CancelFunc
	done     chan struct{}
	finished atomic.Bool
	released bool
}

// StatusClientClosed is the status recorded, never sent, for a request
// whose client went away before it was answered (nginx's 499).
const StatusClientClosed = 499

var pool = sync.Pool{New: func() any {
	// done has room for one signal so that Finish never blocks and the
	// channel can be reused by the next request.
	return &Envelope{done: make(chan struct{}, 1)}
}}

// Get returns an envelope in its zero state, ready to be filled.
func Get() *Envelope {
	e := pool.Get().(*Envelope)
	e.released = false
	return e
}

// Release zeroes every field and returns the envelope to the pool. It must
// be called once, after Done; a second Release panics, because a reused
// envelope would then be carrying two requests at once.
func (e *Envelope) Release() {
	if e.released {
		panic("envelope: released twice")
	}
	if e.cancel != nil {
		e.cancel()
	}
	done := e.done
	select {
	case <-done: // a Finish that nobody waited for
	default:
	}
	*e = Envelope{done: done, released: true}
	pool.Put(e)
}

// SetDeadline narrows Ctx to end at t (or earlier, if Ctx already ends
// earlier). Every context it makes is cancelled on Release.
func (e *Envelope) SetDeadline(t time.Time) {
	var cancel context.CancelFunc
	e.Ctx, cancel = context.WithDeadline(e.Ctx, t)
	if prev := e.cancel; prev != nil {
		e.cancel = func() { cancel(); prev() }
		return
	}
	e.cancel = cancel
}

// Finish completes the envelope with status and err, once: of any number of
// calls, concurrent or not, the first wins and the rest return false.
//
// When err is set and no response header has gone out yet, Finish writes
// status and a one-line body naming the failure (except for
// StatusClientClosed: nobody is listening); when the header has gone out, it
// marks the envelope Aborted, so the listener resets the stream rather than
// end a truncated body cleanly.
func (e *Envelope) Finish(status int, err error) bool {
	if !e.finished.CompareAndSwap(false, true) {
		return false
	}
	e.Status, e.Err = status, err
	switch {
	case err == nil:
	case e.ResponseStarted:
		e.Aborted = true
	case status != StatusClientClosed:
		writeError(e.Writer, status, err)
	}
	e.done <- struct{}{}
	return true
}

// Finished reports whether Finish has been called.
func (e *Envelope) Finished() bool { return e.finished.Load() }

// Done returns a channel that receives once Finish has been called.
func (e *Envelope) Done() <-chan struct{} { return e.done }

func writeError(w http.ResponseWriter, status int, err error) {
	if w == nil {
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	if status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	fmt.Fprintf(w, "%d %s: %v\n", status, http.StatusText(status), err)
}

// Package envelope owns the Envelope that carries one client request through
// the pipeline, its pool, and the rule that it is finished exactly once.
package envelope

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"spooky/config"
	"spooky/upstream"
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
	Route *config.Route

	// Set by the balancer; Tried by the pool when a try fails and may be
	// retried: bit Index%64 of each endpoint that failed.
	Endpoint *upstream.Endpoint
	Attempt  int
	Tried    uint64

	// Set by whoever finishes it.
	Status          int
	Err             error
	ResponseStarted bool // response headers went to the client
	Aborted         bool // the response was cut short; the client's stream must be reset

	body      *trackedBody
	relay     Relayer         // what Stream left for the listener to run, until Relay runs it
	tryOpen   bool            // BeginTry was called and EndTry not yet
	repicks   int             // picks the pool could not use, see Repick
	retryHeld *upstream.Group // whose retry budget this envelope holds a place in
	cancel    context.CancelFunc
	done      chan struct{}
	finished  atomic.Bool
	released  bool
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
	e.settle(status, err)
	e.done <- struct{}{}
	return true
}

// settle records how the request ended and, where nothing of the response
// went out yet, writes the error response.
func (e *Envelope) settle(status int, err error) {
	if e.tryOpen || e.retryHeld != nil {
		// Finished by someone other than the pool (expired in a queue,
		// a stage panic, a final sweep): the try still ends.
		e.EndTry(time.Now().UnixNano(), 0, false)
	}
	e.Status, e.Err = status, err
	switch {
	case err == nil:
	case e.ResponseStarted:
		e.Aborted = true
	case status != StatusClientClosed:
		writeError(e.Writer, status, err)
	}
}

// Relayer writes a response that Stream handed over to e.Writer and
// returns the status and error to record, as Finish takes them. An
// interface, not a func, so that handing the pool's answer over allocates
// nothing more.
type Relayer interface {
	Relay(e *Envelope) (status int, err error)
}

// Stream finishes e as Finish does, except that the response is not
// written yet: relay writes it, on the listener's goroutine, when the
// listener calls Relay after Done. It is how the pool hands over a response
// whose pace is the client's, so that no pool worker waits on a client's
// flow control. The try stays open until relay ends it. Like Finish, only
// the first of Stream and Finish counts; it reports whether this one did.
func (e *Envelope) Stream(relay Relayer) bool {
	if !e.finished.CompareAndSwap(false, true) {
		return false
	}
	e.relay = relay
	e.done <- struct{}{}
	return true
}

// Relay runs what Stream left for the listener, if anything, and records
// its outcome as Finish would have. The listener calls it once Done has
// fired, before it reads Status or Aborted. If the relay panics, the panic
// goes on, and the listener, which recovers it, settles the request with
// RelayFailed.
func (e *Envelope) Relay() {
	relay := e.relay
	if relay == nil {
		return
	}
	e.relay = nil
	e.settle(relay.Relay(e))
}

// RelayFailed records a relay that panicked as a 502: the client's stream
// is reset if the response had started, and the try, which the relay
// would have ended, ends here.
func (e *Envelope) RelayFailed(err error) { e.settle(http.StatusBadGateway, err) }

// BeginTry starts a try on ep: ep counts the request as in flight until
// EndTry, which the pool calls when the exchange ends and Finish calls if
// nobody did.
func (e *Envelope) BeginTry(ep *upstream.Endpoint) {
	ep.Begin()
	e.Endpoint, e.tryOpen = ep, true
	e.Attempt++
}

// EndTry records how the current try went, once per BeginTry, and gives
// back the retry-budget place held for it, if any.
func (e *Envelope) EndTry(now int64, latency time.Duration, failed bool) {
	if e.tryOpen {
		e.tryOpen = false
		e.Endpoint.End(now, latency, failed)
	}
	if e.retryHeld != nil {
		e.retryHeld.ReleaseRetry()
		e.retryHeld = nil
	}
}

// Repick undoes a pick the pool could not use (the balancer chose from a
// config the pool no longer knows, after reloads in quick succession), so
// that the try does not count as an attempt, and reports whether another
// pick may be made: at most three, in case the two never agree.
func (e *Envelope) Repick() bool {
	e.Attempt--
	e.repicks++
	return e.repicks <= 3
}

// HoldRetry records that e holds a place in g's retry budget, given back
// when its next try ends or it is finished.
func (e *Envelope) HoldRetry(g *upstream.Group) { e.retryHeld = g }

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

// UpstreamBody returns the request body to hand to the upstream transport
// for one try: the client's body, with its reads tracked so that
// ReplaySafe can tell whether a retry could send it again.
//
// Each try gets its own view, shut when the transport closes it: a try's
// transport goroutine may outlive the try, and must not read what belongs
// to the next. The tracker behind the views is made fresh for each
// request, not kept in the pooled envelope, because the transport may close
// it after the envelope carries another request.
//
// trailers is the upstream request's Trailer map: when the client's body
// ends, the trailers it carried are copied into it, since quic-go only
// fills Request.Trailer at the end of the body, in a map of its own.
func (e *Envelope) UpstreamBody(trailers http.Header) io.ReadCloser {
	if e.body == nil {
		e.body = &trackedBody{src: e.Request.Body}
	}
	t := &tryBody{shared: e.body, req: e.Request, trailers: trailers}
	e.body.current.Store(t)
	return t
}

// ReplaySafe reports whether the request body can be sent again: no byte of
// it was read by an earlier try, and no read is waiting for one.
func (e *Envelope) ReplaySafe() bool { return e.body == nil || e.body.replaySafe() }

// trackedBody counts what the upstream transport read of a request body.
// The transport reads from its own goroutine, hence the lock; a read holds
// it while it waits, so that a close, which first closes the source to wake
// that read, returns only once the read has: after that nothing reads.
type trackedBody struct {
	mu      sync.Mutex
	current atomic.Pointer[tryBody] // the view of the try in progress; older views are stale
	src     io.ReadCloser
	srcShut bool
	eof     atomic.Bool
	read    atomic.Int64
	reading atomic.Bool
}

func (b *trackedBody) replaySafe() bool {
	return b.read.Load() == 0 && (b.eof.Load() || !b.reading.Load())
}

// tryBody is one try's view of the request body.
type tryBody struct {
	shared   *trackedBody
	shut     atomic.Bool
	req      *http.Request
	trailers http.Header
}

func (t *tryBody) Read(p []byte) (int, error) {
	b := t.shared
	b.mu.Lock()
	defer b.mu.Unlock()
	// reading is set before shut is looked at, and Close sets shut before
	// it looks at reading: either Close sees this read and wakes it, or
	// this read sees the view shut.
	b.reading.Store(true)
	defer b.reading.Store(false)
	switch {
	case t.shut.Load() || b.srcShut || t != b.current.Load():
		// A stale view belongs to a try that failed; what is left of
		// the body is the retry's.
		return 0, io.ErrClosedPipe
	case b.eof.Load():
		return 0, io.EOF
	}
	n, err := b.src.Read(p)
	b.read.Add(int64(n))
	if err == io.EOF {
		b.eof.Store(true)
		// The body's reader set the trailers, on this goroutine.
		if t.trailers != nil {
			maps.Copy(t.trailers, t.req.Trailer)
		}
	}
	return n, err
}

// Close shuts this view. The client's body stays open while it is still
// replay-safe, for a retry; otherwise it is closed, which also wakes a
// read waiting on it, and Close returns once that read has.
func (t *tryBody) Close() error {
	t.shut.Store(true)
	b := t.shared
	if t != b.current.Load() {
		// A failed try's body may be closed after its retry started
		// (by a transport goroutine of its own, or late): it must not
		// close the body under the retry.
		return nil
	}
	var err error
	if !b.replaySafe() {
		err = b.src.Close()
	}
	b.mu.Lock()
	if !b.replaySafe() {
		b.srcShut = true
	}
	b.mu.Unlock()
	return err
}

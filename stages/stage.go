// Package stages holds what every pipeline stage shares: the closed set of
// control messages, the envelope mailbox type, the worker loop that reads it,
// and what a stage shows on the debug endpoint. Each stage lives in its own
// package below this one.
package stages

import (
	"context"
	"errors"
	"net/http"

	"spooky/config"
	"spooky/envelope"
	"spooky/mailbox"
)

// Mailbox is the mailbox in front of a stage that takes envelopes.
type Mailbox = mailbox.Mailbox[*envelope.Envelope, Control]

// NewMailbox makes a stage's mailbox sized from its config.
func NewMailbox(s config.Stage) *Mailbox {
	return mailbox.New[*envelope.Envelope, Control](s.Queue, 16)
}

// Info is what a stage shows on /debug/stages besides its supervisor state.
type Info struct {
	// Workers is how many goroutines read the stage's mailbox; 0 for a
	// stage without one.
	Workers int `json:"workers,omitempty"`
	// InFlight is how many requests the listener holds, each on its own
	// http3 handler goroutine.
	InFlight int `json:"in_flight,omitempty"`
	// Connections is how many client connections the listener holds,
	// QUIC and TCP together, handshaking ones included.
	Connections int `json:"connections,omitempty"`
	// Refused counts what the stage refused to take, by the limit that
	// refused it (listen.limits, listen.quic); telemetry shows it as
	// spooky_refused_total.
	Refused map[string]uint64 `json:"refused,omitempty"`
	Mailbox *mailbox.Stats    `json:"mailbox,omitempty"`
}

// Inspector is implemented by every stage.
type Inspector interface {
	Inspect() Info
}

// Errors that end a request early. Their text is what the client reads.
var (
	ErrTimeout      = errors.New("route timeout")
	ErrClientClosed = errors.New("client closed request")
	ErrStagePanic   = errors.New("internal error while handling the request")
	ErrStopped      = errors.New("proxy shutting down")
)

// FinishExpired finishes e with 504 when its deadline has passed or 499
// when its client went away. It reports whether e's context had ended.
func FinishExpired(e *envelope.Envelope) bool {
	switch err := e.Ctx.Err(); {
	case err == nil:
		return false
	case errors.Is(err, context.DeadlineExceeded):
		e.Finish(http.StatusGatewayTimeout, ErrTimeout)
	default:
		e.Finish(envelope.StatusClientClosed, ErrClientClosed)
	}
	return true
}

// HandOn hands e to the next stage's mailbox, waiting for room as long as
// e's context allows; if it ends first, e is finished here (504 or 499),
// and if the next stage has stopped for good (its mailbox closed), with
// 503.
func HandOn(next *Mailbox, e *envelope.Envelope) {
	if next.Send(e.Ctx, e) != nil && !FinishExpired(e) {
		e.Finish(http.StatusServiceUnavailable, ErrStopped)
	}
}

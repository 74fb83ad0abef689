// Package stages holds what every pipeline stage shares: the closed set of
// control messages, the envelope mailbox type, the worker loop that reads it,
// and what a stage shows on the debug endpoint. Each stage lives in its own
// package below this one.
package stages

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/sourcegraph/conc/panics"

	"spooky/config"
	"spooky/envelope"
	"spooky/mailbox"
)

// Control is a message on a mailbox's priority lane. The set is closed:
// only types in this package implement it.
type Control interface{ isControl() }

// Reconfigure carries a new, validated configuration snapshot. A stage
// applies it atomically; envelopes already in hand finish on the old one.
type Reconfigure struct{ Config *config.Config }

func (Reconfigure) isControl() {}

// Mailbox is the mailbox in front of a stage that takes envelopes.
type Mailbox = mailbox.Mailbox[*envelope.Envelope, Control]

// NewMailbox makes a stage's mailbox sized from its config.
func NewMailbox(s config.Stage) *Mailbox {
	return mailbox.New[*envelope.Envelope, Control](s.Queue, 16)
}

// Info is what a stage shows on /debug/stages besides its supervisor state.
type Info struct {
	Workers int            `json:"workers"`
	Mailbox *mailbox.Stats `json:"mailbox,omitempty"`
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
)

// StatusClientClosed is the status recorded, never sent, for a request
// whose client went away.
const StatusClientClosed = envelope.StatusClientClosed

// FinishExpired finishes e with 504 when its deadline has passed or 499
// when its client went away. It reports whether e's context had ended.
func FinishExpired(e *envelope.Envelope) bool {
	switch err := e.Ctx.Err(); {
	case err == nil:
		return false
	case errors.Is(err, context.DeadlineExceeded):
		e.Finish(http.StatusGatewayTimeout, ErrTimeout)
	default:
		e.Finish(StatusClientClosed, ErrClientClosed)
	}
	return true
}

// Handler is what a stage does with one envelope and with one control
// message. Handle must finish the envelope or hand it on; it must not keep
// it after returning.
type Handler interface {
	Handle(e *envelope.Envelope)
	Control(c Control)
}

// RunWorkers runs n workers that read mb until ctx ends, and waits for them.
//
// An envelope whose context has already ended is finished without being
// handed to h. If Handle panics, the envelope it held is finished with 502,
// the other workers stop after the envelope they hold, and RunWorkers
// returns the panic as an error, so the supervisor restarts the stage;
// envelopes still queued in mb wait there for the restarted workers.
func RunWorkers(parent context.Context, n int, mb *Mailbox, h Handler) error {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if err := work(ctx, mb, h); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	if parent.Err() != nil {
		return nil // stopped, not failed
	}
	return context.Cause(ctx)
}

func work(ctx context.Context, mb *Mailbox, h Handler) error {
	// Once ctx has ended, Receive may still pick queued data at random;
	// checking first leaves the queue to the restarted workers.
	for ctx.Err() == nil {
		msg, err := mb.Receive(ctx)
		if err != nil {
			return nil
		}
		var pc panics.Catcher
		if msg.IsControl {
			pc.Try(func() { h.Control(msg.Control) })
			if r := pc.Recovered(); r != nil {
				return fmt.Errorf("stages: control handler panicked: %w", r.AsError())
			}
			continue
		}
		e := msg.Data
		if FinishExpired(e) {
			continue
		}
		pc.Try(func() { h.Handle(e) })
		if r := pc.Recovered(); r != nil {
			e.Finish(http.StatusBadGateway, ErrStagePanic)
			return fmt.Errorf("stages: handler panicked: %w", r.AsError())
		}
	}
	return nil
}

// Forward hands e to the next stage's mailbox, waiting for room as long as
// e's context allows; if it ends first, e is finished here (504 or 499).
func Forward(next *Mailbox, e *envelope.Envelope) {
	if next.Send(e.Ctx, e) != nil {
		FinishExpired(e)
	}
}

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
// Once applied, the stage calls Applied, so that the control plane can
// apply a config stage by stage, downstream first: the pool knows a new
// endpoint before the balancer can pick it.
type Reconfigure struct {
	Config *config.Config
	// Done, if set, is closed by Applied.
	Done chan struct{}
}

func (Reconfigure) isControl() {}

// Applied tells the sender that the config is in force.
func (r Reconfigure) Applied() {
	if r.Done != nil {
		close(r.Done)
	}
}

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
	ErrStopped      = errors.New("proxy shutting down")
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

// Pipe is what every envelope-taking stage shares: its mailbox and the
// workers that read it. The worker count and the mailbox's capacity can be
// changed while it runs.
type Pipe struct {
	Inbox *Mailbox

	mu      sync.Mutex
	want    int
	running []context.CancelFunc // one per worker, in start order
	start   func()               // starts one worker; set while Run runs
}

// NewPipe returns a pipe for inbox that will run n workers.
func NewPipe(inbox *Mailbox, n int) *Pipe {
	return &Pipe{Inbox: inbox, want: n}
}

// Inspect reports the worker count and the mailbox.
func (p *Pipe) Inspect() Info {
	st := p.Inbox.Stats()
	p.mu.Lock()
	defer p.mu.Unlock()
	return Info{Workers: p.want, Mailbox: &st}
}

// Tune applies a stage's config: the worker count and the queue size. A
// smaller count stops the newest workers once they finish the envelope they
// hold; a smaller queue keeps every envelope already in it.
func (p *Pipe) Tune(s config.Stage) {
	p.Inbox.Resize(s.Queue)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.want = s.Workers
	p.resizeLocked()
}

// Stopped finishes every envelope still queued: the stage has stopped for
// good and nobody would serve them (supervisor.Stopper).
func (p *Pipe) Stopped() {
	for {
		e, ok := p.Inbox.TryReceive()
		if !ok {
			return
		}
		if !FinishExpired(e) {
			e.Finish(http.StatusServiceUnavailable, ErrStopped)
		}
	}
}

func (p *Pipe) resizeLocked() {
	if p.start == nil {
		return
	}
	for len(p.running) < p.want {
		p.start()
	}
	for len(p.running) > p.want {
		last := len(p.running) - 1
		p.running[last]()
		p.running[last] = nil
		p.running = p.running[:last]
	}
}

// Run runs the workers until ctx ends, handing them to h, and waits for
// them.
//
// An envelope whose context has already ended is finished without being
// handed to h. If h panics, the envelope it held is finished with 502,
// the other workers stop after the envelope they hold, and Run returns the
// panic as an error, so the supervisor restarts the stage; envelopes still
// queued in the mailbox wait there for the restarted workers.
func (p *Pipe) Run(parent context.Context, h Handler) error {
	ctx, fail := context.WithCancelCause(parent)
	defer fail(nil)
	var wg sync.WaitGroup
	p.mu.Lock()
	p.start = func() {
		wctx, stop := context.WithCancel(ctx)
		p.running = append(p.running, stop)
		wg.Go(func() {
			defer stop()
			if err := work(wctx, p.Inbox, h); err != nil {
				fail(err)
			}
		})
	}
	p.resizeLocked()
	p.mu.Unlock()

	<-ctx.Done()
	p.mu.Lock()
	p.start = nil
	for _, stop := range p.running {
		stop()
	}
	p.running = nil
	p.mu.Unlock()
	wg.Wait()
	if parent.Err() != nil {
		return nil // stopped, not failed
	}
	return context.Cause(ctx)
}

func work(ctx context.Context, mb *Mailbox, h Handler) error {
	for {
		// Once ctx has ended, Receive returns its error rather than
		// queued data, which stays for the restarted workers.
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
			if rc, ok := msg.Control.(Reconfigure); ok {
				rc.Applied()
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
}

// Forward hands e to the next stage's mailbox, waiting for room as long as
// e's context allows; if it ends first, e is finished here (504 or 499).
func Forward(next *Mailbox, e *envelope.Envelope) {
	if next.Send(e.Ctx, e) != nil {
		FinishExpired(e)
	}
}

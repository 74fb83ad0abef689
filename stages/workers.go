package stages

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	"github.com/sourcegraph/conc/panics"

	"spooky/config"
	"spooky/envelope"
)

// Handler is what a stage does with one envelope and with one control
// message. Handle must finish the envelope or hand it on; it must not keep
// it after returning.
type Handler interface {
	Handle(e *envelope.Envelope)
	Control(c Control)
}

// Workers are the goroutines that read an envelope-taking stage's mailbox
// and hand each message to the stage's Handler. Their count and the
// mailbox's capacity can be changed while they run.
type Workers struct {
	Inbox *Mailbox

	mu      sync.Mutex
	want    int
	running []context.CancelFunc // one per worker, in start order
	start   func()               // starts one worker; set while Run runs
}

// NewWorkers returns n workers for inbox, started by Run.
func NewWorkers(inbox *Mailbox, n int) *Workers {
	return &Workers{Inbox: inbox, want: n}
}

// Inspect reports the worker count and the mailbox.
func (w *Workers) Inspect() Info {
	st := w.Inbox.Stats()
	w.mu.Lock()
	defer w.mu.Unlock()
	return Info{Workers: w.want, Mailbox: &st}
}

// Tune applies a stage's config: the worker count and the queue size. A
// smaller count stops the newest workers once they finish the envelope they
// hold; a smaller queue keeps every envelope already in it.
func (w *Workers) Tune(s config.Stage) {
	w.Inbox.Resize(s.Queue)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.want = s.Workers
	w.resizeLocked()
}

// Stopped closes the mailbox, so that later sends are refused and their
// envelopes finished by the sender, and finishes every envelope still
// queued: the stage has stopped for good and nobody would serve them
// (supervisor.Stopper).
func (w *Workers) Stopped() {
	w.Inbox.Close()
	for {
		e, ok := w.Inbox.TryReceive()
		if !ok {
			return
		}
		if !FinishExpired(e) {
			e.Finish(http.StatusServiceUnavailable, ErrStopped)
		}
	}
}

func (w *Workers) resizeLocked() {
	if w.start == nil {
		return
	}
	for len(w.running) < w.want {
		w.start()
	}
	for len(w.running) > w.want {
		last := len(w.running) - 1
		w.running[last]()
		w.running[last] = nil
		w.running = w.running[:last]
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
func (w *Workers) Run(parent context.Context, h Handler) error {
	ctx, fail := context.WithCancelCause(parent)
	defer fail(nil)
	var wg sync.WaitGroup
	w.mu.Lock()
	w.start = func() {
		wctx, stop := context.WithCancel(ctx)
		w.running = append(w.running, stop)
		wg.Go(func() {
			defer stop()
			if err := work(wctx, w.Inbox, h); err != nil {
				fail(err)
			}
		})
	}
	w.resizeLocked()
	w.mu.Unlock()

	<-ctx.Done()
	w.mu.Lock()
	w.start = nil
	for _, stop := range w.running {
		stop()
	}
	w.running = nil
	w.mu.Unlock()
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

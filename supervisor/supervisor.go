// Package supervisor owns the lifecycle of spooky's stages: it starts each
// one, restarts one that fails or panics with exponential backoff, and
// escalates when a stage restarts more often than its spec allows.
//
// The contract follows thejerf/suture: a stage is a Service whose Serve runs
// in the supervisor's goroutine for it and does not return until the stage
// has really stopped.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/sourcegraph/conc/panics"
)

// Service is one supervised stage.
type Service interface {
	// Serve runs the stage until ctx ends or it fails. It returns only once
	// every goroutine it started has stopped. A nil return or ctx's error
	// after ctx ended means a clean stop; anything else is a failure.
	Serve(ctx context.Context) error
}

// Stopper is implemented by a Service that has something to do once it has
// stopped for good (escalated, told not to restart, or the supervisor is
// stopping), never between restarts: a stage finishes the work still
// queued for it, which nobody would serve any more.
type Stopper interface {
	Stopped()
}

// ErrDoNotRestart, returned (or wrapped) by Serve, stops the stage for good
// without counting as a failure.
var ErrDoNotRestart = errors.New("supervisor: do not restart")

// ErrEscalated is wrapped by Serve's error when a stage failed more than
// Spec.Intensity times within Spec.Period.
var ErrEscalated = errors.New("supervisor: restart intensity exceeded")

// Spec says how to restart one stage. Zero values mean the defaults.
type Spec struct {
	Name    string
	Service Service
	// Backoff is the wait before the first restart; it doubles with each
	// failure in a row up to MaxBackoff. Default 50ms.
	Backoff time.Duration
	// MaxBackoff caps Backoff. Default 5s.
	MaxBackoff time.Duration
	// Intensity is how many failures within Period are tolerated; one more
	// escalates. Default 5.
	Intensity int
	// Period is the window for Intensity. Default 30s.
	Period time.Duration
}

func (s *Spec) defaults() {
	if s.Backoff <= 0 {
		s.Backoff = 50 * time.Millisecond
	}
	if s.MaxBackoff <= 0 {
		s.MaxBackoff = 5 * time.Second
	}
	if s.Intensity <= 0 {
		s.Intensity = 5
	}
	if s.Period <= 0 {
		s.Period = 30 * time.Second
	}
}

// State is where a stage is in its life.
type State string

const (
	StateRunning    State = "running"
	StateBackoff    State = "backoff"
	StateStopped    State = "stopped"
	StateEscalated  State = "escalated"
	StateNotStarted State = "not-started"
)

// Status is a snapshot of one stage, for the debug endpoint.
type Status struct {
	Name      string `json:"name"`
	State     State  `json:"state"`
	Restarts  int    `json:"restarts"`
	LastError string `json:"last_error,omitempty"`
}

// Event is reported to Supervisor.OnEvent on every failure.
type Event struct {
	Stage    string
	Err      error         // the failure
	Restarts int           // restarts so far, this one included
	Backoff  time.Duration // wait before the restart
	// Escalated is set when the stage failed once too often and will not
	// be restarted; Serve is about to return ErrEscalated.
	Escalated bool
}

// Supervisor runs a set of stages. Fields must be set before Serve.
type Supervisor struct {
	// OnEvent, if set, is told of every failure. It must not block.
	OnEvent func(Event)
	// Now and After stand in for the clock in tests. Defaults time.Now and
	// time.After.
	Now   func() time.Time
	After func(time.Duration) <-chan time.Time

	mu     sync.Mutex
	specs  []Spec
	status map[string]*Status
}

// Add registers a stage. Stages start in the order added.
func (s *Supervisor) Add(spec Spec) {
	spec.defaults()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status == nil {
		s.status = map[string]*Status{}
	}
	s.specs = append(s.specs, spec)
	s.status[spec.Name] = &Status{Name: spec.Name, State: StateNotStarted}
}

// Serve runs every stage until ctx ends, and returns once all have stopped.
// If a stage escalates, Serve cancels the others and returns an error that
// wraps ErrEscalated and the stage's last failure.
func (s *Supervisor) Serve(ctx context.Context) error {
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.After == nil {
		s.After = time.After
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	s.mu.Lock()
	specs := append([]Spec(nil), s.specs...)
	s.mu.Unlock()
	for _, spec := range specs {
		wg.Go(func() {
			if err := s.run(ctx, spec); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && errors.Is(err, ErrEscalated) {
		return err
	}
	return nil
}

// run keeps one stage going; it returns an error only on escalation.
func (s *Supervisor) run(ctx context.Context, spec Spec) error {
	if st, ok := spec.Service.(Stopper); ok {
		defer st.Stopped()
	}
	var failures []time.Time
	backoff := spec.Backoff
	for {
		s.setState(spec.Name, StateRunning, nil, false)
		err := serveCatching(ctx, spec.Service)
		if ctx.Err() != nil || err == nil || errors.Is(err, ErrDoNotRestart) {
			s.setState(spec.Name, StateStopped, nil, false)
			return nil
		}
		now := s.Now()
		failures = append(failures, now)
		for len(failures) > 0 && now.Sub(failures[0]) > spec.Period {
			failures = failures[1:]
		}
		if len(failures) == 1 {
			// The last failure is older than Period: the stage ran
			// well meanwhile, so this is a new run of failures.
			backoff = spec.Backoff
		}
		if len(failures) > spec.Intensity {
			s.setState(spec.Name, StateEscalated, err, false)
			s.report(Event{Stage: spec.Name, Err: err, Restarts: s.restarts(spec.Name), Escalated: true})
			return fmt.Errorf("%w: stage %s failed %d times in %s: %w", ErrEscalated, spec.Name, len(failures), spec.Period, err)
		}
		s.setState(spec.Name, StateBackoff, err, true)
		s.report(Event{Stage: spec.Name, Err: err, Restarts: s.restarts(spec.Name), Backoff: backoff})
		select {
		case <-s.After(backoff):
		case <-ctx.Done():
			s.setState(spec.Name, StateStopped, nil, false)
			return nil
		}
		backoff = min(backoff*2, spec.MaxBackoff)
	}
}

// serveCatching turns a panic in Serve into an error carrying its stack.
func serveCatching(ctx context.Context, svc Service) (err error) {
	var pc panics.Catcher
	pc.Try(func() { err = svc.Serve(ctx) })
	if r := pc.Recovered(); r != nil {
		return r.AsError()
	}
	return err
}

func (s *Supervisor) report(e Event) {
	if s.OnEvent != nil {
		s.OnEvent(e)
	}
}

func (s *Supervisor) setState(name string, st State, err error, restarting bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	status := s.status[name]
	status.State = st
	if err != nil {
		// A panic's error carries its stack; the status keeps the first
		// line, OnEvent gets the whole error.
		status.LastError, _, _ = strings.Cut(err.Error(), "\n")
	}
	if restarting {
		status.Restarts++
	}
}

func (s *Supervisor) restarts(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status[name].Restarts
}

// Statuses returns every stage's status in the order added.
func (s *Supervisor) Statuses() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Status, 0, len(s.specs))
	for _, spec := range s.specs {
		out = append(out, *s.status[spec.Name])
	}
	return out
}

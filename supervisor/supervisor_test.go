package supervisor_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"spooky/internal/testkit"
	"spooky/supervisor"
)

// fakeClock stands in for Supervisor.Now and Supervisor.After. After never
// fires by itself: the test reads the call from afters and fires it.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	afters chan afterCall
}

type afterCall struct {
	d    time.Duration
	fire chan time.Time
}

func newClock() *fakeClock {
	return &fakeClock{now: time.Unix(1_700_000_000, 0), afters: make(chan afterCall, 100)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	call := afterCall{d: d, fire: make(chan time.Time, 1)}
	c.afters <- call
	return call.fire
}

// nextAfter waits for the supervisor to start a backoff and returns it.
func (c *fakeClock) nextAfter(t *testing.T) afterCall {
	t.Helper()
	return testkit.Recv(t, c.afters, "a backoff (After call)")
}

func (c *fakeClock) noAfter(t *testing.T) {
	t.Helper()
	select {
	case call := <-c.afters:
		t.Fatalf("unexpected backoff of %v", call.d)
	default:
	}
}

func (a afterCall) Fire() { a.fire <- time.Time{} }

// fakeService is a Service driven by the test: every call to Serve shows up
// on runs, and returns what the test tells that run to do.
type fakeService struct {
	runs chan *run
}

type run struct {
	ctx    context.Context
	result chan func() error
	done   chan struct{} // closed when Serve has returned
}

func newService() *fakeService { return &fakeService{runs: make(chan *run, 100)} }

func (s *fakeService) Serve(ctx context.Context) error {
	r := &run{ctx: ctx, result: make(chan func() error), done: make(chan struct{})}
	defer close(r.done)
	s.runs <- r
	select {
	case f := <-r.result:
		return f()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *fakeService) next(t *testing.T) *run {
	t.Helper()
	return testkit.Recv(t, s.runs, "the service to be (re)started")
}

func (s *fakeService) noRun(t *testing.T) {
	t.Helper()
	select {
	case <-s.runs:
		t.Fatal("service was started again, want no restart")
	default:
	}
}

// do makes the run's Serve call f and return its result.
func (r *run) do(t *testing.T, f func() error) {
	t.Helper()
	select {
	case r.result <- f:
	case <-time.After(testkit.Watchdog):
		t.Fatal("timed out handing a result to Serve")
	}
	testkit.Recv(t, r.done, "Serve to return")
}

func (r *run) fail(t *testing.T, err error) {
	t.Helper()
	r.do(t, func() error { return err })
}

// events records what the supervisor reports.
type events struct {
	mu  sync.Mutex
	evs []supervisor.Event
}

func (e *events) add(ev supervisor.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.evs = append(e.evs, ev)
}

func (e *events) get() []supervisor.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]supervisor.Event(nil), e.evs...)
}

// harness is one supervisor with a fake clock, run by the test.
type harness struct {
	sup    *supervisor.Supervisor
	clock  *fakeClock
	events *events
	cancel context.CancelFunc
	served chan error
}

func newHarness(t *testing.T) *harness {
	clock := newClock()
	evs := &events{}
	return &harness{
		sup:    &supervisor.Supervisor{Now: clock.Now, After: clock.After, OnEvent: evs.add},
		clock:  clock,
		events: evs,
		served: make(chan error, 1),
	}
}

func (h *harness) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.served <- h.sup.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.served:
		case <-time.After(testkit.Watchdog):
			t.Error("Serve did not return after cancel")
		}
	})
}

func (h *harness) wait(t *testing.T) error {
	t.Helper()
	err := testkit.Recv(t, h.served, "Serve to return")
	h.served <- err // for the cleanup
	return err
}

func (h *harness) status(t *testing.T, name string) supervisor.Status {
	t.Helper()
	for _, s := range h.sup.Statuses() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no status for %q", name)
	return supervisor.Status{}
}

var errBoom = errors.New("boom")

func TestStatusesBeforeServe(t *testing.T) {
	var sup supervisor.Supervisor
	for _, name := range []string{"listener", "router", "pool"} {
		sup.Add(supervisor.Spec{Name: name, Service: newService()})
	}
	got := sup.Statuses()
	want := []supervisor.Status{
		{Name: "listener", State: supervisor.StateNotStarted},
		{Name: "router", State: supervisor.StateNotStarted},
		{Name: "pool", State: supervisor.StateNotStarted},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Statuses() = %+v, want %+v in the order added", got, want)
	}
}

func TestFailedStageIsRestartedWithDoublingBackoff(t *testing.T) {
	h := newHarness(t)
	svc := newService()
	h.sup.Add(supervisor.Spec{
		Name: "router", Service: svc,
		Backoff: 10 * time.Millisecond, MaxBackoff: 80 * time.Millisecond,
		Intensity: 100, Period: time.Minute,
	})
	h.start(t)

	want := []time.Duration{10, 20, 40, 80, 80, 80}
	var got []time.Duration
	for i := range want {
		r := svc.next(t)
		if st := h.status(t, "router"); st.State != supervisor.StateRunning || st.Restarts != i {
			t.Fatalf("run %d: status = %+v, want running with %d restarts", i, st, i)
		}
		r.fail(t, fmt.Errorf("attempt %d: %w", i, errBoom))
		call := h.clock.nextAfter(t)
		got = append(got, call.d/time.Millisecond)
		st := h.status(t, "router")
		if st.State != supervisor.StateBackoff || st.Restarts != i+1 || st.LastError != fmt.Sprintf("attempt %d: boom", i) {
			t.Fatalf("after failure %d: status = %+v, want backoff, %d restarts, last error %q", i, st, i+1, fmt.Sprintf("attempt %d: boom", i))
		}
		call.Fire()
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("backoffs (ms) = %v, want %v", got, want)
	}
	svc.next(t) // restarted once more after the last backoff

	evs := h.events.get()
	if len(evs) != len(want) {
		t.Fatalf("got %d events, want %d: %+v", len(evs), len(want), evs)
	}
	for i, ev := range evs {
		if ev.Stage != "router" || !errors.Is(ev.Err, errBoom) || ev.Restarts != i+1 || ev.Backoff != want[i]*time.Millisecond {
			t.Errorf("event %d = %+v, want stage router, err boom, restarts %d, backoff %v", i, ev, i+1, want[i]*time.Millisecond)
		}
	}
}

func TestSpecDefaults(t *testing.T) {
	h := newHarness(t)
	svc := newService()
	h.sup.Add(supervisor.Spec{Name: "pool", Service: svc})
	h.start(t)

	// Default backoff 50ms doubling, default intensity 5: the sixth failure
	// within the default period escalates.
	for i, want := range []time.Duration{50, 100, 200, 400, 800} {
		svc.next(t).fail(t, errBoom)
		call := h.clock.nextAfter(t)
		if call.d != want*time.Millisecond {
			t.Fatalf("backoff %d = %v, want %v", i, call.d, want*time.Millisecond)
		}
		h.clock.Advance(5 * time.Second) // 25s in all: still within 30s
		call.Fire()
	}
	svc.next(t).fail(t, errBoom)
	if err := h.wait(t); !errors.Is(err, supervisor.ErrEscalated) {
		t.Fatalf("Serve = %v, want ErrEscalated on the sixth failure within 30s", err)
	}
}

func TestPanickingStageIsRestarted(t *testing.T) {
	h := newHarness(t)
	svc := newService()
	h.sup.Add(supervisor.Spec{Name: "balancer", Service: svc, Intensity: 10})
	h.start(t)

	svc.next(t).do(t, func() error { panic("index out of range\nmore detail") })
	call := h.clock.nextAfter(t)
	st := h.status(t, "balancer")
	if st.State != supervisor.StateBackoff || st.Restarts != 1 {
		t.Fatalf("status = %+v, want backoff with 1 restart", st)
	}
	if st.LastError != "panic: index out of range" {
		t.Fatalf("LastError = %q, want the first line of the panic, %q", st.LastError, "panic: index out of range")
	}
	evs := h.events.get()
	if len(evs) != 1 || evs[0].Err == nil || !strings.Contains(evs[0].Err.Error(), "stacktrace") {
		t.Fatalf("events = %+v, want one whose error carries the stack", evs)
	}
	call.Fire()
	svc.next(t) // restarted
	if st := h.status(t, "balancer"); st.State != supervisor.StateRunning || st.Restarts != 1 {
		t.Fatalf("status = %+v, want running with 1 restart", st)
	}
}

func TestPanicWithError(t *testing.T) {
	h := newHarness(t)
	svc := newService()
	h.sup.Add(supervisor.Spec{Name: "pool", Service: svc})
	h.start(t)
	svc.next(t).do(t, func() error { panic(fmt.Errorf("wrapped: %w", errBoom)) })
	h.clock.nextAfter(t)
	if evs := h.events.get(); len(evs) != 1 || !errors.Is(evs[0].Err, errBoom) {
		t.Fatalf("events = %+v, want the panic's error to unwrap to errBoom", evs)
	}
}

func TestStopWithoutRestart(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{"ErrDoNotRestart", supervisor.ErrDoNotRestart},
		{"wrapped ErrDoNotRestart", fmt.Errorf("listener: socket closed: %w", supervisor.ErrDoNotRestart)},
		{"nil", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			svc := newService()
			h.sup.Add(supervisor.Spec{Name: "listener", Service: svc})
			h.start(t)
			svc.next(t).fail(t, tt.err)
			if err := h.wait(t); err != nil {
				t.Fatalf("Serve = %v, want nil once its only stage stopped", err)
			}
			svc.noRun(t)
			h.clock.noAfter(t)
			if st := h.status(t, "listener"); st.State != supervisor.StateStopped || st.Restarts != 0 || st.LastError != "" {
				t.Fatalf("status = %+v, want stopped, no restarts, no error", st)
			}
			if evs := h.events.get(); len(evs) != 0 {
				t.Fatalf("events = %+v, want none: this is not a failure", evs)
			}
		})
	}
}

func TestEscalationStopsOtherStages(t *testing.T) {
	h := newHarness(t)
	flaky, steady := newService(), newService()
	h.sup.Add(supervisor.Spec{Name: "steady", Service: steady})
	h.sup.Add(supervisor.Spec{Name: "flaky", Service: flaky, Intensity: 2, Period: time.Minute})
	h.start(t)

	steadyRun := steady.next(t)
	for range 2 {
		flaky.next(t).fail(t, errBoom)
		h.clock.nextAfter(t).Fire()
	}
	flaky.next(t).fail(t, errBoom) // the third failure within a minute

	err := h.wait(t)
	if !errors.Is(err, supervisor.ErrEscalated) || !errors.Is(err, errBoom) {
		t.Fatalf("Serve = %v, want an error wrapping ErrEscalated and the stage's failure", err)
	}
	if !strings.Contains(err.Error(), "flaky") {
		t.Errorf("Serve error %q does not name the stage", err)
	}
	select {
	case <-steadyRun.done:
	default:
		t.Fatal("Serve returned before the other stage had stopped")
	}
	if steadyRun.ctx.Err() == nil {
		t.Fatal("the other stage's context was not cancelled")
	}
	steady.noRun(t)
	if st := h.status(t, "flaky"); st.State != supervisor.StateEscalated || st.Restarts != 2 || st.LastError != "boom" {
		t.Errorf("flaky status = %+v, want escalated, 2 restarts, last error boom", st)
	}
	if st := h.status(t, "steady"); st.State != supervisor.StateStopped || st.Restarts != 0 {
		t.Errorf("steady status = %+v, want stopped, no restarts", st)
	}
	evs := h.events.get()
	if len(evs) != 3 {
		t.Fatalf("events = %+v, want 3", evs)
	}
	if last := evs[2]; last.Stage != "flaky" || !errors.Is(last.Err, errBoom) || last.Backoff != 0 || last.Restarts != 2 {
		t.Errorf("escalation event = %+v, want flaky, boom, no backoff, 2 restarts", last)
	}
}

func TestOldFailuresDoNotCount(t *testing.T) {
	h := newHarness(t)
	svc := newService()
	h.sup.Add(supervisor.Spec{Name: "router", Service: svc, Intensity: 2, Period: 10 * time.Second})
	h.start(t)

	// Failures at t=0s, 6s and 12s: the first is more than 10s old by the
	// third, so only two count and the stage is restarted.
	for i, advance := range []time.Duration{0, 6 * time.Second, 6 * time.Second} {
		h.clock.Advance(advance)
		svc.next(t).fail(t, errBoom)
		select {
		case call := <-h.clock.afters:
			call.Fire()
		case err := <-h.served:
			h.served <- err
			t.Fatalf("failure %d escalated (%v), want a restart: older failures must drop out of the window", i, err)
		case <-time.After(testkit.Watchdog):
			t.Fatal("timed out")
		}
	}
	// A fourth at t=13s: 6s, 12s and 13s are within 10s, one too many.
	h.clock.Advance(time.Second)
	svc.next(t).fail(t, errBoom)
	if err := h.wait(t); !errors.Is(err, supervisor.ErrEscalated) {
		t.Fatalf("Serve = %v, want ErrEscalated", err)
	}
}

func TestCancelStopsEverything(t *testing.T) {
	h := newHarness(t)
	running, backingOff := newService(), newService()
	h.sup.Add(supervisor.Spec{Name: "running", Service: running})
	h.sup.Add(supervisor.Spec{Name: "backing-off", Service: backingOff})
	h.start(t)

	r := running.next(t)
	backingOff.next(t).fail(t, errBoom)
	h.clock.nextAfter(t) // never fired
	if st := h.status(t, "backing-off"); st.State != supervisor.StateBackoff {
		t.Fatalf("status = %+v, want backoff", st)
	}

	h.cancel()
	if err := h.wait(t); err != nil {
		t.Fatalf("Serve = %v, want nil after the parent context ended", err)
	}
	select {
	case <-r.done:
	default:
		t.Fatal("Serve returned before the running stage had stopped")
	}
	for _, name := range []string{"running", "backing-off"} {
		if st := h.status(t, name); st.State != supervisor.StateStopped {
			t.Errorf("%s status = %+v, want stopped", name, st)
		}
	}
	running.noRun(t)
	backingOff.noRun(t)
}

func TestServeWithNoStages(t *testing.T) {
	var sup supervisor.Supervisor
	if err := sup.Serve(context.Background()); err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
}

// flakyOnce fails the first time it is served and then runs until stopped.
type flakyOnce struct {
	mu      sync.Mutex
	served  int
	running chan struct{}
}

func (f *flakyOnce) Serve(ctx context.Context) error {
	f.mu.Lock()
	f.served++
	n := f.served
	f.mu.Unlock()
	if n == 1 {
		return errors.New("cannot bind 127.0.0.1:9901")
	}
	close(f.running)
	<-ctx.Done()
	return nil
}

func ExampleSupervisor() {
	svc := &flakyOnce{running: make(chan struct{})}
	sup := &supervisor.Supervisor{
		OnEvent: func(e supervisor.Event) {
			fmt.Printf("%s failed (%v); restart %d in %v\n", e.Stage, e.Err, e.Restarts, e.Backoff)
		},
	}
	sup.Add(supervisor.Spec{Name: "admin", Service: svc, Backoff: time.Millisecond})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- sup.Serve(ctx) }()
	<-svc.running
	fmt.Printf("%+v\n", sup.Statuses())
	cancel()
	fmt.Println("Serve:", <-done)
	fmt.Printf("%+v\n", sup.Statuses())
	// Output:
	// admin failed (cannot bind 127.0.0.1:9901); restart 1 in 1ms
	// [{Name:admin State:running Restarts:1 LastError:cannot bind 127.0.0.1:9901}]
	// Serve: <nil>
	// [{Name:admin State:stopped Restarts:1 LastError:cannot bind 127.0.0.1:9901}]
}

package stages_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"spooky/config"
	"spooky/envelope"
	"spooky/internal/testkit"
	"spooky/stages"
)

// envs hands out envelopes and releases them all when the test ends, after
// the workers (whose cleanup is registered later, so runs first) stopped.
type envs struct{ list []*envelope.Envelope }

func newEnvs(t *testing.T) *envs {
	es := &envs{}
	t.Cleanup(func() {
		for _, e := range es.list {
			e.Release()
		}
	})
	return es
}

func (es *envs) get(ctx context.Context) *envelope.Envelope {
	e := envelope.Get()
	e.Ctx = ctx
	e.Writer = httptest.NewRecorder()
	es.list = append(es.list, e)
	return e
}

// fakeHandler records what it is given. By default Handle finishes the
// envelope with 200; handle, if set, replaces that.
type fakeHandler struct {
	handle   func(e *envelope.Envelope)
	handled  chan *envelope.Envelope
	controls chan stages.Control
}

func newHandler() *fakeHandler {
	return &fakeHandler{
		handled:  make(chan *envelope.Envelope, 100),
		controls: make(chan stages.Control, 100),
	}
}

func (h *fakeHandler) Handle(e *envelope.Envelope) {
	if h.handle != nil {
		h.handle(e)
	} else {
		e.Finish(http.StatusOK, nil)
	}
	h.handled <- e
}

func (h *fakeHandler) Control(c stages.Control) { h.controls <- c }

// workers is one Workers.Run call running in the background.
type workers struct {
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

func start(t *testing.T, n int, mb *stages.Mailbox, h stages.Handler) *workers {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &workers{cancel: cancel, done: make(chan error, 1)}
	go func() { w.done <- stages.NewWorkers(mb, n).Run(ctx, h) }()
	t.Cleanup(func() { w.stop(t) })
	return w
}

// wait waits for Workers.Run to return by itself.
func (w *workers) wait(t *testing.T) error {
	t.Helper()
	w.once.Do(func() { w.err = testkit.Recv(t, w.done, "Workers.Run to return") })
	return w.err
}

func (w *workers) stop(t *testing.T) error {
	t.Helper()
	w.cancel()
	return w.wait(t)
}

func newMailbox(queue int) *stages.Mailbox {
	return stages.NewMailbox(config.Stage{Workers: 1, Queue: queue})
}

func TestPipeRunHandsEnvelopesToHandler(t *testing.T) {
	es := newEnvs(t)
	mb := newMailbox(16)
	h := newHandler()
	w := start(t, 2, mb, h)

	sent := map[*envelope.Envelope]bool{}
	for range 10 {
		e := es.get(context.Background())
		sent[e] = true
		if err := mb.Send(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	for range 10 {
		e := testkit.Recv(t, h.handled, "an envelope to be handled")
		if !sent[e] {
			t.Fatalf("handler got an envelope that was not sent, or got one twice")
		}
		delete(sent, e)
		if e.Status != http.StatusOK {
			t.Errorf("Status = %d, want 200", e.Status)
		}
	}
	if err := w.stop(t); err != nil {
		t.Fatalf("Workers.Run after cancel = %v, want nil", err)
	}
}

func TestPipeRunDeliversControl(t *testing.T) {
	mb := newMailbox(4)
	h := newHandler()
	start(t, 1, mb, h)
	cfg := &config.Config{}
	if err := mb.SendControl(context.Background(), stages.Reconfigure{Config: cfg}); err != nil {
		t.Fatal(err)
	}
	c := testkit.Recv(t, h.controls, "the control message")
	rc, ok := c.(stages.Reconfigure)
	if !ok || rc.Config != cfg {
		t.Fatalf("Control got %#v, want Reconfigure with the config sent", c)
	}
}

func TestPipeRunFinishesExpiredEnvelopes(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	late, cancelLate := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	t.Cleanup(cancelLate)

	tests := []struct {
		name       string
		ctx        context.Context
		wantStatus int
		wantErr    error
	}{
		{"client went away", cancelled, envelope.StatusClientClosed, stages.ErrClientClosed},
		{"deadline passed", late, http.StatusGatewayTimeout, stages.ErrTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			es := newEnvs(t)
			mb := newMailbox(4)
			h := newHandler()
			expired := es.get(tt.ctx)
			live := es.get(context.Background())
			for _, e := range []*envelope.Envelope{expired, live} {
				if err := mb.Send(context.Background(), e); err != nil {
					t.Fatal(err)
				}
			}
			start(t, 1, mb, h) // one worker: the expired one is done before live is handled

			if got := testkit.Recv(t, h.handled, "the live envelope"); got != live {
				t.Fatal("the expired envelope reached Handle")
			}
			if !expired.Finished() || expired.Status != tt.wantStatus || !errors.Is(expired.Err, tt.wantErr) {
				t.Fatalf("expired envelope: finished %v, status %d, err %v; want %d, %v",
					expired.Finished(), expired.Status, expired.Err, tt.wantStatus, tt.wantErr)
			}
		})
	}
}

// StatusClientClosed is documented as "recorded (never sent)".
func TestClientClosedStatusIsNotSent(t *testing.T) {
	es := newEnvs(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e := es.get(ctx)
	rec := e.Writer.(*httptest.ResponseRecorder)
	if !stages.FinishExpired(e) {
		t.Fatal("FinishExpired = false for a cancelled context")
	}
	if e.Status != envelope.StatusClientClosed {
		t.Fatalf("Status = %d, want %d", e.Status, envelope.StatusClientClosed)
	}
	if rec.Code != http.StatusOK || rec.Body.Len() != 0 {
		t.Fatalf("BUG(stages/stage.go FinishExpired): status 499 is documented as recorded, never sent, "+
			"but the response writer got status %d and body %q (FinishExpired passes ErrClientClosed to "+
			"Finish, which writes an error response whenever err != nil and the response has not started)",
			rec.Code, rec.Body.String())
	}
}

var errHandlerBug = errors.New("nil map write")

func TestPipeRunHandlePanic(t *testing.T) {
	es := newEnvs(t)
	mb := newMailbox(8)
	bad := es.get(context.Background())
	queued := []*envelope.Envelope{es.get(context.Background()), es.get(context.Background())}
	for _, e := range append([]*envelope.Envelope{bad}, queued...) {
		if err := mb.Send(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	h := newHandler()
	h.handle = func(e *envelope.Envelope) {
		if e == bad {
			panic(errHandlerBug)
		}
		e.Finish(http.StatusOK, nil)
	}
	w := start(t, 1, mb, h)

	err := w.wait(t)
	if err == nil {
		t.Fatal("Workers.Run = nil after Handle panicked, want the panic as an error")
	}
	if !errors.Is(err, errHandlerBug) || !strings.Contains(err.Error(), "handler panicked") {
		t.Errorf("Workers.Run = %v, want it to wrap the panic's error", err)
	}
	if bad.Status != http.StatusBadGateway || !errors.Is(bad.Err, stages.ErrStagePanic) {
		t.Errorf("panicked envelope: status %d, err %v; want 502, ErrStagePanic", bad.Status, bad.Err)
	}
	rec := bad.Writer.(*httptest.ResponseRecorder)
	if rec.Code != http.StatusBadGateway || !strings.Contains(rec.Body.String(), stages.ErrStagePanic.Error()) {
		t.Errorf("client got %d %q, want 502 naming the internal error", rec.Code, rec.Body.String())
	}
	select {
	case e := <-h.handled:
		t.Fatalf("an envelope (status %d) was handled after the panic", e.Status)
	default:
	}
	// The queued envelopes wait for the restarted workers.
	if st := mb.Stats(); st.DataLen != len(queued) {
		t.Fatalf("mailbox holds %d envelopes after the panic, want %d", st.DataLen, len(queued))
	}
	for i, want := range queued {
		msg, err := mb.Receive(context.Background())
		if err != nil || msg.Data != want || want.Finished() {
			t.Fatalf("queued envelope %d: got %v, %v (finished %v); want it untouched, in order", i, msg.Data, err, want.Finished())
		}
	}
}

// bubbleEnvelope is an envelope for a test in a synctest bubble. It is
// never released: its Done channel may belong to the bubble and must not
// reach the pool.
func bubbleEnvelope() *envelope.Envelope {
	e := envelope.Get()
	e.Ctx = context.Background()
	return e
}

// With several workers, a panic in one must not let the others take more
// envelopes from the mailbox: "the other workers stop after the envelope
// they hold ... envelopes still queued in mb wait there".
func TestPipeRunPanicLeavesQueueToRestart(t *testing.T) {
	const rounds = 20
	taken := 0
	for range rounds {
		synctest.Test(t, func(t *testing.T) {
			mb := newMailbox(16)
			bad, held := bubbleEnvelope(), bubbleEnvelope()
			queued := []*envelope.Envelope{bubbleEnvelope(), bubbleEnvelope(), bubbleEnvelope(), bubbleEnvelope()}
			for _, e := range append([]*envelope.Envelope{bad, held}, queued...) {
				if !mb.TrySend(e) {
					t.Fatal("mailbox full")
				}
			}
			var (
				mu               sync.Mutex
				handled          = map[*envelope.Envelope]bool{}
				heldTaken        = make(chan struct{})
				holdUntilStopped = make(chan struct{})
			)
			h := handlerFunc(func(e *envelope.Envelope) {
				mu.Lock()
				handled[e] = true
				mu.Unlock()
				switch e {
				case bad:
					<-heldTaken // so that the other worker holds "held", not a queued one
					panic("boom")
				case held:
					close(heldTaken)
					e.Finish(http.StatusOK, nil)
					<-holdUntilStopped
					return
				}
				e.Finish(http.StatusOK, nil)
			})
			done := make(chan error, 1)
			go func() { done <- stages.NewWorkers(mb, 2).Run(context.Background(), h) }()
			// Once every goroutine is parked, the worker that panicked has
			// returned and cancelled the others; let the one holding "held" go on.
			synctest.Wait()
			close(holdUntilStopped)
			if err := <-done; err == nil {
				t.Fatal("Workers.Run = nil after a panic")
			}
			mu.Lock()
			defer mu.Unlock()
			for _, e := range queued {
				if handled[e] {
					taken++
				}
			}
		})
	}
	if taken > 0 {
		t.Fatalf("BUG(stages/stage.go work / mailbox.Receive): in %d rounds, the surviving worker took %d queued "+
			"envelopes after another worker panicked; Workers.Run documents that they stay queued for the restarted "+
			"workers. Receive's select picks at random between a ready data lane and a done ctx, and work() does "+
			"not check ctx before calling Receive", rounds, taken)
	}
}

type handlerFunc func(e *envelope.Envelope)

func (f handlerFunc) Handle(e *envelope.Envelope) { f(e) }
func (f handlerFunc) Control(stages.Control)      {}

func TestPipeRunRunsNConcurrently(t *testing.T) {
	const n = 4
	es := newEnvs(t)
	mb := newMailbox(16)
	var (
		mu       sync.Mutex
		inFlight int
		full     = make(chan struct{})
		release  = make(chan struct{})
	)
	h := newHandler()
	h.handle = func(e *envelope.Envelope) {
		mu.Lock()
		inFlight++
		if inFlight == n {
			close(full)
		}
		mu.Unlock()
		<-release
		e.Finish(http.StatusOK, nil)
	}
	for range n + 1 {
		if err := mb.Send(context.Background(), es.get(context.Background())); err != nil {
			t.Fatal(err)
		}
	}
	start(t, n, mb, h)
	testkit.Recv(t, full, "n envelopes to be in Handle at once")
	// All n workers are inside Handle, so nobody can have taken the last.
	if st := mb.Stats(); st.DataLen != 1 {
		t.Fatalf("mailbox holds %d, want 1: more than %d workers are running", st.DataLen, n)
	}
	close(release)
	for range n + 1 {
		testkit.Recv(t, h.handled, "every envelope to be handled")
	}
}

func TestPipeRunReturnsNilOnCancel(t *testing.T) {
	for _, n := range []int{1, 3} {
		mb := newMailbox(1)
		w := start(t, n, mb, newHandler())
		if err := w.stop(t); err != nil {
			t.Fatalf("n=%d: Workers.Run = %v after cancel, want nil", n, err)
		}
	}
}

// A panic in Control must not take the process down: the supervisor can
// only restart a stage whose panic comes back to it as an error. The panic
// runs in a child process so that, if it is not caught, only that dies.
func TestPipeRunControlPanic(t *testing.T) {
	if os.Getenv("STAGES_TEST_CONTROL_PANIC") == "1" {
		mb := newMailbox(1)
		if err := mb.SendControl(context.Background(), stages.Reconfigure{}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), testkit.Watchdog)
		defer cancel()
		err := stages.NewWorkers(mb, 1).Run(ctx, panickyControl{})
		if err == nil || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Workers.Run = %v, want the Control panic as an error", err)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*testkit.Watchdog)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestPipeRunControlPanic$", "-test.count=1")
	// atexit_sleep_ms: a race-enabled child would otherwise wait 1s on exit.
	cmd.Env = append(os.Environ(), "STAGES_TEST_CONTROL_PANIC=1", "GORACE=atexit_sleep_ms=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		first, _, _ := strings.Cut(string(out), "\n\n")
		t.Fatalf("BUG(stages/stage.go work): a panic in Handler.Control is not recovered; it crashes the "+
			"process instead of coming back from Workers.Run as an error (%v):\n%s", err, first)
	}
}

type panickyControl struct{}

func (panickyControl) Handle(e *envelope.Envelope) { e.Finish(http.StatusOK, nil) }
func (panickyControl) Control(stages.Control)      { panic("bad snapshot") }

// TestPipeTuneResizesWhileRunning grows and shrinks the workers and the
// queue of a running pipe: the count shows at once, a grown pipe runs that
// many handlers at a time, and a shrunk one keeps every queued envelope.
// It runs in a bubble so that "every worker is parked" is an event
// (synctest.Wait), not a guess.
func TestPipeTuneResizesWhileRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mb := newMailbox(8)
		release := make(chan struct{})
		var inFlight atomic.Int32
		h := newHandler()
		h.handle = func(e *envelope.Envelope) {
			inFlight.Add(1)
			<-release
			inFlight.Add(-1)
			e.Finish(http.StatusOK, nil)
		}
		p := stages.NewWorkers(mb, 1)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx, h) }()
		var releaseOnce sync.Once
		t.Cleanup(func() { // in the bubble, so that a failed test leaves no goroutine blocked
			releaseOnce.Do(func() { close(release) })
			cancel()
			<-done
		})

		p.Tune(config.Stage{Workers: 3, Queue: 2})
		if info := p.Inspect(); info.Workers != 3 || info.Mailbox.DataCap != 2 {
			t.Fatalf("after Tune: %+v %+v", info, info.Mailbox)
		}
		synctest.Wait() // every worker waits in Receive
		for i := range 5 {
			if !mb.TrySend(bubbleEnvelope()) {
				t.Fatalf("envelope %d found no worker and no room in the queue", i)
			}
		}
		synctest.Wait() // every worker that took one waits in Handle
		if n, st := inFlight.Load(), mb.Stats(); n != 3 || st.DataLen != 2 {
			t.Fatalf("%d handlers ran at once with %d envelopes queued, want 3 and 2", n, st.DataLen)
		}
		p.Tune(config.Stage{Workers: 1, Queue: 1})
		releaseOnce.Do(func() { close(release) })
		for range 5 {
			testkit.Recv(t, h.handled, "every envelope to be handled after shrinking")
		}
		if info := p.Inspect(); info.Workers != 1 || info.Mailbox.DataCap != 1 {
			t.Fatalf("after shrinking: %+v", info)
		}
	})
}

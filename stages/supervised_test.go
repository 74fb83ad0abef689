package stages_test

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"spooky/envelope"
	"spooky/internal/testkit"
	"spooky/stages"
	"spooky/supervisor"
)

// pipeStage is a stage as the daemon runs one: a Workers under a supervisor.
type pipeStage struct {
	*stages.Workers
	h stages.Handler
}

func (s pipeStage) Serve(ctx context.Context) error { return s.Run(ctx, s.h) }

// TestSupervisedStagePanicLosesNothing: the envelope a panicking worker
// held gets 502, the supervisor restarts the stage after its backoff, and
// the envelopes queued behind it are served by the restarted workers.
func TestSupervisedStagePanicLosesNothing(t *testing.T) {
	es := newEnvs(t)
	mb := newMailbox(8)
	var panicked atomic.Bool
	h := newHandler()
	h.handle = func(e *envelope.Envelope) {
		if !panicked.Swap(true) {
			panic("boom")
		}
		e.Finish(http.StatusOK, nil)
	}
	var sup supervisor.Supervisor
	sup.Add(supervisor.Spec{Name: "stage", Service: pipeStage{stages.NewWorkers(mb, 1), h}, Backoff: 20 * time.Millisecond})
	queued := make([]*envelope.Envelope, 4)
	for i := range queued {
		queued[i] = es.get(context.Background())
		if err := mb.Send(context.Background(), queued[i]); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sup.Serve(ctx) }()
	t.Cleanup(func() { cancel(); testkit.Recv(t, done, "the supervisor to stop") })

	for i, e := range queued {
		testkit.Recv(t, e.Done(), "every queued envelope to be finished")
		want := http.StatusOK
		if i == 0 {
			want = http.StatusBadGateway
		}
		if e.Status != want {
			t.Errorf("envelope %d finished with %d, want %d", i, e.Status, want)
		}
	}
	if st := sup.Statuses()[0]; st.Restarts != 1 || st.State != supervisor.StateRunning || st.LastError == "" {
		t.Fatalf("status %+v", st)
	}
}

// TestEscalatedStageFinishesItsQueue: a stage that panics on every
// envelope escalates; the envelopes still queued for it are then finished
// with 503 rather than left waiting for a stage that will not come back.
func TestEscalatedStageFinishesItsQueue(t *testing.T) {
	es := newEnvs(t)
	mb := newMailbox(16)
	h := newHandler()
	h.handle = func(e *envelope.Envelope) { panic("always") }
	var sup supervisor.Supervisor
	sup.Add(supervisor.Spec{Name: "stage", Service: pipeStage{stages.NewWorkers(mb, 1), h}, Backoff: time.Millisecond, Intensity: 2})
	queued := make([]*envelope.Envelope, 8)
	for i := range queued {
		queued[i] = es.get(context.Background())
		if err := mb.Send(context.Background(), queued[i]); err != nil {
			t.Fatal(err)
		}
	}
	err := sup.Serve(context.Background())
	if !errors.Is(err, supervisor.ErrEscalated) {
		t.Fatalf("Serve = %v, want escalation", err)
	}
	counts := map[int]int{}
	for _, e := range queued {
		testkit.Recv(t, e.Done(), "every queued envelope to be finished")
		counts[e.Status]++
	}
	if counts[http.StatusBadGateway] != 3 || counts[http.StatusServiceUnavailable] != 5 {
		t.Fatalf("statuses %v; want 3 × 502 (one per failure) and the rest 503", counts)
	}
}

package stages_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"spooky/envelope"
	"spooky/stages"
	"spooky/supervisor"
)

// pipeStage is a stage as the daemon runs one: a Pipe under a supervisor.
type pipeStage struct {
	pipe *stages.Pipe
	h    stages.Handler
}

func (s pipeStage) Serve(ctx context.Context) error { return s.pipe.Run(ctx, s.h) }

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
	sup.Add(supervisor.Spec{Name: "stage", Service: pipeStage{stages.NewPipe(mb, 1), h}, Backoff: 20 * time.Millisecond})
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
	t.Cleanup(func() { cancel(); recv(t, done, "the supervisor to stop") })

	for i, e := range queued {
		recv(t, e.Done(), "every queued envelope to be finished")
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

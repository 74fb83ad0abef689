package stages_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"spooky/config"
	"spooky/envelope"
	"spooky/stages"
)

// TestHandOnToAStoppedStageFinishes: once a stage has stopped for good and
// swept its mailbox, an envelope handed to it later is finished with 503
// at once instead of waiting in a mailbox nobody reads.
func TestHandOnToAStoppedStageFinishes(t *testing.T) {
	es := newEnvs(t)
	w := stages.NewWorkers(stages.NewMailbox(config.Stage{Queue: 4}), 1)
	queued := es.get(context.Background())
	stages.HandOn(w.Inbox, queued)
	w.Stopped()
	late := es.get(context.Background())
	stages.HandOn(w.Inbox, late)
	for name, e := range map[string]*envelope.Envelope{"queued before the sweep": queued, "handed on after it": late} {
		if !e.Finished() || e.Status != http.StatusServiceUnavailable || !errors.Is(e.Err, stages.ErrStopped) {
			t.Errorf("envelope %s: finished %v with %d, %v; want 503 %v", name, e.Finished(), e.Status, e.Err, stages.ErrStopped)
		}
	}
}

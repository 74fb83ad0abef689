package listener

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"spooky/envelope"
	"spooky/stages"
	"spooky/upstream"
)

// TestRelayPanicIsContainedToItsRequest: a relay that panics is logged once
// and settles its request as a 502 whose try ends, instead of ending the
// process or leaking the endpoint's in-flight count.
func TestRelayPanicIsContainedToItsRequest(t *testing.T) {
	var logged strings.Builder
	l := &Listener{log: slog.New(slog.NewTextHandler(&logged, nil))}
	ep := upstream.NewEndpoint("10.0.0.1:80", 1, 0, 0)
	e := envelope.Get()
	defer e.Release()
	e.Ctx, e.Writer = context.Background(), httptest.NewRecorder()
	e.BeginTry(ep)
	e.Stream(func() (int, error) { panic("relay bug") })
	<-e.Done()
	l.relay(e)
	if e.Status != http.StatusBadGateway || !errors.Is(e.Err, stages.ErrStagePanic) {
		t.Fatalf("settled %d, %v; want 502 %v", e.Status, e.Err, stages.ErrStagePanic)
	}
	if ep.InFlight() != 0 {
		t.Fatalf("%d in flight after the relay panicked", ep.InFlight())
	}
	if n := strings.Count(logged.String(), "panic in response relay"); n != 1 {
		t.Fatalf("logged %d times:\n%s", n, logged.String())
	}
}

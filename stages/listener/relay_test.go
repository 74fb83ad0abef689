package listener

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"spooky/config"
	"spooky/envelope"
	"spooky/internal/testkit"
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
	e.Stream(panickingRelay{})
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

// TestAStuckStageDoesNotHoldTheHandlerForever: an envelope that no stage
// finishes, whose client has gone away, is abandoned after the grace: the
// request's goroutine ends, and what the stage writes later goes nowhere.
func TestAStuckStageDoesNotHoldTheHandlerForever(t *testing.T) {
	router := stages.NewMailbox(config.Stage{Workers: 1, Queue: 16})
	held := make(chan *envelope.Envelope, 1)
	go func() {
		msg, err := router.Receive(t.Context())
		if err == nil {
			held <- msg.Data // and never finished: a stuck stage
		}
	}()
	var logged syncLog
	l, err := New(listenConfig("127.0.0.1:0"), router, &recorder{}, slog.New(slog.NewTextHandler(&logged, nil)))
	if err != nil {
		t.Fatal(err)
	}
	l.unfinishedGrace = 10 * time.Millisecond
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- l.Serve(ctx) }()
	t.Cleanup(func() {
		stop()
		<-served
		l.Close()
	})

	reqCtx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(reqCtx, http.MethodGet, "https://"+l.Addr().String()+"/", nil)
	failed := make(chan error, 1)
	go func() {
		_, err := client(t).Do(req)
		failed <- err
	}()
	e := testkit.Recv(t, held, "the stuck stage to hold the request")
	cancel()
	if err := testkit.Recv(t, failed, "the client to give up"); err == nil {
		t.Fatal("the client got an answer from a stuck stage")
	}
	testkit.WaitFor(t, "the handler to stop waiting", func() bool { return l.Inspect().InFlight == 0 })
	if !strings.Contains(logged.String(), "not finished within the grace") {
		t.Fatalf("log:\n%s", logged.String())
	}
	// The stage wakes up at last: its answer goes nowhere, and nothing
	// panics.
	e.Finish(http.StatusOK, nil)
	if _, err := e.Writer.Write([]byte("late")); err == nil {
		t.Fatal("a write to an abandoned request succeeded")
	}
}

// syncLog is a log destination safe for concurrent use.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncLog) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// panickingRelay is a relay with a bug.
type panickingRelay struct{}

func (panickingRelay) Relay(*envelope.Envelope) (int, error) { panic("relay bug") }

package balancer

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"spooky/config"
	"spooky/envelope"
	"spooky/stages"
	"spooky/upstream"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func testConfig(endpoints ...string) *config.Config {
	u := &config.Upstream{Name: "app", Policy: "round_robin", Outlier: config.Outlier{ConsecutiveFailures: 5, BaseEjection: time.Second, MaxEjectionPercent: 50}}
	for _, a := range endpoints {
		u.Endpoints = append(u.Endpoints, config.Endpoint{Address: a, Weight: 1})
	}
	return &config.Config{
		Stages:        config.Stages{Balancer: config.Stage{Workers: 1, Queue: 8}},
		Upstreams:     map[string]*config.Upstream{"app": u},
		UpstreamNames: []string{"app"},
		Routes:        []config.Route{{Upstream: "app"}},
	}
}

func newBalancer(t *testing.T, cfg *config.Config, prober Prober) (*Balancer, *stages.Mailbox) {
	t.Helper()
	in, out := stages.NewMailbox(cfg.Stages.Balancer), stages.NewMailbox(cfg.Stages.Balancer)
	b, err := New(cfg, in, out, prober, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return b, out
}

// pick sends one envelope through Handle and returns the endpoint chosen.
func pick(t *testing.T, b *Balancer, out *stages.Mailbox, cfg *config.Config, tried uint64) string {
	t.Helper()
	e := envelope.Get()
	e.Ctx, e.Route, e.Tried = context.Background(), &cfg.Routes[0], tried
	e.Request = httptest.NewRequest("GET", "/", nil)
	b.Handle(e)
	msg, _ := out.Receive(context.Background())
	addr := msg.Data.Endpoint.Address
	e.EndTry(time.Now().UnixNano(), time.Millisecond, false)
	e.Finish(200, nil)
	<-e.Done()
	e.Release()
	return addr
}

func TestHandleAnnotatesAndForwards(t *testing.T) {
	cfg := testConfig("10.0.0.1:80", "10.0.0.2:80")
	b, out := newBalancer(t, cfg, nil)
	for _, want := range []string{"10.0.0.1:80", "10.0.0.2:80"} {
		if got := pick(t, b, out, cfg, 0); got != want {
			t.Fatalf("picked %q, want %q", got, want)
		}
	}
}

func TestRetryAvoidsTheEndpointThatFailed(t *testing.T) {
	cfg := testConfig("a:1", "b:1")
	b, out := newBalancer(t, cfg, nil)
	for range 4 {
		if got := pick(t, b, out, cfg, 1); got != "b:1" {
			t.Fatalf("retry went to %q", got)
		}
	}
	// With every endpoint tried, a retry may go back rather than fail.
	if got := pick(t, b, out, cfg, 3); got == "" {
		t.Fatal("no endpoint")
	}
}

// TestReconfigureKeepsStateByAddress: an address that stays in its group
// keeps its live state across a reload wherever it now stands in the list:
// a dead endpoint stays unhealthy when the one before it is removed, and
// requests in flight end on the same count.
func TestReconfigureKeepsStateByAddress(t *testing.T) {
	b, _ := newBalancer(t, testConfig("a:1", "b:1"), nil)
	dead := b.current.Load().groups["app"].live.Endpoints[1]
	for range 3 {
		dead.ReportHealth(false, 2, 3)
	}
	dead.Begin()
	for _, addrs := range [][]string{{"a:1", "b:1", "c:1"}, {"b:1", "c:1"}, {"c:1", "b:1"}} {
		b.Control(stages.Reconfigure{Config: testConfig(addrs...)})
		eps := b.current.Load().groups["app"].live.Endpoints
		var now *upstream.Endpoint
		for i, ep := range eps {
			if ep.Index != i {
				t.Fatalf("%v: endpoint %s numbered %d at place %d", addrs, ep.Address, ep.Index, i)
			}
			if ep.Address == "b:1" {
				now = ep
			}
		}
		if now == nil || now.Healthy() || now.InFlight() != 1 {
			t.Fatalf("%v: b:1 is %+v; want it still unhealthy with its request in flight", addrs, now)
		}
	}
	dead.End(time.Now().UnixNano(), time.Millisecond, false)
	for _, ep := range b.current.Load().groups["app"].live.Endpoints {
		if ep.InFlight() != 0 {
			t.Fatalf("%s: %d in flight after the request ended on the old endpoint", ep.Address, ep.InFlight())
		}
	}
}

func TestNoEndpointNamesTheGroup(t *testing.T) {
	cfg := testConfig("a:1")
	cfg.Routes[0].Upstream = "gone"
	b, _ := newBalancer(t, cfg, nil)
	e := envelope.Get()
	rec := httptest.NewRecorder()
	e.Ctx, e.Route, e.Writer = context.Background(), &cfg.Routes[0], rec
	b.Handle(e)
	<-e.Done()
	if rec.Code != 503 || rec.Body.String() != "503 Service Unavailable: no endpoint available in upstream group \"gone\"\n" {
		t.Fatalf("got %d %q", rec.Code, rec.Body)
	}
	e.Release()
}

func TestBreakerSkipsAFullEndpointAndRefusesWhenAllAre(t *testing.T) {
	cfg := testConfig("a:1", "b:1")
	cfg.Upstreams["app"].Limits = config.Limits{MaxRequests: 1}
	b, out := newBalancer(t, cfg, nil)
	eps := b.current.Load().groups["app"].live.Endpoints
	eps[0].Begin() // a:1 is full
	for range 3 {
		if got := pick(t, b, out, cfg, 0); got != "b:1" {
			t.Fatalf("picked %q past its breaker", got)
		}
	}
	eps[1].Begin()
	e := envelope.Get()
	rec := httptest.NewRecorder()
	e.Ctx, e.Route, e.Writer = context.Background(), &cfg.Routes[0], rec
	e.Request = httptest.NewRequest("GET", "/", nil)
	b.Handle(e)
	<-e.Done()
	e.Release()
	if rec.Code != 503 || b.Stats().BreakerRejects != 1 {
		t.Fatalf("got %d, %d breaker rejections", rec.Code, b.Stats().BreakerRejects)
	}
}

// fakeProber answers health checks from a table the test changes, and
// counts them.
type fakeProber struct {
	mu     sync.Mutex
	status map[string]int
	probes map[string]int
}

func newProber(status map[string]int) *fakeProber {
	return &fakeProber{status: status, probes: map[string]int{}}
}

func (f *fakeProber) Probe(_ context.Context, _, address, _ string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.probes[address]++
	return f.status[address], nil
}

func (f *fakeProber) set(address string, status int) {
	f.mu.Lock()
	f.status[address] = status
	f.mu.Unlock()
}

func (f *fakeProber) count(address string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.probes[address]
}

// TestHealthChecksTakeAnEndpointOutAndBringItBack runs in a bubble, where
// the check intervals pass on a fake clock: each step lets exactly one more
// check of a:1 happen and be counted, so the thresholds are seen to hold
// check by check.
func TestHealthChecksTakeAnEndpointOutAndBringItBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = 10 * time.Millisecond
		cfg := testConfig("a:1", "b:1")
		cfg.Upstreams["app"].Health = &config.Health{Path: "/healthz", Interval: interval, Timeout: time.Second, Healthy: 2, Unhealthy: 2, StatusMin: 200, StatusMax: 399}
		prober := newProber(map[string]int{"a:1": 200, "b:1": 200})
		b, _ := newBalancer(t, cfg, prober)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- b.Serve(ctx) }()
		defer func() { cancel(); <-done }()
		synctest.Wait() // the checkers wait for their first turn

		a := b.current.Load().groups["app"].live.Endpoints[0]
		// check lets the fake clock run until a:1 has had one more check,
		// and waits until its result is recorded.
		check := func() {
			t.Helper()
			want := prober.count("a:1") + 1
			for elapsed := time.Duration(0); prober.count("a:1") < want; elapsed += time.Millisecond {
				if elapsed > 10*interval {
					t.Fatalf("no check of a:1 in %v of the bubble's clock; one is due every %v", elapsed, interval)
				}
				time.Sleep(time.Millisecond) // the bubble's clock: returns once every goroutine waits
				synctest.Wait()
			}
		}
		for i, step := range []struct {
			status  int
			healthy bool
		}{
			{500, true}, // one failure is under the threshold
			{500, false},
			{204, false}, // one pass is under the threshold
			{204, true},
		} {
			prober.set("a:1", step.status)
			check()
			if a.Healthy() != step.healthy {
				t.Fatalf("after check %d (status %d): healthy %v, want %v", i+1, step.status, a.Healthy(), step.healthy)
			}
		}
		if n := b.Stats().HealthFlips; n != 2 {
			t.Fatalf("%d health transitions, want 2", n)
		}
	})
}

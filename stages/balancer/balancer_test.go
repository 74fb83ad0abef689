package balancer

import (
	"context"
	"net/http/httptest"
	"testing"

	"spooky/config"
	"spooky/envelope"
	"spooky/stages"
)

func fixture(n int) []*Endpoint {
	eps := make([]*Endpoint, n)
	for i := range eps {
		eps[i] = &Endpoint{Address: string(rune('a' + i)), Weight: 1}
	}
	return eps
}

func TestRoundRobinTakesTurns(t *testing.T) {
	eps := fixture(3)
	var p RoundRobin
	var got string
	for range 6 {
		got += p.Pick(eps, nil).Address
	}
	if got != "abcabc" {
		t.Fatalf("picked %q", got)
	}
}

func TestRoundRobinPickAllocatesNothing(t *testing.T) {
	eps := fixture(3)
	var p RoundRobin
	if n := testing.AllocsPerRun(1000, func() { p.Pick(eps, nil) }); n != 0 {
		t.Fatalf("%v allocations per pick", n)
	}
}

func BenchmarkRoundRobinPick(b *testing.B) {
	eps := fixture(10)
	var p RoundRobin
	b.ReportAllocs()
	for b.Loop() {
		p.Pick(eps, nil)
	}
}

func testConfig(endpoints ...string) *config.Config {
	u := &config.Upstream{Name: "app", Policy: "round_robin"}
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

func TestHandleAnnotatesAndForwards(t *testing.T) {
	cfg := testConfig("10.0.0.1:80", "10.0.0.2:80")
	in, out := stages.NewMailbox(cfg.Stages.Balancer), stages.NewMailbox(cfg.Stages.Balancer)
	b, err := New(cfg, in, out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"10.0.0.1:80", "10.0.0.2:80"} {
		e := envelope.Get()
		e.Ctx, e.Route = context.Background(), &cfg.Routes[0]
		b.Handle(e)
		msg, _ := out.Receive(context.Background())
		if msg.Data.Endpoint != want || msg.Data.Attempt != 1 {
			t.Fatalf("endpoint %q attempt %d, want %q", msg.Data.Endpoint, msg.Data.Attempt, want)
		}
		e.Finish(200, nil)
		<-e.Done()
		e.Release()
	}
}

func TestReconfigureKeepsTheRotationOfAGroupThatStays(t *testing.T) {
	cfg := testConfig("a:1", "b:1")
	in, out := stages.NewMailbox(cfg.Stages.Balancer), stages.NewMailbox(cfg.Stages.Balancer)
	b, _ := New(cfg, in, out)
	before := (*b.current.Load())["app"].policy
	b.Control(stages.Reconfigure{Config: testConfig("a:1", "b:1", "c:1")})
	g := (*b.current.Load())["app"]
	if g.policy != before || len(g.endpoints) != 3 {
		t.Fatalf("policy kept: %v, endpoints %d", g.policy == before, len(g.endpoints))
	}
}

func TestNoEndpointNamesTheGroup(t *testing.T) {
	cfg := testConfig("a:1")
	cfg.Routes[0].Upstream = "gone"
	in, out := stages.NewMailbox(cfg.Stages.Balancer), stages.NewMailbox(cfg.Stages.Balancer)
	b, _ := New(cfg, in, out)
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

package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"spooky/config"
	"spooky/envelope"
	"spooky/stages"
	"spooky/stages/balancer"
	"spooky/stages/router"
)

// terminal stands in for the pool: it ends the try and finishes the
// envelope, so the benchmark measures the pipeline's own hops.
type terminal struct{}

func (terminal) Handle(e *envelope.Envelope) {
	e.EndTry(0, 0, false)
	e.Finish(http.StatusOK, nil)
}
func (terminal) Control(stages.Control) {}

// BenchmarkPipeline sends envelopes through the router and balancer stages,
// with their mailboxes and workers, to an in-memory end: the cost per
// request of spooky's own hops, without HTTP/3 or HTTP/2.
func BenchmarkPipeline(b *testing.B) {
	cfg := &config.Config{
		Stages: config.Stages{
			Router:   config.Stage{Workers: 2, Queue: 1024},
			Balancer: config.Stage{Workers: 2, Queue: 1024},
			Pool:     config.Stage{Workers: 64, Queue: 1024},
		},
		Routes:        []config.Route{{Name: "all", Match: config.Match{Host: "*", PathPrefix: "/"}, Upstream: "app", Timeout: time.Minute}},
		Upstreams:     map[string]*config.Upstream{"app": {Name: "app", Policy: "round_robin", Endpoints: []config.Endpoint{{Address: "127.0.0.1:1", Weight: 1}, {Address: "127.0.0.1:2", Weight: 1}}}},
		UpstreamNames: []string{"app"},
	}
	routerBox, balancerBox, poolBox := stages.NewMailbox(cfg.Stages.Router), stages.NewMailbox(cfg.Stages.Balancer), stages.NewMailbox(cfg.Stages.Pool)
	r := router.New(cfg, routerBox, balancerBox)
	bal, err := balancer.New(cfg, balancerBox, poolBox, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	end := stages.NewWorkers(poolBox, cfg.Stages.Pool.Workers)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.Serve(ctx) })
	wg.Go(func() { bal.Serve(ctx) })
	wg.Go(func() { end.Run(ctx, terminal{}) })
	b.Cleanup(func() { cancel(); wg.Wait() })

	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := httptest.NewRequest(http.MethodGet, "https://example.com/", nil)
		w := httptest.NewRecorder()
		for pb.Next() {
			e := envelope.Get()
			e.Ctx, e.Request, e.Writer = context.Background(), req, w
			e.ClientAddr, e.Arrived = "192.0.2.1:5000", time.Now()
			if err := routerBox.Send(e.Ctx, e); err != nil {
				b.Fatal(err)
			}
			<-e.Done()
			e.Release()
			delete(req.Header, "X-Forwarded-For")
			delete(req.Header, "X-Forwarded-Proto")
			delete(req.Header, "Via")
		}
	})
}

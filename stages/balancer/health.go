package balancer

import (
	"context"
	"math/rand/v2"
	"time"

	"spooky/config"
	"spooky/supervisor"
	"spooky/upstream"
)

// Prober sends one health check to an endpoint of a group and returns the
// response status. The pool implements it over the same warm HTTP/2
// connections that carry requests, so a check tests the path traffic takes.
type Prober interface {
	Probe(ctx context.Context, group, address, path string) (int, error)
}

// restartHealthChecks stops the running checkers and, while Serve runs,
// starts one per endpoint of every group that has health checks in the
// current config.
func (b *Balancer) restartHealthChecks() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopHealth != nil {
		b.stopHealth()
		b.stopHealth = nil
	}
	if b.serveCtx == nil || b.prober == nil {
		return
	}
	ctx, cancel := context.WithCancel(b.serveCtx)
	b.stopHealth = cancel
	for _, g := range b.current.Load().groups {
		if g.health == nil {
			continue
		}
		for _, ep := range g.live.Endpoints {
			b.healthGroup.Go(func() { b.check(ctx, g.live.Name, ep, g.health) })
		}
	}
}

// check probes ep at once and then every interval, jittered by ±10% so
// that the checks of a large group do not arrive at its endpoints in step.
func (b *Balancer) check(ctx context.Context, group string, ep *upstream.Endpoint, h *config.Health) {
	wait := time.Duration(rand.Float64() * 0.1 * float64(h.Interval))
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = h.Interval + time.Duration((rand.Float64()*0.2-0.1)*float64(h.Interval))
		pctx, cancel := context.WithTimeout(ctx, h.Timeout)
		var status int
		var err error
		// A probe that panics is a failed check, not the end of the
		// checks.
		supervisor.Guard(b.log, "health check", func() {
			status, err = b.prober.Probe(pctx, group, ep.Address, h.Path)
		}, func(perr error) { err = perr })()
		cancel()
		if ctx.Err() != nil {
			return
		}
		ok := err == nil && status >= h.StatusMin && status <= h.StatusMax
		if ep.ReportHealth(ok, h.Healthy, h.Unhealthy) {
			b.healthFlips.Add(1)
			b.log.Warn("upstream health changed", "group", group, "endpoint", ep.Address, "healthy", ok, "status", status, "err", err)
		}
	}
}

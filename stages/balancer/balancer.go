// Package balancer owns endpoint selection: one policy per upstream group
// picks the endpoint for each envelope (and again for each retry, avoiding
// the endpoints that failed it), skipping endpoints that are unhealthy,
// ejected or at their circuit-breaker limit; and active health checks.
package balancer

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"spooky/config"
	"spooky/envelope"
	"spooky/stages"
	"spooky/upstream"
)

// group is one upstream group as the balancer runs it.
type group struct {
	live   *upstream.Group
	policy Policy
	hashOn *config.HashOn // nil unless the policy hashes a request key
	health *config.Health
}

// state is an immutable set of groups, swapped whole on reconfigure.
type state struct {
	config *config.Config
	groups map[string]*group
}

// Balancer is the balancing stage.
type Balancer struct {
	*stages.Workers
	pool    *stages.Mailbox
	prober  Prober
	log     *slog.Logger
	current atomic.Pointer[state]

	// Health checkers run under Serve's context; each config generation
	// gets its own, cancelled when the next one is applied.
	mu          sync.Mutex
	serveCtx    context.Context
	stopHealth  context.CancelFunc
	healthGroup sync.WaitGroup

	breakerRejects atomic.Uint64
	healthFlips    atomic.Uint64
}

// New makes a balancer reading inbox and handing on to pool; prober sends
// the active health checks.
func New(cfg *config.Config, inbox, pool *stages.Mailbox, prober Prober, log *slog.Logger) (*Balancer, error) {
	b := &Balancer{Workers: stages.NewWorkers(inbox, cfg.Stages.Balancer.Workers), pool: pool, prober: prober, log: log}
	if err := b.apply(cfg); err != nil {
		return nil, err
	}
	return b, nil
}

// apply builds the groups of cfg. An address that stays in its group keeps
// its live state (in-flight count, latency, health, ejection) wherever it
// now stands in the list and whatever its new weight or limits. A policy
// is rebuilt, since ring and table policies depend on the endpoint set.
func (b *Balancer) apply(cfg *config.Config) error {
	old := b.current.Load()
	next := &state{config: cfg, groups: map[string]*group{}}
	for _, name := range cfg.UpstreamNames {
		u := cfg.Upstreams[name]
		eps := make([]*upstream.Endpoint, len(u.Endpoints))
		limit := int64(0)
		if u.Limits.MaxRequests > 0 {
			limit = int64(u.Limits.MaxRequests + u.Limits.MaxPending)
		}
		prev := old.endpoints(name)
		for i, ep := range u.Endpoints {
			if p, ok := prev[ep.Address]; ok {
				eps[i] = upstream.CarryOver(p, ep.Weight, ep.Priority, limit)
				continue
			}
			eps[i] = upstream.NewEndpoint(ep.Address, ep.Weight, ep.Priority, limit)
		}
		live := upstream.NewGroup(name, u.Outlier, eps)
		live.RetryBudget = u.RetryBudget
		policy, err := NewPolicy(u.Policy, eps)
		if err != nil {
			return err
		}
		g := &group{live: live, policy: policy, health: u.Health}
		if u.Policy == "ring_hash" || u.Policy == "maglev" {
			g.hashOn = &u.HashOn
		}
		next.groups[name] = g
	}
	b.current.Store(next)
	b.restartHealthChecks()
	return nil
}

// endpoints are the named group's endpoints by address; none when s or
// the group is new.
func (s *state) endpoints(group string) map[string]*upstream.Endpoint {
	if s == nil || s.groups[group] == nil {
		return nil
	}
	eps := s.groups[group].live.Endpoints
	m := make(map[string]*upstream.Endpoint, len(eps))
	for _, ep := range eps {
		m[ep.Address] = ep
	}
	return m
}

// Serve runs the workers and health checks until ctx ends.
func (b *Balancer) Serve(ctx context.Context) error {
	b.mu.Lock()
	b.serveCtx = ctx
	b.mu.Unlock()
	b.restartHealthChecks()
	err := b.Run(ctx, b)
	b.mu.Lock()
	b.serveCtx = nil
	b.mu.Unlock()
	b.restartHealthChecks() // stops them: no serving context
	b.healthGroup.Wait()
	return err
}

// Control applies a new config.
func (b *Balancer) Control(c stages.Control) {
	if rc, ok := c.(stages.Reconfigure); ok {
		// The config was validated in full, so every policy name is known.
		if err := b.apply(rc.Config); err != nil {
			panic(err)
		}
		b.Tune(rc.Config.Stages.Balancer)
	}
}

// NoEndpointError names the group that had no endpoint to offer.
type NoEndpointError struct{ Group string }

func (e *NoEndpointError) Error() string {
	return fmt.Sprintf("no endpoint available in upstream group %q", e.Group)
}

// Handle picks an endpoint for e and hands it to the pool.
func (b *Balancer) Handle(e *envelope.Envelope) {
	s := b.current.Load()
	g := s.groups[e.Route.Upstream]
	if g == nil {
		e.Finish(http.StatusServiceUnavailable, &NoEndpointError{Group: e.Route.Upstream})
		return
	}
	p := Pick{Now: time.Now().UnixNano(), Tried: e.Tried}
	if g.hashOn != nil {
		p.Key, p.HasKey = requestKey(*g.hashOn, e, s.config.TrustedProxies)
	}
	ep := g.policy.Pick(g.live.Endpoints, &p)
	if ep == nil && p.Tried != 0 {
		// Every endpoint not yet tried is out: a retry may go back to
		// one that failed, rather than fail for want of a new one.
		p.Tried = 0
		ep = g.policy.Pick(g.live.Endpoints, &p)
	}
	if ep == nil {
		if b.atLimit(g) {
			b.breakerRejects.Add(1)
		}
		e.Finish(http.StatusServiceUnavailable, &NoEndpointError{Group: g.live.Name})
		return
	}
	e.BeginTry(ep)
	stages.HandOn(b.pool, e)
}

// atLimit reports whether any endpoint of g was left out by its breaker.
func (b *Balancer) atLimit(g *group) bool {
	for _, ep := range g.live.Endpoints {
		if ep.AtLimit() {
			return true
		}
	}
	return false
}

// Stats is the balancer's view of every endpoint, for /debug/upstreams and
// metrics.
type Stats struct {
	Endpoints      []upstream.Stats
	Retries        map[string]uint64 // by group
	BreakerRejects uint64
	HealthFlips    uint64
}

// Stats reads every endpoint's live state.
func (b *Balancer) Stats() Stats {
	s := b.current.Load()
	now := time.Now().UnixNano()
	out := Stats{Retries: map[string]uint64{}, BreakerRejects: b.breakerRejects.Load(), HealthFlips: b.healthFlips.Load()}
	for _, name := range s.config.UpstreamNames {
		g := s.groups[name]
		out.Retries[name] = g.live.Retries()
		for _, ep := range g.live.Endpoints {
			out.Endpoints = append(out.Endpoints, ep.Stats(now))
		}
	}
	return out
}

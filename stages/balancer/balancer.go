// Package balancer owns endpoint selection: one policy per upstream group
// picks the endpoint for each envelope, which then goes to the pool.
package balancer

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"

	"spooky/config"
	"spooky/envelope"
	"spooky/stages"
)

// Endpoint is one backend as the balancer sees it.
type Endpoint struct {
	Address string
	Weight  int
}

// Policy picks an endpoint from a non-empty list. Implementations are safe
// for concurrent use and allocate nothing per pick.
type Policy interface {
	Pick(endpoints []*Endpoint, e *envelope.Envelope) *Endpoint
}

// RoundRobin hands out endpoints in turn.
type RoundRobin struct{ next atomic.Uint64 }

// Pick returns the next endpoint in turn.
func (p *RoundRobin) Pick(endpoints []*Endpoint, _ *envelope.Envelope) *Endpoint {
	n := p.next.Add(1) - 1
	return endpoints[n%uint64(len(endpoints))]
}

// NewPolicy returns a fresh policy by its config name.
func NewPolicy(name string) (Policy, error) {
	switch name {
	case "round_robin":
		return &RoundRobin{}, nil
	}
	return nil, fmt.Errorf("balancer: unknown policy %q", name)
}

// group is one upstream group's endpoints and policy.
type group struct {
	name      string
	endpoints []*Endpoint
	policy    Policy
}

// groups is an immutable set, swapped whole on reconfigure.
type groups map[string]*group

// Balancer is the balancing stage.
type Balancer struct {
	inbox   *stages.Mailbox
	pool    *stages.Mailbox
	config  atomic.Pointer[config.Config]
	current atomic.Pointer[groups]
}

// New makes a balancer reading inbox and handing on to pool.
func New(cfg *config.Config, inbox, pool *stages.Mailbox) (*Balancer, error) {
	b := &Balancer{inbox: inbox, pool: pool}
	if err := b.apply(cfg); err != nil {
		return nil, err
	}
	return b, nil
}

// apply builds the groups of cfg. A group whose policy did not change keeps
// its policy state, so a reload does not restart every rotation.
func (b *Balancer) apply(cfg *config.Config) error {
	old := b.current.Load()
	next := groups{}
	for _, name := range cfg.UpstreamNames {
		u := cfg.Upstreams[name]
		g := &group{name: name}
		for _, ep := range u.Endpoints {
			g.endpoints = append(g.endpoints, &Endpoint{Address: ep.Address, Weight: ep.Weight})
		}
		if old != nil && (*old)[name] != nil && b.config.Load().Upstreams[name].Policy == u.Policy {
			g.policy = (*old)[name].policy
		} else {
			p, err := NewPolicy(u.Policy)
			if err != nil {
				return err
			}
			g.policy = p
		}
		next[name] = g
	}
	b.config.Store(cfg)
	b.current.Store(&next)
	return nil
}

// Serve runs the workers until ctx ends.
func (b *Balancer) Serve(ctx context.Context) error {
	return stages.RunWorkers(ctx, b.config.Load().Stages.Balancer.Workers, b.inbox, b)
}

// Inspect reports the worker count and mailbox.
func (b *Balancer) Inspect() stages.Info {
	st := b.inbox.Stats()
	return stages.Info{Workers: b.config.Load().Stages.Balancer.Workers, Mailbox: &st}
}

// Control applies a new config.
func (b *Balancer) Control(c stages.Control) {
	if rc, ok := c.(stages.Reconfigure); ok {
		// The config was validated in full, so every policy name is known.
		if err := b.apply(rc.Config); err != nil {
			panic(err)
		}
	}
}

// NoEndpointError names the group that had no endpoint to offer.
type NoEndpointError struct{ Group string }

func (e *NoEndpointError) Error() string {
	return fmt.Sprintf("no endpoint available in upstream group %q", e.Group)
}

// Handle picks an endpoint for e and hands it to the pool.
func (b *Balancer) Handle(e *envelope.Envelope) {
	g := (*b.current.Load())[e.Route.Upstream]
	if g == nil || len(g.endpoints) == 0 {
		e.Finish(http.StatusServiceUnavailable, &NoEndpointError{Group: e.Route.Upstream})
		return
	}
	e.Endpoint = g.policy.Pick(g.endpoints, e).Address
	e.Attempt++
	stages.Forward(b.pool, e)
}

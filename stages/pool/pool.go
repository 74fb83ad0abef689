// Package pool owns the last stage of the pipeline: it keeps warm HTTP/2
// connections to every upstream endpoint, forwards each envelope's request
// over one of them and streams the response back to the client.
package pool

import (
	"context"
	"iter"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"spooky/config"
	"spooky/stages"
	"spooky/stages/pool/h2"
	"spooky/supervisor"
)

// Pool is the stage that forwards requests to their chosen endpoint over
// HTTP/2 (RFC 9113) and streams the responses back. It holds the
// connections of every endpoint in the configuration; they outlive restarts
// of Serve and end with Close.
type Pool struct {
	*stages.Workers
	balancer *stages.Mailbox // where retries go
	log      *slog.Logger
	current  atomic.Pointer[snapshot]

	// ctx ends on Close. It bounds every dial and graceful shutdown, which
	// run in goroutines counted by wg.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// draining holds endpoints a reload removed, by drainKey, while they
	// still take requests for retireAfter (default defaultRetireAfter).
	draining    sync.Map
	retireAfter time.Duration

	// mu serialises reconfiguring and closing.
	mu     sync.Mutex
	closed bool
}

// snapshot is one configuration and the groups built from it. It is never
// changed; a reload swaps in a new one.
type snapshot struct {
	cfg    *config.Config
	groups map[string]*group
}

// all yields every endpoint with the connector of its group.
func (s *snapshot) all() iter.Seq2[*connector, *endpointConns] {
	return func(yield func(*connector, *endpointConns) bool) {
		for _, g := range s.groups {
			for _, ec := range g.endpoints {
				if !yield(g.connector, ec) {
					return
				}
			}
		}
	}
}

// group is one upstream group: how to connect, and the connections of each
// endpoint by address.
type group struct {
	connector *connector
	endpoints map[string]*endpointConns
}

// EndpointStats is one endpoint as the debug page shows it.
type EndpointStats struct {
	Group       string `json:"group"`
	Address     string `json:"address"`
	Conns       int    `json:"conns"`         // open connections
	Streams     int    `json:"streams"`       // active streams over all of them
	NoSlotDials uint64 `json:"no_slot_dials"` // dials whose connection offered no stream slot
}

// New builds the pool's groups from cfg; it reads mb and sends retries to
// balancer, and logs upstream failures to log. It reads the CA files of h2
// groups and fails if one cannot be read; it starts nothing.
func New(cfg *config.Config, mb, balancer *stages.Mailbox, log *slog.Logger) (*Pool, error) {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pool{Workers: stages.NewWorkers(mb, cfg.Stages.Pool.Workers), balancer: balancer, log: log,
		ctx: ctx, cancel: cancel, retireAfter: defaultRetireAfter}
	if err := p.apply(cfg); err != nil {
		cancel()
		return nil, err
	}
	return p, nil
}

// Serve warms one connection to every endpoint in the background, then runs
// the workers until ctx ends. It returns once the workers have stopped and
// every dial and graceful shutdown it caused has ended; a dial lasts at most
// its group's connect timeout.
func (p *Pool) Serve(ctx context.Context) error {
	p.warm()
	var sweeper sync.WaitGroup
	sweepCtx, stopSweeping := context.WithCancel(ctx)
	sweeper.Go(supervisor.Guard(p.log, "idle connection sweep", func() { p.sweepIdle(sweepCtx) }, nil))
	err := p.Run(ctx, p)
	stopSweeping()
	sweeper.Wait()
	p.wg.Wait()
	return err
}

// idleSweepEvery is how often surplus idle connections are looked for; a
// connection may so outlive its group's idle_timeout by this much.
const idleSweepEvery = time.Second

// sweepIdle closes, until ctx ends, every endpoint's surplus connections
// that have been idle for their group's idle_timeout.
func (p *Pool) sweepIdle(ctx context.Context) {
	t := time.NewTicker(idleSweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for c, ec := range p.current.Load().all() {
			ec.closeIdle(c.idleTimeout, p.shutdown)
		}
	}
}

// Control applies a Reconfigure: groups and endpoints that remain keep their
// connections, and connections to endpoints that are gone are shut down
// gracefully, letting their streams finish.
func (p *Pool) Control(c stages.Control) {
	switch c := c.(type) {
	case stages.Reconfigure:
		// The config was validated in full, CA files included, so this
		// fails only if a file changed since.
		if err := p.apply(c.Config); err != nil {
			p.log.Error("pool: reconfigure failed; keeping the previous upstreams", "err", err)
			return
		}
		p.warm()
		p.Tune(c.Config.Stages.Pool)
	}
}

// Close closes every upstream connection at once and waits for the pool's
// goroutines. It is called at daemon exit, after Serve has returned.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	snap := p.current.Load()
	p.mu.Unlock()

	p.cancel()
	for _, ec := range snap.all() {
		closeNow(ec)
	}
	p.draining.Range(func(addr, d any) bool {
		p.draining.Delete(addr)
		closeNow(d.(*drainingEndpoint).conns)
		return true
	})
	p.wg.Wait()
}

// Endpoints reports every configured endpoint, by group in name order and
// then in config order.
func (p *Pool) Endpoints() []EndpointStats {
	snap := p.current.Load()
	var out []EndpointStats
	for _, name := range snap.cfg.UpstreamNames {
		g := snap.groups[name]
		for _, ep := range snap.cfg.Upstreams[name].Endpoints {
			ec := g.endpoints[ep.Address]
			conns, streams := ec.stats()
			out = append(out, EndpointStats{
				Group:       name,
				Address:     ep.Address,
				Conns:       conns,
				Streams:     streams,
				NoSlotDials: ec.noSlotDials.Load(),
			})
		}
	}
	return out
}

// apply builds the groups of cfg and swaps them in. Nothing changes if it
// fails. An endpoint keeps its connections when its group's protocol and
// TLS settings are unchanged; the others are shut down gracefully.
func (p *Pool) apply(cfg *config.Config) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}

	var prev *config.Config
	old := p.current.Load()
	if old != nil {
		prev = old.cfg
	}
	// Every connector is made before anything changes, so that a failure
	// leaves the pool as it was.
	connectors := make(map[string]*connector, len(cfg.UpstreamNames))
	for _, name := range cfg.UpstreamNames {
		c, err := newConnector(cfg.Upstreams[name])
		if err != nil {
			return err
		}
		connectors[name] = c
	}
	next := &snapshot{cfg: cfg, groups: make(map[string]*group, len(cfg.UpstreamNames))}
	kept := map[*endpointConns]bool{}
	for _, name := range cfg.UpstreamNames {
		u := cfg.Upstreams[name]
		g := &group{connector: connectors[name], endpoints: make(map[string]*endpointConns, len(u.Endpoints))}
		var reuse map[string]*endpointConns
		if prev != nil && sameConnections(prev.Upstreams[name], u) {
			reuse = old.groups[name].endpoints
		}
		for _, ep := range u.Endpoints {
			ec := reuse[ep.Address]
			if ec == nil {
				ec = p.undrain(name, u, ep.Address)
			}
			if ec == nil {
				ec = newEndpointConns(p.ctx, &p.wg, ep.Address, p.log)
			}
			kept[ec] = true
			g.endpoints[ep.Address] = ec
		}
		next.groups[name] = g
	}
	p.current.Store(next)

	if old != nil {
		for name, g := range old.groups {
			for _, ec := range g.endpoints {
				if !kept[ec] {
					p.drain(name, prev.Upstreams[name], g.connector, ec)
				}
			}
		}
	}
	return nil
}

// defaultRetireAfter is how long an endpoint removed by a reload still
// takes new requests: the balancer applies a config after the pool does, so
// for a moment it may still pick the endpoint, and envelopes picked before
// may be queued here. After it, the endpoint's connections are retired.
const defaultRetireAfter = 3 * time.Second

// drainingEndpoint is a removed endpoint that still takes requests for
// retireAfter.
type drainingEndpoint struct {
	connector *connector
	conns     *endpointConns
	upstream  *config.Upstream // the group's config when it was removed
}

// undrain takes back the connections of an endpoint that a reload removed
// moments ago and this one adds again (configs flipping back and forth),
// if they suit the group's new settings; retiring them and dialing anew
// would fail the requests on them for nothing.
func (p *Pool) undrain(group string, u *config.Upstream, address string) *endpointConns {
	key := drainKey{group, address}
	v, ok := p.draining.Load(key)
	if !ok || !sameConnections(v.(*drainingEndpoint).upstream, u) || !p.draining.CompareAndDelete(key, v) {
		return nil
	}
	return v.(*drainingEndpoint).conns
}

// drain keeps ec, of group, reachable for retireAfter, then retires it. The
// timer is not waited for by Serve; Close retires whatever is still
// draining.
func (p *Pool) drain(group string, u *config.Upstream, c *connector, ec *endpointConns) {
	d := &drainingEndpoint{connector: c, conns: ec, upstream: u}
	key := drainKey{group, ec.addr}
	if prev, ok := p.draining.Swap(key, d); ok {
		// Removed, added back and removed again within retireAfter:
		// the earlier one goes now.
		p.retire(prev.(*drainingEndpoint).conns)
	}
	time.AfterFunc(p.retireAfter, supervisor.Guard(p.log, "endpoint retirement", func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.draining.CompareAndDelete(key, d) && !p.closed {
			p.retire(ec)
		}
	}, nil))
}

// drainKey names a draining endpoint: the same address may be in several
// groups, each with its own connector.
type drainKey struct{ group, address string }

// lookup finds the connections for address in group, or in the endpoints
// a reload removed moments ago.
func (p *Pool) lookup(group, address string) (*connector, *endpointConns) {
	if g := p.current.Load().groups[group]; g != nil {
		if ec := g.endpoints[address]; ec != nil {
			return g.connector, ec
		}
	}
	if d, ok := p.draining.Load(drainKey{group, address}); ok {
		d := d.(*drainingEndpoint)
		return d.connector, d.conns
	}
	return nil, nil
}

// sameConnections reports whether connections made for upstream a are good
// for b too.
func sameConnections(a, b *config.Upstream) bool {
	return a != nil && a.Protocol == b.Protocol && a.TLS == b.TLS
}

// retire shuts ec's connections down gracefully: each sends GOAWAY, lets its
// streams finish and then closes, or closes at once when the pool does.
func (p *Pool) retire(ec *endpointConns) {
	for _, c := range ec.detach() {
		p.shutdown(c)
	}
}

// shutdown shuts c down gracefully in the background: GOAWAY, its streams
// finish, then it closes, or closes at once when the pool does.
func (p *Pool) shutdown(c *h2.Conn) {
	p.wg.Go(supervisor.Guard(p.log, "connection shutdown", func() {
		if err := c.Shutdown(p.ctx); err != nil {
			c.Close()
		}
	}, func(error) { c.Close() }))
}

// closeNow closes ec's connections at once, streams and all.
func closeNow(ec *endpointConns) {
	for _, c := range ec.detach() {
		c.Close()
	}
}

// warm starts a dial to every endpoint that has no connection.
func (p *Pool) warm() {
	for c, ec := range p.current.Load().all() {
		ec.warm(c)
	}
}

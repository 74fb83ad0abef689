// Package upstream owns the live state of upstream endpoints: in-flight
// counts, latency EWMA, health, outlier ejection and circuit-breaker limits.
// The balancer reads it to pick; the pool writes it as exchanges end. All of
// it is lock-free atomics on the hot path, so reading an endpoint's state
// costs a pick nothing but a few loads.
package upstream

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"spooky/config"
)

// Group is the live state of one upstream group's endpoints.
type Group struct {
	Name        string
	Endpoints   []*Endpoint
	Outlier     config.Outlier
	RetryBudget config.RetryBudget

	mu      sync.Mutex // serialises ejection decisions, so MaxEjectionPercent holds
	retries atomic.Int64
	retried atomic.Uint64
}

// Endpoint is one backend in one configuration of its group: its place
// and settings, fixed for its life, and its live state, which outlives it.
// A reload makes a new Endpoint for every place; one whose address was in
// the group before carries that address's live state over (CarryOver),
// wherever it now stands in the list.
type Endpoint struct {
	Address  string
	Weight   int
	Priority int // fallback group, 0 first
	Index    int // position in its group, for retry exclusion masks; fixed
	// MaxRequests caps requests in flight; 0 means no cap.
	MaxRequests int64

	group atomic.Pointer[Group] // the group it was numbered in

	*live
}

// live is what an endpoint has learnt and holds: it belongs to the address,
// not to a place in the list, and is shared by the Endpoints of successive
// configurations, so that requests begun under an older one end on the
// same counts.
type live struct {
	inFlight  atomic.Int64
	requests  atomic.Uint64
	failures  atomic.Uint64
	ewmaNanos atomic.Uint64 // math.Float64bits of the latency EWMA in ns; 0: no sample yet
	ewmaStamp atomic.Int64  // unix ns of the last sample

	unhealthy         atomic.Bool
	healthStreak      atomic.Int32 // >0 successes in a row, <0 failures in a row
	consecutiveFailed atomic.Int32
	ejectedUntil      atomic.Int64 // unix ns
	ejections         atomic.Int32
}

// NewEndpoint makes an endpoint with no history.
func NewEndpoint(address string, weight, priority int, maxRequests int64) *Endpoint {
	return &Endpoint{Address: address, Weight: weight, Priority: priority, MaxRequests: maxRequests, live: &live{}}
}

// CarryOver makes the endpoint for prev's address in a new configuration,
// with new settings and prev's live state: health, ejection, latency and
// the requests still in flight.
func CarryOver(prev *Endpoint, weight, priority int, maxRequests int64) *Endpoint {
	return &Endpoint{Address: prev.Address, Weight: weight, Priority: priority, MaxRequests: maxRequests, live: prev.live}
}

// NewGroup links eps, made for this group, to it and numbers them.
func NewGroup(name string, outlier config.Outlier, eps []*Endpoint) *Group {
	g := &Group{Name: name, Endpoints: eps, Outlier: outlier}
	for i, ep := range eps {
		ep.Index = i
		ep.group.Store(g)
	}
	return g
}

// AcquireRetry takes a place in the retry budget, or reports false when
// the budget is spent. A place taken is given back with ReleaseRetry once
// the retried try ends.
func (g *Group) AcquireRetry() bool {
	var inFlight int64
	for _, ep := range g.Endpoints {
		inFlight += ep.inFlight.Load()
	}
	limit := max(inFlight*int64(g.RetryBudget.Percent)/100, int64(g.RetryBudget.MinConcurrency))
	if g.retries.Add(1) > limit {
		g.retries.Add(-1)
		return false
	}
	g.retried.Add(1)
	return true
}

// ReleaseRetry gives back a place taken by AcquireRetry.
func (g *Group) ReleaseRetry() { g.retries.Add(-1) }

// Retries is the number of retries the group has allowed so far.
func (g *Group) Retries() uint64 { return g.retried.Load() }

// Group is the group ep was last numbered in.
func (ep *Endpoint) Group() *Group { return ep.group.Load() }

// Available reports whether ep may take a new request at now (unix ns):
// healthy, not ejected, and under its request limit.
func (ep *Endpoint) Available(now int64) bool {
	return !ep.unhealthy.Load() && now >= ep.ejectedUntil.Load() &&
		(ep.MaxRequests == 0 || ep.inFlight.Load() < ep.MaxRequests)
}

// AtLimit reports whether ep's circuit breaker is open.
func (ep *Endpoint) AtLimit() bool {
	return ep.MaxRequests != 0 && ep.inFlight.Load() >= ep.MaxRequests
}

// InFlight is the number of requests sent and not yet finished.
func (ep *Endpoint) InFlight() int64 { return ep.inFlight.Load() }

// Begin counts a request going to ep.
func (ep *Endpoint) Begin() {
	ep.inFlight.Add(1)
	ep.requests.Add(1)
}

// decay is the EWMA's time constant: a sample's weight halves in about
// 7 seconds, so an endpoint that was slow a minute ago is not still
// punished, as in Finagle's peak EWMA.
const decay = 10 * time.Second

// EWMA returns the latency estimate in ns, or 0 when ep has no sample.
func (ep *Endpoint) EWMA() float64 {
	return math.Float64frombits(ep.ewmaNanos.Load())
}

// EWMAAt is the latency estimate at now (unix ns), decayed by the time
// since the last sample, as Finagle's peak EWMA does: an endpoint that gets
// no traffic because it looked slow looks cheaper as time passes, until it
// is sent a request whose latency tells the truth again. Within a second of
// a sample the estimate is returned as it is, which spares the common case
// the exponential.
func (ep *Endpoint) EWMAAt(now int64) float64 {
	v := ep.EWMA()
	elapsed := now - ep.ewmaStamp.Load()
	if v == 0 || elapsed <= int64(time.Second) {
		return v
	}
	return v * math.Exp(-float64(elapsed)/float64(decay))
}

// End records the outcome of a request begun with Begin. failed means a
// 5xx, a connect error or a reset; it feeds outlier detection.
func (ep *Endpoint) End(now int64, latency time.Duration, failed bool) {
	ep.inFlight.Add(-1)
	ep.observeLatency(now, float64(latency))
	if !failed {
		ep.consecutiveFailed.Store(0)
		return
	}
	ep.failures.Add(1)
	n := ep.consecutiveFailed.Add(1)
	if g := ep.group.Load(); g != nil && g.Outlier.ConsecutiveFailures > 0 && int(n) >= g.Outlier.ConsecutiveFailures {
		g.eject(ep, now)
	}
}

// observeLatency folds a sample into the EWMA, weighting the old value by
// how long ago it was taken. Peak-sensitive: a sample above the estimate
// replaces it outright, so a sudden slowdown shows at once.
func (ep *Endpoint) observeLatency(now int64, sample float64) {
	for {
		oldBits := ep.ewmaNanos.Load()
		old := math.Float64frombits(oldBits)
		next := sample
		if old != 0 && sample < old {
			elapsed := float64(now - ep.ewmaStamp.Load())
			w := math.Exp(-max(elapsed, 0) / float64(decay))
			next = old*w + sample*(1-w)
		}
		if ep.ewmaNanos.CompareAndSwap(oldBits, math.Float64bits(next)) {
			ep.ewmaStamp.Store(now)
			return
		}
	}
}

// eject takes ep out of rotation for BaseEjection × times ejected, unless
// that would put more than MaxEjectionPercent of the group out at once.
func (g *Group) eject(ep *Endpoint, now int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if now < ep.ejectedUntil.Load() {
		return // already out
	}
	out := 0
	for _, other := range g.Endpoints {
		if now < other.ejectedUntil.Load() {
			out++
		}
	}
	// At least one endpoint may always be ejected, as in Envoy, except the
	// only one of a group: with nowhere else to go, ejecting it turns
	// errors into refusals and hides its recovery.
	allowed := max(len(g.Endpoints)*g.Outlier.MaxEjectionPercent/100, 1)
	if out >= allowed || len(g.Endpoints) == 1 {
		return
	}
	times := ep.ejections.Add(1)
	ep.ejectedUntil.Store(now + int64(g.Outlier.BaseEjection)*int64(times))
	ep.consecutiveFailed.Store(0)
}

// Ejected reports whether ep is ejected at now, and until when.
func (ep *Endpoint) Ejected(now int64) (bool, time.Time) {
	until := ep.ejectedUntil.Load()
	return now < until, time.Unix(0, until)
}

// ReportHealth records an active health check's result and flips the
// endpoint's health after `healthy` successes or `unhealthy` failures in a
// row. It reports whether the health changed.
func (ep *Endpoint) ReportHealth(ok bool, healthy, unhealthy int) (changed bool) {
	var streak int32
	if ok {
		streak = max(ep.healthStreak.Load(), 0) + 1
	} else {
		streak = min(ep.healthStreak.Load(), 0) - 1
	}
	ep.healthStreak.Store(streak)
	switch {
	case ok && ep.unhealthy.Load() && int(streak) >= healthy:
		ep.unhealthy.Store(false)
		// An endpoint that came back starts with a clean outlier record.
		ep.ejectedUntil.Store(0)
		ep.consecutiveFailed.Store(0)
		return true
	case !ok && !ep.unhealthy.Load() && int(-streak) >= unhealthy:
		ep.unhealthy.Store(true)
		return true
	}
	return false
}

// Healthy reports the active health check's verdict; true until checks say
// otherwise.
func (ep *Endpoint) Healthy() bool { return !ep.unhealthy.Load() }

// Stats is an endpoint's row on /debug/upstreams.
type Stats struct {
	Group        string     `json:"group"`
	Address      string     `json:"address"`
	Weight       int        `json:"weight"`
	Priority     int        `json:"priority"`
	Healthy      bool       `json:"healthy"`
	Ejected      bool       `json:"ejected"`
	EjectedUntil *time.Time `json:"ejected_until,omitempty"`
	Ejections    int32      `json:"ejections"`
	InFlight     int64      `json:"in_flight"`
	EWMAMillis   float64    `json:"ewma_latency_ms"`
	Requests     uint64     `json:"requests"`
	Failures     uint64     `json:"failures"`
	BreakerOpen  bool       `json:"breaker_open"`
}

// Stats reads ep's state.
func (ep *Endpoint) Stats(now int64) Stats {
	s := Stats{
		Address:     ep.Address,
		Weight:      ep.Weight,
		Priority:    ep.Priority,
		Healthy:     ep.Healthy(),
		Ejections:   ep.ejections.Load(),
		InFlight:    ep.inFlight.Load(),
		EWMAMillis:  ep.EWMA() / 1e6,
		Requests:    ep.requests.Load(),
		Failures:    ep.failures.Load(),
		BreakerOpen: ep.AtLimit(),
	}
	if g := ep.group.Load(); g != nil {
		s.Group = g.Name
	}
	if ejected, until := ep.Ejected(now); ejected {
		s.Ejected, s.EjectedUntil = true, &until
	}
	return s
}

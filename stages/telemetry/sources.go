package telemetry

import (
	"spooky/stages"
	"spooky/upstream"
)

// What telemetry is told about the other stages. Each type restates, in
// this package, the part of another package's state that telemetry shows,
// so that telemetry imports none of them; cmd/spooky fills them in.

// StageStatus is one stage's supervised state, as the supervisor reports
// it (supervisor.Status) and /debug/stages shows it.
type StageStatus struct {
	Name      string `json:"name"`
	State     string `json:"state"` // running, backoff, stopped, escalated or not-started
	Restarts  int    `json:"restarts"`
	LastError string `json:"last_error,omitempty"`
}

// stateNotStarted is the state of a registered stage the supervisor does
// not report (supervisor.StateNotStarted).
const stateNotStarted = "not-started"

// ConfigStatus is the control plane's account of its reloads. /debug/config
// shows the value itself as JSON; spooky_config_reloads_total counts from
// Reloads.
type ConfigStatus interface {
	// Reloads counts the reloads applied and the reloads that failed.
	Reloads() (ok, failed uint64)
}

// BalancerStats is the balancer's view of every endpoint: health,
// ejection, latency and requests, with its own counters.
type BalancerStats struct {
	Endpoints      []upstream.Stats
	Retries        map[string]uint64 // by group
	BreakerRejects uint64
	HealthFlips    uint64
}

// ConnStats is the pool's view of one endpoint.
type ConnStats struct {
	Group   string
	Address string
	Conns   int // open connections
	Streams int // active streams over all of them
}

type namedStage struct {
	name string
	in   stages.Inspector
}

// Register adds a stage to /debug/stages, in registration order, and its
// mailbox's length to spooky_stage_queue_length. A name may be registered
// once.
func (t *Telemetry) Register(name string, in stages.Inspector) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stages = append(t.stages, namedStage{name, in})
	t.registerQueueGauge(name, in)
}

// ShowConfig serves the control plane's status on /debug/config and its
// reload counts as spooky_config_reloads_total. It may be called once.
func (t *Telemetry) ShowConfig(status func() ConfigStatus) {
	t.mu.Lock()
	t.configStatus = status
	t.mu.Unlock()
	t.registerReloadGauges(status)
}

// ShowUpstreams serves every endpoint on /debug/upstreams, merging the
// balancer's view (health, ejection, latency, requests) with the pool's
// (connections, streams), and writes the spooky_upstream_* metrics.
func (t *Telemetry) ShowUpstreams(balancer func() BalancerStats, pool func() []ConnStats) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.balancerStats, t.connStats = balancer, pool
}

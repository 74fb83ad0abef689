package telemetry

import (
	"encoding/json"
	"net/http"

	"spooky/stages"
	"spooky/upstream"
)

// StageView is one stage's row on /debug/stages.
type StageView struct {
	StageStatus
	stages.Info
}

// Stages returns every registered stage's state and queue figures, in
// registration order.
func (t *Telemetry) Stages() []StageView {
	byName := map[string]StageStatus{}
	for _, s := range t.statuses() {
		byName[s.Name] = s
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	views := make([]StageView, 0, len(t.stages))
	for _, s := range t.stages {
		st, ok := byName[s.name]
		if !ok {
			st = StageStatus{Name: s.name, State: stateNotStarted}
		}
		views = append(views, StageView{StageStatus: st, Info: s.in.Inspect()})
	}
	return views
}

// UpstreamView is one endpoint's row on /debug/upstreams.
type UpstreamView struct {
	upstream.Stats
	Conns   int `json:"conns"`
	Streams int `json:"streams"`
}

// upstreams merges the balancer's and the pool's views of every endpoint
// the balancer knows. Both are nil until ShowUpstreams.
func (t *Telemetry) upstreams() ([]UpstreamView, BalancerStats) {
	t.mu.Lock()
	balancer, pool := t.balancerStats, t.connStats
	t.mu.Unlock()
	if balancer == nil {
		return nil, BalancerStats{}
	}
	type key struct{ group, address string }
	open := map[key]ConnStats{}
	for _, c := range pool() {
		open[key{c.Group, c.Address}] = c
	}
	stats := balancer()
	views := make([]UpstreamView, 0, len(stats.Endpoints))
	for _, ep := range stats.Endpoints {
		c := open[key{ep.Group, ep.Address}]
		views = append(views, UpstreamView{Stats: ep, Conns: c.Conns, Streams: c.Streams})
	}
	return views, stats
}

func (t *Telemetry) serveStages(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, map[string]any{"stages": t.Stages()})
}

func (t *Telemetry) serveUpstreams(w http.ResponseWriter, _ *http.Request) {
	views, _ := t.upstreams()
	writeJSON(w, map[string]any{"endpoints": views})
}

func (t *Telemetry) serveConfig(w http.ResponseWriter, _ *http.Request) {
	t.mu.Lock()
	status := t.configStatus
	t.mu.Unlock()
	if status == nil {
		http.Error(w, "no control plane", http.StatusNotFound)
		return
	}
	writeJSON(w, status())
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	// The views hold only plain values, so an error here is a client
	// that went away; there is nobody left to tell.
	_ = enc.Encode(v)
}

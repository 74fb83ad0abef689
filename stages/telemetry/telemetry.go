// Package telemetry owns what spooky shows about itself: request metrics
// (VictoriaMetrics, Prometheus text), and the admin HTTP server on loopback
// with /debug/stages, /metrics and /debug/pprof/.
//
// Telemetry never slows a request: the listener offers each finished
// request's figures with a non-blocking send, and when the mailbox is full
// the event is dropped and the drop counted.
package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"spooky/config"
	"spooky/envelope"
	"spooky/mailbox"
	"spooky/stages"
	"spooky/stages/balancer"
	"spooky/stages/control"
	"spooky/stages/pool"
	"spooky/supervisor"
	"spooky/upstream"
)

// Event is one finished request's figures.
type Event struct {
	Route    string
	Upstream string
	Status   int
	Duration time.Duration
}

// Inbox is the telemetry stage's mailbox.
type Inbox = mailbox.Mailbox[Event, stages.Control]

// Telemetry is the telemetry stage.
type Telemetry struct {
	inbox    *Inbox
	set      *metrics.Set
	log      *slog.Logger
	config   atomic.Pointer[config.Config]
	changed  chan struct{} // a Reconfigure was applied; Serve re-reads config
	adminURL atomic.Pointer[string]

	// series caches one counter or histogram per label set, so the hot
	// loop formats a metric name once per series, not once per event.
	series sync.Map // seriesKey → *requestSeries

	mu           sync.Mutex
	stages       []namedStage
	statuses     func() []supervisor.Status
	configStatus func() control.Status
	balancer     func() balancer.Stats
	conns        func() []pool.EndpointStats
}

type namedStage struct {
	name string
	in   stages.Inspector
}

type seriesKey struct {
	route, upstream string
	class           int
}

type requestSeries struct {
	requests *metrics.Counter
	duration *metrics.PrometheusHistogram
}

// New makes the telemetry stage. statuses reports the supervisor's view of
// every stage.
func New(cfg *config.Config, statuses func() []supervisor.Status, log *slog.Logger) *Telemetry {
	t := &Telemetry{
		inbox:    mailbox.New[Event, stages.Control](cfg.Stages.Telemetry.Queue, 16),
		set:      metrics.NewSet(),
		log:      log,
		statuses: statuses,
		changed:  make(chan struct{}, 1),
	}
	t.config.Store(cfg)
	t.set.NewGauge("spooky_telemetry_events_dropped", func() float64 {
		return float64(t.inbox.Stats().Dropped)
	})
	return t
}

// Register adds a stage to /debug/stages, in registration order.
func (t *Telemetry) Register(name string, in stages.Inspector) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stages = append(t.stages, namedStage{name, in})
	t.set.NewGauge(fmt.Sprintf(`spooky_stage_queue_length{stage=%q}`, name), func() float64 {
		if mb := in.Inspect().Mailbox; mb != nil {
			return float64(mb.DataLen)
		}
		return 0
	})
}

// ShowConfig serves the control plane's status on /debug/config and its
// reload counts as spooky_config_reloads_total.
func (t *Telemetry) ShowConfig(status func() control.Status) {
	t.mu.Lock()
	t.configStatus = status
	t.mu.Unlock()
	t.set.NewGauge(`spooky_config_reloads_total{result="ok"}`, func() float64 { return float64(status().ReloadsOK) })
	t.set.NewGauge(`spooky_config_reloads_total{result="error"}`, func() float64 { return float64(status().ReloadsError) })
}

// ShowUpstreams serves every endpoint on /debug/upstreams, merging the
// balancer's view (health, ejection, latency, requests) with the pool's
// (connections, streams), and writes the spooky_upstream_* metrics.
func (t *Telemetry) ShowUpstreams(b func() balancer.Stats, conns func() []pool.EndpointStats) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.balancer, t.conns = b, conns
}

// UpstreamView is one endpoint's row on /debug/upstreams.
type UpstreamView struct {
	upstream.Stats
	Conns   int `json:"conns"`
	Streams int `json:"streams"`
}

func (t *Telemetry) upstreams() ([]UpstreamView, balancer.Stats) {
	t.mu.Lock()
	b, conns := t.balancer, t.conns
	t.mu.Unlock()
	if b == nil {
		return nil, balancer.Stats{}
	}
	type key struct{ group, address string }
	open := map[key]pool.EndpointStats{}
	for _, c := range conns() {
		open[key{c.Group, c.Address}] = c
	}
	stats := b()
	views := make([]UpstreamView, 0, len(stats.Endpoints))
	for _, ep := range stats.Endpoints {
		c := open[key{ep.Group, ep.Address}]
		views = append(views, UpstreamView{Stats: ep, Conns: c.Conns, Streams: c.Streams})
	}
	return views, stats
}

// writeUpstreamMetrics writes per-endpoint series straight from the live
// state, since endpoints come and go with reloads and a registered series
// would outlive its endpoint.
func (t *Telemetry) writeUpstreamMetrics(w io.Writer) {
	views, stats := t.upstreams()
	for _, v := range views {
		labels := fmt.Sprintf(`group=%q,endpoint=%q`, v.Group, v.Address)
		fmt.Fprintf(w, "spooky_upstream_requests_total{%s} %d\n", labels, v.Requests)
		fmt.Fprintf(w, "spooky_upstream_failures_total{%s} %d\n", labels, v.Failures)
		fmt.Fprintf(w, "spooky_upstream_ejections_total{%s} %d\n", labels, v.Ejections)
		fmt.Fprintf(w, "spooky_upstream_healthy{%s} %d\n", labels, boolGauge(v.Healthy))
		fmt.Fprintf(w, "spooky_upstream_ejected{%s} %d\n", labels, boolGauge(v.Ejected))
		fmt.Fprintf(w, "spooky_upstream_in_flight{%s} %d\n", labels, v.InFlight)
		fmt.Fprintf(w, "spooky_upstream_latency_ewma_seconds{%s} %g\n", labels, v.EWMAMillis/1000)
		fmt.Fprintf(w, "spooky_upstream_connections{%s} %d\n", labels, v.Conns)
	}
	for _, group := range slices.Sorted(maps.Keys(stats.Retries)) {
		fmt.Fprintf(w, "spooky_upstream_retries_total{group=%q} %d\n", group, stats.Retries[group])
	}
	if views != nil {
		fmt.Fprintf(w, "spooky_upstream_breaker_rejections_total %d\n", stats.BreakerRejects)
		fmt.Fprintf(w, "spooky_upstream_health_transitions_total %d\n", stats.HealthFlips)
	}
}

func boolGauge(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Inbox returns the mailbox that Control messages go to.
func (t *Telemetry) Inbox() *Inbox { return t.inbox }

// Record offers a finished request's figures; it never blocks.
func (t *Telemetry) Record(e *envelope.Envelope) {
	ev := Event{Status: e.Status, Duration: time.Since(e.Arrived)}
	if e.Route != nil {
		ev.Route, ev.Upstream = e.Route.Name, e.Route.Upstream
	}
	t.inbox.TrySend(ev)
}

// AdminURL is the admin server's base URL once Serve has bound it, or "".
func (t *Telemetry) AdminURL() string {
	if u := t.adminURL.Load(); u != nil {
		return *u
	}
	return ""
}

// Inspect reports the worker count and mailbox.
func (t *Telemetry) Inspect() stages.Info {
	st := t.inbox.Stats()
	return stages.Info{Workers: t.config.Load().Stages.Telemetry.Workers, Mailbox: &st}
}

// Serve binds the admin server and records events until ctx ends. A new
// config moves the admin server to a new address (the new one is bound
// before the old one closes, and a failed bind keeps the old one) and
// changes the worker count; events wait in the mailbox meanwhile.
func (t *Telemetry) Serve(ctx context.Context) error {
	cfg := t.config.Load()
	admin, err := t.bindAdmin(cfg.Admin.Address)
	if err != nil {
		return err
	}
	defer func() { admin.stop() }()
	for {
		workersCtx, stopWorkers := context.WithCancel(ctx)
		var workers sync.WaitGroup
		for range cfg.Stages.Telemetry.Workers {
			workers.Go(func() { t.work(workersCtx) })
		}
		select {
		case <-ctx.Done():
		case err = <-admin.failed:
		case <-t.changed:
		}
		stopWorkers()
		workers.Wait()
		if ctx.Err() != nil || err != nil {
			return err
		}
		next := t.config.Load()
		t.inbox.Resize(next.Stages.Telemetry.Queue)
		if next.Admin.Address != cfg.Admin.Address {
			if moved, err := t.bindAdmin(next.Admin.Address); err != nil {
				t.log.Error("admin server stays on its old address", "err", err)
			} else {
				admin.stop()
				admin = moved
			}
		}
		cfg = next
	}
}

// adminServer is the admin HTTP server on one address.
type adminServer struct {
	srv    *http.Server
	done   sync.WaitGroup
	failed chan error
}

func (t *Telemetry) bindAdmin(address string) (*adminServer, error) {
	ln, err := net.Listen("tcp", address)
	if err != nil {
		return nil, fmt.Errorf("telemetry: admin.address %q: %w", address, err)
	}
	url := "http://" + ln.Addr().String()
	t.adminURL.Store(&url)
	a := &adminServer{
		srv:    &http.Server{Handler: t.adminHandler(), ReadHeaderTimeout: 5 * time.Second},
		failed: make(chan error, 1),
	}
	a.done.Go(func() {
		if err := a.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			a.failed <- fmt.Errorf("telemetry: admin server: %w", err)
		}
	})
	return a, nil
}

func (a *adminServer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	a.srv.Shutdown(ctx)
	a.done.Wait()
}

func (t *Telemetry) work(ctx context.Context) {
	for ctx.Err() == nil {
		msg, err := t.inbox.Receive(ctx)
		if err != nil {
			return
		}
		if msg.IsControl {
			if rc, ok := msg.Control.(stages.Reconfigure); ok {
				t.config.Store(rc.Config)
				select {
				case t.changed <- struct{}{}:
				default:
				}
				rc.Applied()
			}
			continue
		}
		t.observe(msg.Data)
	}
}

func (t *Telemetry) observe(ev Event) {
	key := seriesKey{route: ev.Route, upstream: ev.Upstream, class: ev.Status / 100}
	s, ok := t.series.Load(key)
	if !ok {
		labels := fmt.Sprintf(`route=%q,upstream=%q`, ev.Route, ev.Upstream)
		s, _ = t.series.LoadOrStore(key, &requestSeries{
			requests: t.set.GetOrCreateCounter(fmt.Sprintf(`spooky_requests_total{%s,status_class="%dxx"}`, labels, key.class)),
			duration: t.set.GetOrCreatePrometheusHistogram(fmt.Sprintf(`spooky_request_duration_seconds{%s}`, labels)),
		})
	}
	rs := s.(*requestSeries)
	rs.requests.Inc()
	rs.duration.Update(ev.Duration.Seconds())
}

// StageView is one stage's row on /debug/stages.
type StageView struct {
	supervisor.Status
	stages.Info
}

// Stages returns every registered stage's state and queue figures.
func (t *Telemetry) Stages() []StageView {
	byName := map[string]supervisor.Status{}
	for _, s := range t.statuses() {
		byName[s.Name] = s
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	views := make([]StageView, 0, len(t.stages))
	for _, s := range t.stages {
		st, ok := byName[s.name]
		if !ok {
			st = supervisor.Status{Name: s.name, State: supervisor.StateNotStarted}
		}
		views = append(views, StageView{Status: st, Info: s.in.Inspect()})
	}
	return views
}

// adminHandler serves the admin endpoints.
func (t *Telemetry) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/stages", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"stages": t.Stages()})
	})
	mux.HandleFunc("GET /debug/config", func(w http.ResponseWriter, r *http.Request) {
		t.mu.Lock()
		status := t.configStatus
		t.mu.Unlock()
		if status == nil {
			http.Error(w, "no control plane", http.StatusNotFound)
			return
		}
		writeJSON(w, status())
	})
	mux.HandleFunc("GET /debug/upstreams", func(w http.ResponseWriter, r *http.Request) {
		views, _ := t.upstreams()
		writeJSON(w, map[string]any{"endpoints": views})
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		t.set.WritePrometheus(w)
		t.writeUpstreamMetrics(w)
		metrics.WriteProcessMetrics(w)
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	// The views hold only plain values, so an error here is a client
	// that went away; there is nobody left to tell.
	_ = enc.Encode(v)
}

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
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"spooky/config"
	"spooky/envelope"
	"spooky/mailbox"
	"spooky/stages"
	"spooky/stages/control"
	"spooky/supervisor"
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
	adminURL atomic.Pointer[string]

	// series caches one counter or histogram per label set, so the hot
	// loop formats a metric name once per series, not once per event.
	series sync.Map // seriesKey → *requestSeries

	mu           sync.Mutex
	stages       []namedStage
	statuses     func() []supervisor.Status
	configStatus func() control.Status
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

// Serve binds the admin server and records events until ctx ends.
func (t *Telemetry) Serve(ctx context.Context) error {
	cfg := t.config.Load()
	ln, err := net.Listen("tcp", cfg.Admin.Address)
	if err != nil {
		return fmt.Errorf("telemetry: admin.address %q: %w", cfg.Admin.Address, err)
	}
	url := "http://" + ln.Addr().String()
	t.adminURL.Store(&url)
	srv := &http.Server{Handler: t.AdminHandler(), ReadHeaderTimeout: 5 * time.Second}

	var wg sync.WaitGroup
	errs := make(chan error, 1)
	wg.Go(func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("telemetry: admin server: %w", err)
		}
	})
	ctx, cancel := context.WithCancel(ctx)
	for range cfg.Stages.Telemetry.Workers {
		wg.Go(func() { t.work(ctx) })
	}
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	cancel()
	shutdownCtx, done := context.WithTimeout(context.Background(), time.Second)
	defer done()
	srv.Shutdown(shutdownCtx)
	wg.Wait()
	return err
}

func (t *Telemetry) work(ctx context.Context) {
	for {
		msg, err := t.inbox.Receive(ctx)
		if err != nil {
			return
		}
		if msg.IsControl {
			if rc, ok := msg.Control.(stages.Reconfigure); ok {
				t.config.Store(rc.Config)
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

// AdminHandler serves the admin endpoints.
func (t *Telemetry) AdminHandler() http.Handler {
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
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		t.set.WritePrometheus(w)
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

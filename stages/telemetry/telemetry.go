// Package telemetry owns what spooky shows about itself: the request
// metrics and the other spooky_* series in Prometheus text (metrics.go),
// the admin HTTP server on admin.address (admin.go) with /metrics, the
// /debug/stages, /debug/upstreams and /debug/config views (debug.go) and
// /debug/pprof/.
//
// Telemetry never slows a request: the listener offers each finished
// request's figures with a non-blocking send (Record), and when the inbox is
// full the event is dropped and the drop counted.
//
// Telemetry knows the other stages only through what it declares itself
// (sources.go): each stage's stages.Inspector, and funcs that report the
// supervisor's, the control plane's, the balancer's and the pool's state in
// types of this package. cmd/spooky plugs them in; no stage package is
// imported here.
package telemetry

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"spooky/config"
	"spooky/envelope"
	"spooky/mailbox"
	"spooky/stages"
	"spooky/supervisor"
)

// Event is one finished request's figures.
type Event struct {
	Route    string
	Upstream string
	Status   int
	Duration time.Duration
}

// Inbox is the telemetry stage's mailbox: events on the data lane, config
// changes on the control lane.
type Inbox = mailbox.Mailbox[Event, stages.Control]

// Telemetry is the telemetry stage.
type Telemetry struct {
	inbox    *Inbox
	set      *metrics.Set
	log      *slog.Logger
	config   atomic.Pointer[config.Config]
	changed  chan struct{} // a Reconfigure was applied; Serve re-reads config
	adminURL atomic.Pointer[string]
	statuses func() []StageStatus

	// series caches one counter and histogram per label set, so the hot
	// loop formats a metric name once per series, not once per event.
	series sync.Map // seriesKey → *requestSeries

	// mu guards what is plugged in after New; the admin handlers read it.
	mu            sync.Mutex
	stages        []namedStage
	configStatus  func() ConfigStatus
	balancerStats func() BalancerStats
	connStats     func() []ConnStats
}

// New makes the telemetry stage. statuses reports the supervisor's view of
// every stage, for /debug/stages.
func New(cfg *config.Config, statuses func() []StageStatus, log *slog.Logger) *Telemetry {
	t := &Telemetry{
		inbox:    mailbox.New[Event, stages.Control](cfg.Stages.Telemetry.Queue, 16),
		set:      metrics.NewSet(),
		log:      log,
		statuses: statuses,
		changed:  make(chan struct{}, 1),
	}
	t.config.Store(cfg)
	t.registerDropGauge()
	return t
}

// Inbox returns the mailbox that Control messages go to.
func (t *Telemetry) Inbox() *Inbox { return t.inbox }

// Record offers a finished request's figures; it never blocks. When the
// inbox is full the event is dropped, and counted in
// spooky_telemetry_events_dropped_total.
func (t *Telemetry) Record(e *envelope.Envelope) {
	ev := Event{Status: e.Status, Duration: time.Since(e.Arrived)}
	if e.Route != nil {
		ev.Route, ev.Upstream = e.Route.Name, e.Route.Upstream
	}
	t.inbox.TrySend(ev)
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
	// bound is the admin address in force: a failed move keeps the old
	// one, and the next reload of the new address tries it again.
	bound := cfg.Admin.Address
	for {
		workersCtx, stopWorkers := context.WithCancel(ctx)
		var workers sync.WaitGroup
		for range cfg.Stages.Telemetry.Workers {
			workers.Go(supervisor.Guard(t.log, "telemetry worker", func() { t.work(workersCtx) }, nil))
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
		if next.Admin.Address != bound {
			if moved, err := t.bindAdmin(next.Admin.Address); err != nil {
				t.log.Error("admin server stays on its old address", "address", bound, "err", err)
			} else {
				admin.stop()
				admin, bound = moved, next.Admin.Address
			}
		}
		cfg = next
	}
}

// work reads the inbox until ctx ends: events are observed, a Reconfigure
// is stored and Serve told of it.
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

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"spooky/config"
	"spooky/stages"
	"spooky/stages/balancer"
	"spooky/stages/control"
	"spooky/stages/listener"
	"spooky/stages/pool"
	"spooky/stages/router"
	"spooky/stages/telemetry"
	"spooky/supervisor"
)

// daemon is one running spooky: its stages, wired by their mailboxes, under
// one supervisor.
type daemon struct {
	cfg        *config.Config
	log        *slog.Logger
	supervisor *supervisor.Supervisor
	listener   *listener.Listener
	router     *router.Router
	balancer   *balancer.Balancer
	pool       *pool.Pool
	telemetry  *telemetry.Telemetry
	control    *control.Control
	escalated  chan error // a stage gave up; the daemon must exit
	stopGrace  time.Duration
}

// newDaemon builds every stage and binds the client socket; nothing serves
// until run.
func newDaemon(configPath string, cfg *config.Config, log *slog.Logger) (*daemon, error) {
	d := &daemon{cfg: cfg, log: log, escalated: make(chan error, 1), stopGrace: defaultStopGrace}
	d.supervisor = &supervisor.Supervisor{OnEvent: func(e supervisor.Event) {
		log.Error("stage failed", "stage", e.Stage, "restarts", e.Restarts, "backoff", e.Backoff, "err", e.Err)
		if e.Escalated {
			select {
			case d.escalated <- fmt.Errorf("stage %s: %w: %w", e.Stage, supervisor.ErrEscalated, e.Err):
			default:
			}
		}
	}}
	routerBox := stages.NewMailbox(cfg.Stages.Router)
	balancerBox := stages.NewMailbox(cfg.Stages.Balancer)
	poolBox := stages.NewMailbox(cfg.Stages.Pool)

	var err error
	d.telemetry = telemetry.New(cfg, stageStatuses(d.supervisor), log)
	d.router = router.New(cfg, routerBox, balancerBox)
	if d.pool, err = pool.New(cfg, poolBox, balancerBox, log); err != nil {
		return nil, err
	}
	if d.balancer, err = balancer.New(cfg, balancerBox, poolBox, d.pool, log); err != nil {
		return nil, err
	}
	if d.listener, err = listener.New(cfg, routerBox, d.telemetry, log); err != nil {
		return nil, err
	}

	d.control = control.New(configPath, cfg, log)
	// The listener first: binding a new listen.address is the one step
	// that can fail, and then nothing else has changed. Then downstream
	// first: the pool dials a new endpoint before the balancer can pick it,
	// and the balancer drops an old one before the pool does.
	for _, t := range []control.Target{d.listener, poolBox, balancerBox, routerBox, d.telemetry.Inbox()} {
		d.control.AddTarget(t)
	}
	// Certificates renewed on disk are reloaded by the listener itself;
	// the control plane shows how that went on /debug/config.
	d.listener.ReportCertificates(d.control)
	d.telemetry.ShowConfig(func() telemetry.ConfigStatus { return d.control.Status() })
	d.telemetry.ShowUpstreams(balancerStats(d.balancer), connStats(d.pool))

	// Downstream stages start first, so the listener never offers work to a
	// stage that is not reading yet.
	for _, s := range []struct {
		name string
		svc  interface {
			supervisor.Service
			stages.Inspector
		}
	}{
		{"telemetry", d.telemetry},
		{"pool", d.pool},
		{"balancer", d.balancer},
		{"router", d.router},
		{"listener", d.listener},
		{"control", d.control},
	} {
		d.supervisor.Add(supervisor.Spec{Name: s.name, Service: s.svc})
		d.telemetry.Register(s.name, s.svc)
	}
	return d, nil
}

// What the wiring above relies on, checked where every package involved
// can be imported: the stage contract, and the interfaces that one stage
// declares and another satisfies.
var (
	_ supervisor.Service = (*listener.Listener)(nil)
	_ supervisor.Service = (*telemetry.Telemetry)(nil)
	_ supervisor.Service = (*control.Control)(nil)
	_ stages.Inspector   = (*listener.Listener)(nil)
	_ stages.Inspector   = (*telemetry.Telemetry)(nil)
	_ stages.Inspector   = (*control.Control)(nil)

	// The supervisor finds Stopped by a type assertion: without these, a
	// stage that stopped embedding stages.Workers would leave its queue
	// unfinished at stop, silently.
	_ supervisor.Stopper = (*router.Router)(nil)
	_ supervisor.Stopper = (*balancer.Balancer)(nil)
	_ supervisor.Stopper = (*pool.Pool)(nil)

	_ control.Target         = (*listener.Listener)(nil)
	_ control.FileReloader   = (*listener.Listener)(nil)
	_ listener.CertReporter  = (*control.Control)(nil)
	_ control.Target         = (*stages.Mailbox)(nil)
	_ control.Target         = (*telemetry.Inbox)(nil)
	_ listener.Recorder      = (*telemetry.Telemetry)(nil)
	_ telemetry.ConfigStatus = control.Status{}
)

// stageStatuses reports the supervisor's view of every stage to telemetry.
func stageStatuses(s *supervisor.Supervisor) func() []telemetry.StageStatus {
	return func() []telemetry.StageStatus {
		statuses := s.Statuses()
		out := make([]telemetry.StageStatus, len(statuses))
		for i, st := range statuses {
			out[i] = telemetry.StageStatus{Name: st.Name, State: string(st.State), Restarts: st.Restarts, LastError: st.LastError}
		}
		return out
	}
}

// balancerStats reports the balancer's view of every endpoint to telemetry.
func balancerStats(b *balancer.Balancer) func() telemetry.BalancerStats {
	return func() telemetry.BalancerStats {
		s := b.Stats()
		return telemetry.BalancerStats{Endpoints: s.Endpoints, Retries: s.Retries, BreakerRejects: s.BreakerRejects, HealthFlips: s.HealthFlips}
	}
}

// connStats reports the pool's connections to every endpoint to telemetry.
func connStats(p *pool.Pool) func() []telemetry.ConnStats {
	return func() []telemetry.ConnStats {
		eps := p.Endpoints()
		out := make([]telemetry.ConnStats, len(eps))
		for i, ep := range eps {
			out[i] = telemetry.ConnStats{Group: ep.Group, Address: ep.Address, Conns: ep.Conns, Streams: ep.Streams}
		}
		return out
	}
}

// defaultStopGrace is how long the stages have to stop once the drain is
// over (or cut short) before the daemon gives up on them.
const defaultStopGrace = 5 * time.Second

// errEscalated and errStuck are how run can end other than cleanly.
var (
	errEscalated = errors.New("a stage kept failing past its restart limit")
	errStuck     = errors.New("stages did not stop within listen.drain_timeout and the stop grace")
)

// run serves until ctx ends, then drains: the listener stops taking requests
// and waits for those in flight (up to listen.drain_timeout) before the other
// stages stop, within d.stopGrace. It returns an error wrapping errEscalated
// when a stage escalated (then it waits at most the drain timeout for the
// others to stop, since a request that needed the failed stage may never
// finish), and one wrapping errStuck, naming the stages, when they did not
// stop in time.
func (d *daemon) run(ctx context.Context) error {
	stagesCtx, stopStages := context.WithCancel(context.Background())
	defer stopStages()
	served := make(chan error, 1)
	go func() { served <- d.supervisor.Serve(stagesCtx) }()

	var err error
	select {
	case <-ctx.Done():
		timeout := d.listener.DrainTimeout()
		d.log.Info("draining", "timeout", timeout)
		drainCtx, cancel := context.WithTimeout(context.Background(), timeout)
		if err := d.listener.Drain(drainCtx); err != nil {
			d.log.Warn("drain cut short", "err", err)
		}
		cancel()
		stopStages()
		select {
		case err = <-served:
		case <-time.After(d.stopGrace):
			return fmt.Errorf("%w: %s", errStuck, strings.Join(d.running(), ", "))
		}
	case err = <-served:
	case err = <-d.escalated:
		stopStages()
		select {
		case <-served:
		case <-time.After(d.listener.DrainTimeout()):
			d.log.Error("stages still stopping after the drain timeout; exiting anyway", "running", d.running())
		}
		return fmt.Errorf("%w: %w", errEscalated, err)
	}
	d.pool.Close()
	d.listener.Close()
	return err
}

// running names the stages that have not stopped.
func (d *daemon) running() []string {
	var names []string
	for _, st := range d.supervisor.Statuses() {
		if st.State != supervisor.StateStopped && st.State != supervisor.StateEscalated {
			names = append(names, st.Name+" ("+string(st.State)+")")
		}
	}
	return names
}

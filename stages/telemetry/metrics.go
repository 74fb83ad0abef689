package telemetry

import (
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/VictoriaMetrics/metrics"

	"spooky/stages"
)

// The series on /metrics, in Prometheus text format:
//
//	spooky_requests_total{route,upstream,status_class}   requests finished, by status class ("2xx")
//	spooky_request_duration_seconds{route,upstream}      histogram, arrival to finish
//	spooky_stage_queue_length{stage}                     envelopes waiting in a stage's mailbox
//	spooky_config_reloads_total{result="ok"|"error"}     reloads applied and failed
//	spooky_telemetry_events_dropped_total                events Record found no room for
//	spooky_refused_total{stage,reason}                   what a stage refused to take, by limit (stages.Info.Refused)
//	spooky_upstream_*{group,endpoint}                    live endpoint state, see writeUpstreamMetrics
//
// and the Go runtime's and the process's (go_*, process_*).

type seriesKey struct {
	route, upstream string
	class           int
}

type requestSeries struct {
	requests *metrics.Counter
	duration *metrics.PrometheusHistogram
}

// observe counts one finished request in its series.
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

func (t *Telemetry) registerDropGauge() {
	t.set.NewGauge("spooky_telemetry_events_dropped_total", func() float64 {
		return float64(t.inbox.Stats().Dropped)
	})
}

func (t *Telemetry) registerQueueGauge(stage string, in stages.Inspector) {
	t.set.NewGauge(fmt.Sprintf(`spooky_stage_queue_length{stage=%q}`, stage), func() float64 {
		if mb := in.Inspect().Mailbox; mb != nil {
			return float64(mb.DataLen)
		}
		return 0
	})
}

func (t *Telemetry) registerReloadGauges(status func() ConfigStatus) {
	t.set.NewGauge(`spooky_config_reloads_total{result="ok"}`, func() float64 {
		ok, _ := status().Reloads()
		return float64(ok)
	})
	t.set.NewGauge(`spooky_config_reloads_total{result="error"}`, func() float64 {
		_, failed := status().Reloads()
		return float64(failed)
	})
}

// writeMetrics writes every series.
func (t *Telemetry) writeMetrics(w io.Writer) {
	t.set.WritePrometheus(w)
	t.writeRefusals(w)
	t.writeUpstreamMetrics(w)
	metrics.WriteProcessMetrics(w)
}

// writeRefusals writes every stage's refusals by reason, in a stable order.
func (t *Telemetry) writeRefusals(w io.Writer) {
	t.mu.Lock()
	named := slices.Clone(t.stages)
	t.mu.Unlock()
	for _, s := range named {
		refused := s.in.Inspect().Refused
		for _, reason := range slices.Sorted(maps.Keys(refused)) {
			fmt.Fprintf(w, "spooky_refused_total{stage=%q,reason=%q} %d\n", s.name, reason, refused[reason])
		}
	}
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

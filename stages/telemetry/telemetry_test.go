package telemetry

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"spooky/config"
	"spooky/envelope"
	"spooky/internal/testkit"
	"spooky/mailbox"
	"spooky/stages"
	"spooky/upstream"
)

// newTelemetry makes a telemetry stage whose inbox holds queue events,
// with one worker and the admin server on a free loopback port.
func newTelemetry(queue int, statuses func() []StageStatus) *Telemetry {
	cfg := &config.Config{
		Admin:  config.Admin{Address: "127.0.0.1:0"},
		Stages: config.Stages{Telemetry: config.Stage{Workers: 1, Queue: queue}},
	}
	if statuses == nil {
		statuses = func() []StageStatus { return nil }
	}
	return New(cfg, statuses, slog.New(slog.DiscardHandler))
}

// get serves one admin request without a server.
func get(t *testing.T, tel *Telemetry, path string) (*http.Response, string) {
	t.Helper()
	w := httptest.NewRecorder()
	tel.adminHandler().ServeHTTP(w, httptest.NewRequest("GET", path, nil))
	resp := w.Result()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// wantLines fails unless every line of want is a whole line of text.
func wantLines(t *testing.T, text string, want ...string) {
	t.Helper()
	have := map[string]bool{}
	var ours strings.Builder // spooky's lines, to show on failure
	for line := range strings.SplitSeq(text, "\n") {
		have[line] = true
		if strings.HasPrefix(line, "spooky_") {
			ours.WriteString(line + "\n")
		}
	}
	for _, w := range want {
		if !have[w] {
			t.Errorf("no line %q in:\n%s", w, ours.String())
		}
	}
}

// noLinesWith fails if a line of text starts with prefix.
func noLinesWith(t *testing.T, text, prefix string) {
	t.Helper()
	for line := range strings.SplitSeq(text, "\n") {
		if strings.HasPrefix(line, prefix) {
			t.Errorf("unexpected line %q", line)
		}
	}
}

// record makes a request that arrived took long ago finish with status on
// route (nil: no route matched), and records it.
func record(tel *Telemetry, route *config.Route, status int, took time.Duration) {
	// Not from envelope.Get: a pooled envelope's channel may belong to
	// another test's bubble. Record reads only these fields.
	e := &envelope.Envelope{Arrived: time.Now(), Route: route, Status: status}
	time.Sleep(took)
	tel.Record(e)
}

// work runs one worker until the test ends.
func work(t *testing.T, tel *Telemetry) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tel.work(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func TestMetricsForRecordedEvents(t *testing.T) {
	// In the bubble the clock moves only when every goroutine waits, so
	// each request takes exactly what record sleeps.
	synctest.Test(t, func(t *testing.T) {
		tel := newTelemetry(16, nil)
		work(t, tel)
		app := &config.Route{Name: "*/", Upstream: "app"}
		record(tel, app, 200, 250*time.Millisecond)
		record(tel, app, 204, 250*time.Millisecond)
		record(tel, app, 503, 1500*time.Millisecond)
		record(tel, nil, 404, 2*time.Millisecond)
		synctest.Wait() // the worker has observed every event

		resp, text := get(t, tel, "/metrics")
		if ct := resp.Header.Get("Content-Type"); ct != "text/plain; version=0.0.4; charset=utf-8" {
			t.Errorf("Content-Type %q", ct)
		}
		wantLines(t, text,
			`spooky_requests_total{route="*/",upstream="app",status_class="2xx"} 2`,
			`spooky_requests_total{route="*/",upstream="app",status_class="5xx"} 1`,
			`spooky_requests_total{route="",upstream="",status_class="4xx"} 1`,
			`spooky_request_duration_seconds_bucket{route="*/",upstream="app",le="0.1"} 0`,
			`spooky_request_duration_seconds_bucket{route="*/",upstream="app",le="0.25"} 2`,
			`spooky_request_duration_seconds_bucket{route="*/",upstream="app",le="1"} 2`,
			`spooky_request_duration_seconds_bucket{route="*/",upstream="app",le="2.5"} 3`,
			`spooky_request_duration_seconds_bucket{route="*/",upstream="app",le="+Inf"} 3`,
			`spooky_request_duration_seconds_sum{route="*/",upstream="app"} 2`,
			`spooky_request_duration_seconds_count{route="*/",upstream="app"} 3`,
			`spooky_request_duration_seconds_count{route="",upstream=""} 1`,
			`spooky_telemetry_events_dropped_total 0`,
		)
		if !strings.Contains(text, "\ngo_goroutines ") {
			t.Error("no Go runtime metrics")
		}
		// Before ShowUpstreams there is no upstream to show.
		noLinesWith(t, text, "spooky_upstream_")
	})
}

func TestRecordDropsWhenTheInboxIsFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tel := newTelemetry(2, nil)
		app := &config.Route{Name: "*/", Upstream: "app"}
		// No worker reads: the inbox fills after two events, and Record
		// neither waits for room nor lets the clock move.
		start := time.Now()
		for range 5 {
			record(tel, app, 200, 0)
		}
		if waited := time.Since(start); waited != 0 {
			t.Errorf("Record waited %v", waited)
		}
		if mb := tel.Inspect().Mailbox; mb.Dropped != 3 || mb.DataLen != 2 {
			t.Errorf("mailbox %+v; want 3 dropped, 2 queued", *mb)
		}
		_, text := get(t, tel, "/metrics")
		wantLines(t, text, `spooky_telemetry_events_dropped_total 3`)
		noLinesWith(t, text, "spooky_requests_total")

		work(t, tel)
		synctest.Wait()
		_, text = get(t, tel, "/metrics")
		wantLines(t, text,
			`spooky_requests_total{route="*/",upstream="app",status_class="2xx"} 2`,
			`spooky_telemetry_events_dropped_total 3`,
		)
	})
}

// inspector is a stage as /debug/stages sees it.
type inspector stages.Info

func (in *inspector) Inspect() stages.Info { return stages.Info(*in) }

func TestDebugStages(t *testing.T) {
	statuses := func() []StageStatus {
		return []StageStatus{
			{Name: "pool", State: "backoff", Restarts: 2, LastError: "boom"},
			{Name: "unregistered", State: "running"},
		}
	}
	tel := newTelemetry(16, statuses)
	pool := &inspector{Workers: 4, Mailbox: &mailbox.Stats{DataLen: 3, DataCap: 64, Sent: 10, Received: 7}}
	edge := &inspector{InFlight: 5}
	tel.Register("pool", pool)
	tel.Register("listener", edge)

	resp, body := get(t, tel, "/debug/stages")
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	// Registration order; a stage the supervisor does not report is
	// not-started; the supervisor's other stages are not shown.
	want := `{
  "stages": [
    {
      "name": "pool",
      "state": "backoff",
      "restarts": 2,
      "last_error": "boom",
      "workers": 4,
      "mailbox": {
        "data_len": 3,
        "data_cap": 64,
        "control_len": 0,
        "control_cap": 0,
        "sent": 10,
        "received": 7,
        "blocked_sends": 0,
        "dropped": 0,
        "control_sent": 0,
        "control_received": 0
      }
    },
    {
      "name": "listener",
      "state": "not-started",
      "restarts": 0,
      "in_flight": 5
    }
  ]
}
`
	if body != want {
		t.Errorf("/debug/stages:\n%s\nwant:\n%s", body, want)
	}

	pool.Mailbox = &mailbox.Stats{DataLen: 9}
	_, text := get(t, tel, "/metrics")
	wantLines(t, text,
		`spooky_stage_queue_length{stage="pool"} 9`,
		`spooky_stage_queue_length{stage="listener"} 0`,
	)
}

func TestDebugUpstreamsAndUpstreamMetrics(t *testing.T) {
	tel := newTelemetry(16, nil)
	if _, body := get(t, tel, "/debug/upstreams"); body != "{\n  \"endpoints\": null\n}\n" {
		t.Errorf("/debug/upstreams before ShowUpstreams: %s", body)
	}
	balancer := func() BalancerStats {
		return BalancerStats{
			Endpoints: []upstream.Stats{
				{Group: "app", Address: "10.0.0.1:80", Weight: 1, Healthy: true, Requests: 7, Failures: 1, InFlight: 2, EWMAMillis: 12.5},
				{Group: "app", Address: "10.0.0.2:80", Weight: 1, Ejected: true, Ejections: 3},
			},
			Retries:        map[string]uint64{"web": 1, "app": 4},
			BreakerRejects: 5,
			HealthFlips:    6,
		}
	}
	pool := func() []ConnStats {
		return []ConnStats{
			{Group: "app", Address: "10.0.0.1:80", Conns: 2, Streams: 3},
			{Group: "gone", Address: "10.0.0.9:80", Conns: 1},
		}
	}
	tel.ShowUpstreams(balancer, pool)

	_, text := get(t, tel, "/metrics")
	wantLines(t, text,
		`spooky_upstream_requests_total{group="app",endpoint="10.0.0.1:80"} 7`,
		`spooky_upstream_failures_total{group="app",endpoint="10.0.0.1:80"} 1`,
		`spooky_upstream_ejections_total{group="app",endpoint="10.0.0.2:80"} 3`,
		`spooky_upstream_healthy{group="app",endpoint="10.0.0.1:80"} 1`,
		`spooky_upstream_healthy{group="app",endpoint="10.0.0.2:80"} 0`,
		`spooky_upstream_ejected{group="app",endpoint="10.0.0.2:80"} 1`,
		`spooky_upstream_in_flight{group="app",endpoint="10.0.0.1:80"} 2`,
		`spooky_upstream_latency_ewma_seconds{group="app",endpoint="10.0.0.1:80"} 0.0125`,
		`spooky_upstream_connections{group="app",endpoint="10.0.0.1:80"} 2`,
		`spooky_upstream_connections{group="app",endpoint="10.0.0.2:80"} 0`,
		`spooky_upstream_retries_total{group="app"} 4`,
		`spooky_upstream_retries_total{group="web"} 1`,
		`spooky_upstream_breaker_rejections_total 5`,
		`spooky_upstream_health_transitions_total 6`,
	)
	// Retries by group in name order.
	if strings.Index(text, `retries_total{group="app"}`) > strings.Index(text, `retries_total{group="web"}`) {
		t.Error("retries not in group order")
	}
	// Only the endpoints the balancer knows.
	noLinesWith(t, text, `spooky_upstream_connections{group="gone"`)

	_, body := get(t, tel, "/debug/upstreams")
	want := `{
  "endpoints": [
    {
      "group": "app",
      "address": "10.0.0.1:80",
      "weight": 1,
      "priority": 0,
      "healthy": true,
      "ejected": false,
      "ejections": 0,
      "in_flight": 2,
      "ewma_latency_ms": 12.5,
      "requests": 7,
      "failures": 1,
      "breaker_open": false,
      "conns": 2,
      "streams": 3
    },
    {
      "group": "app",
      "address": "10.0.0.2:80",
      "weight": 1,
      "priority": 0,
      "healthy": false,
      "ejected": true,
      "ejections": 3,
      "in_flight": 0,
      "ewma_latency_ms": 0,
      "requests": 0,
      "failures": 0,
      "breaker_open": false,
      "conns": 0,
      "streams": 0
    }
  ]
}
`
	if body != want {
		t.Errorf("/debug/upstreams:\n%s\nwant:\n%s", body, want)
	}
}

// configStatus is the control plane's status as telemetry sees it.
type configStatus struct {
	Version int    `json:"version"`
	Result  string `json:"last_result"`
	ok, bad uint64
}

func (s configStatus) Reloads() (ok, failed uint64) { return s.ok, s.bad }

func TestDebugConfig(t *testing.T) {
	tel := newTelemetry(16, nil)
	if resp, _ := get(t, tel, "/debug/config"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("/debug/config before ShowConfig: %s", resp.Status)
	}
	tel.ShowConfig(func() ConfigStatus { return configStatus{Version: 3, Result: "error", ok: 2, bad: 1} })
	resp, body := get(t, tel, "/debug/config")
	if want := "{\n  \"version\": 3,\n  \"last_result\": \"error\"\n}\n"; resp.StatusCode != 200 || body != want {
		t.Errorf("/debug/config: %s %s; want %s", resp.Status, body, want)
	}
	_, text := get(t, tel, "/metrics")
	wantLines(t, text,
		`spooky_config_reloads_total{result="ok"} 2`,
		`spooky_config_reloads_total{result="error"} 1`,
	)
}

func TestServeBindsTheAdminServerAndAppliesConfig(t *testing.T) {
	tel := newTelemetry(16, nil)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- tel.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	// Workers run once the admin server is bound, so a Reconfigure that
	// was applied says it is.
	next := *tel.config.Load()
	next.Stages.Telemetry = config.Stage{Workers: 2, Queue: 32}
	rc := stages.Reconfigure{Config: &next, Done: make(chan struct{})}
	if err := tel.Inbox().SendControl(ctx, rc); err != nil {
		t.Fatal(err)
	}
	<-rc.Done
	if info := tel.Inspect(); info.Workers != 2 {
		t.Errorf("workers %d after reload, want 2", info.Workers)
	}
	resp, err := http.Get(tel.AdminURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "spooky_telemetry_events_dropped_total 0\n") {
		t.Errorf("GET /metrics: %s\n%s", resp.Status, body)
	}
}

func TestServeFailsWhenTheAdminAddressIsTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	tel := newTelemetry(16, nil)
	next := *tel.config.Load()
	next.Admin.Address = taken.Addr().String()
	tel.config.Store(&next)
	err = tel.Serve(context.Background())
	var opErr *net.OpError
	if !errors.As(err, &opErr) || !strings.Contains(err.Error(), "telemetry: admin.address") {
		t.Errorf("Serve: %v; want the bind error naming admin.address", err)
	}
	if tel.AdminURL() != "" {
		t.Errorf("AdminURL %q without a server", tel.AdminURL())
	}
}

// TestAFailedAdminMoveIsRetriedOnTheNextReload: a reload to a taken
// address keeps the admin server where it was; once the address is free, a
// reload naming it again moves it.
func TestAFailedAdminMoveIsRetriedOnTheNextReload(t *testing.T) {
	tel := newTelemetry(16, nil)
	failed := make(chan struct{}, 1)
	tel.log = slog.New(slog.NewTextHandler(signalWriter(failed), nil))
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- tel.Serve(ctx) }()
	defer func() {
		cancel()
		<-served
	}()
	testkit.WaitFor(t, "the admin server", func() bool { return tel.AdminURL() != "" })
	first := tel.AdminURL()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := taken.Addr().String()
	reload := func() {
		next := *tel.config.Load()
		next.Admin.Address = target
		rc := stages.Reconfigure{Config: &next, Done: make(chan struct{})}
		if err := tel.Inbox().SendControl(ctx, rc); err != nil {
			t.Fatal(err)
		}
		testkit.Recv(t, rc.Done, "the reload to be applied")
	}
	reload()
	testkit.Recv(t, failed, "the failed move to be logged")
	taken.Close()
	if tel.AdminURL() != first {
		t.Fatalf("admin server at %s after a failed move; want it kept at %s", tel.AdminURL(), first)
	}
	reload()
	testkit.WaitFor(t, "the admin server to move", func() bool { return tel.AdminURL() == "http://"+target })
}

// signalWriter is a log destination that signals each line written.
type signalWriter chan struct{}

func (w signalWriter) Write(p []byte) (int, error) {
	select {
	case w <- struct{}{}:
	default:
	}
	return len(p), nil
}

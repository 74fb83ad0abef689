package main

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"spooky/config"
	"spooky/internal/testkit"
	"spooky/supervisor"
)

// TestStopIsBoundedAndNamesWhatWasStuck: a stage that does not stop keeps
// the daemon no longer than the drain timeout and the stop grace, and the
// error names it (exit code 4 in main).
func TestStopIsBoundedAndNamesWhatWasStuck(t *testing.T) {
	b := startBackend(t, "b1")
	d := newQuietDaemon(t, withListen(spookyConfig(allRoute, map[string][]string{"app": {b.addr}}), `drain_timeout: 100ms`))
	d.stopGrace = 100 * time.Millisecond
	d.supervisor.Add(supervisor.Spec{Name: "stuck", Service: stuckStage{until: t.Context().Done()}})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.run(ctx) }()
	if resp, body := get(t, h3Client(t), "https://"+d.listener.Addr().String()+"/"); resp.StatusCode != 200 {
		t.Fatalf("before the stop: %d %q", resp.StatusCode, body)
	}
	stop()
	if err := testkit.Recv(t, done, "the daemon to give up on the stuck stage"); !errors.Is(err, errStuck) || !strings.Contains(err.Error(), "stuck (running)") {
		t.Fatalf("run = %v; want errStuck naming the stuck stage", err)
	}
}

// newQuietDaemon makes a daemon on the config doc, logging nowhere, for a
// test to run itself; its sockets are closed when the test ends, since a
// run that gives up leaves them to the process's exit.
func newQuietDaemon(t *testing.T, doc string) *daemon {
	t.Helper()
	path := writeConfig(t, doc)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	d, err := newDaemon(path, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.pool.Close(); d.listener.Close() })
	return d
}

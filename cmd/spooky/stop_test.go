package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"spooky/config"
	"spooky/supervisor"
)

// TestStopIsBoundedAndNamesWhatWasStuck: a stage that does not stop keeps
// the daemon no longer than the drain timeout and the stop grace, and the
// error names it (exit code 4 in main).
func TestStopIsBoundedAndNamesWhatWasStuck(t *testing.T) {
	b := startBackend(t, "b1")
	doc := withListen(spookyConfig(allRoute, map[string][]string{"app": {b.addr}}), `drain_timeout: 100ms`)
	path := writeConfig(t, doc)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	d, err := newDaemon(path, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	d.stopGrace = 100 * time.Millisecond
	// run leaves the sockets to the process's exit when it gives up.
	t.Cleanup(func() { d.pool.Close(); d.listener.Close() })
	d.supervisor.Add(supervisor.Spec{Name: "stuck", Service: stuckStage{until: t.Context().Done()}})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.run(ctx) }()
	if resp, body := get(t, h3Client(t), "https://"+d.listener.Addr().String()+"/"); resp.StatusCode != 200 {
		t.Fatalf("before the stop: %d %q", resp.StatusCode, body)
	}
	stop()
	select {
	case err := <-done:
		if !errors.Is(err, errStuck) || !strings.Contains(err.Error(), "stuck (running)") {
			t.Fatalf("run = %v; want errStuck naming the stuck stage", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon did not give up on a stuck stage")
	}
}

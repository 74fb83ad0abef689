package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// bench is a running backend and spooky.
type bench struct {
	opts            options
	tmpDir          string // config and logs; removed by stop
	backend, spooky *child
	h2c, h3         string // the backend's h2c and HTTP/3 addresses
	listen, admin   string // spooky's HTTP/3 and admin addresses
	// directURL and viaURL are the base URLs of the two targets.
	directURL, viaURL string
}

// startBench starts the backend and spooky and waits until both answer. It
// returns what it started even on error, for the caller to stop. A child
// that exits before stop makes fail cancel the bench with why.
func startBench(ctx context.Context, opts options, fail context.CancelCauseFunc) (*bench, error) {
	dir, err := os.MkdirTemp("", "spooky-bench-")
	if err != nil {
		return nil, err
	}
	b := &bench{opts: opts, tmpDir: dir}
	for _, p := range []struct {
		addr    *string
		network string
	}{{&b.h2c, "tcp"}, {&b.h3, "udp"}, {&b.listen, "udp"}, {&b.admin, "tcp"}} {
		if *p.addr, err = freePort(p.network); err != nil {
			return b, err
		}
	}
	b.directURL, b.viaURL = "https://"+b.h3, "https://"+b.listen

	failed := func(err error) { fail(err) }
	b.backend, err = startChild("backend", filepath.Join(dir, "backend.log"), os.Environ(), failed,
		filepath.Join(opts.bin, "backend"), "-listen", b.h2c, "-h3", b.h3)
	if err != nil {
		return b, err
	}
	cfgPath := filepath.Join(dir, "spooky.yaml")
	cfg := spookyConfig{listen: b.listen, admin: b.admin, upstream: b.h2c, poolWorkers: opts.poolWorkers}
	if err := os.WriteFile(cfgPath, []byte(cfg.yaml()), 0o644); err != nil {
		return b, err
	}
	b.spooky, err = startChild("spooky", filepath.Join(dir, "spooky.log"), spookyEnv(os.Environ()), failed,
		filepath.Join(opts.bin, "spooky"), "-config", cfgPath)
	if err != nil {
		return b, err
	}

	waitCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for _, wait := range []func() error{
		func() error { return waitHTTP3(waitCtx, b.directURL+"/healthz") },
		func() error { return waitHTTP3(waitCtx, b.viaURL+"/healthz") },
		func() error { return waitHTTP(waitCtx, "http://"+b.admin+"/debug/stages") },
	} {
		if err := wait(); err != nil {
			if cause := context.Cause(ctx); cause != nil {
				return b, cause // a child died, or a signal came
			}
			return b, err
		}
	}
	return b, nil
}

// stop stops spooky first, so that it does not log its upstream vanishing,
// then the backend, and removes the temporary directory.
func (b *bench) stop() error {
	var err error
	for _, c := range []*child{b.spooky, b.backend} {
		if c != nil {
			err = errors.Join(err, c.stop())
		}
	}
	return errors.Join(err, os.RemoveAll(b.tmpDir))
}

// logTails returns the end of each server's output.
func (b *bench) logTails() string {
	var tails []string
	for _, c := range []*child{b.spooky, b.backend} {
		if c != nil {
			tails = append(tails, c.logTail())
		}
	}
	return strings.Join(tails, "\n")
}

// runOnce runs sc once against t.
func (b *bench) runOnce(ctx context.Context, sc scenario, rep int, t target) (runResult, error) {
	r := runResult{scenario: sc.name, rep: rep, target: t}
	url, wantBackend := b.directURL, b.h3
	if t == spooky {
		url, wantBackend = b.viaURL, b.h2c
	}
	res, err := loadRun{
		h3load:   filepath.Join(b.opts.bin, "h3load"),
		url:      url + sc.path,
		sc:       sc,
		warmup:   b.opts.warmup,
		duration: b.opts.duration,
		pids:     []int{b.spooky.pid(), b.backend.pid()},
	}.run(ctx)
	if cause := context.Cause(ctx); cause != nil {
		return r, cause
	}
	if err != nil {
		return r, fmt.Errorf("%s rep %d %s: %w", sc.name, rep, t, err)
	}
	r.res = res
	for _, p := range res.Processes {
		switch p.PID {
		case b.spooky.pid():
			r.spookyProc = p
		case b.backend.pid():
			r.backendProc = p
		}
	}
	// Every answer carries X-Backend with the address the backend served it
	// on: h2c through spooky, HTTP/3 directly. Anything else means the load
	// went somewhere it should not have.
	for name := range res.Backends {
		if name != wantBackend {
			return r, fmt.Errorf("%s rep %d %s: answered by %q, want %q only", sc.name, rep, t, name, wantBackend)
		}
	}
	return r, nil
}

// profile runs sc once more through spooky and saves spooky's CPU profile
// and the allocations it made over the measured window in the profile
// directory, as <scenario>.cpu.pprof and <scenario>.allocs.pprof.
func (b *bench) profile(ctx context.Context, sc scenario) error {
	if err := os.MkdirAll(b.opts.profileDir, 0o755); err != nil {
		return err
	}
	secs := strconv.Itoa(max(1, int(b.opts.duration.Seconds())))
	fetches := []struct{ url, file string }{
		{"/debug/pprof/profile?seconds=" + secs, sc.name + ".cpu.pprof"},
		{"/debug/pprof/allocs?seconds=" + secs, sc.name + ".allocs.pprof"},
	}
	errs := make(chan error, len(fetches))
	go func() {
		// The profiles start when the warm-up ends, with the measured window.
		select {
		case <-time.After(b.opts.warmup):
		case <-ctx.Done():
			for range fetches {
				errs <- ctx.Err()
			}
			return
		}
		for _, f := range fetches {
			go func() {
				errs <- fetchTo(ctx, "http://"+b.admin+f.url, filepath.Join(b.opts.profileDir, f.file))
			}()
		}
	}()
	_, runErr := b.runOnce(ctx, sc, 0, spooky)
	err := runErr
	for range fetches {
		err = errors.Join(err, <-errs)
	}
	if err != nil {
		return fmt.Errorf("profiling %s: %w", sc.name, err)
	}
	return nil
}

// fetchTo saves the body of a 200 answer from url to path.
func fetchTo(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s: %s", url, resp.Status, msg)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, resp.Body)
	return errors.Join(err, f.Close())
}

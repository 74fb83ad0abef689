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

	"spooky/bench/load"
	"spooky/certs"
)

// bench is a running backend and the proxies in front of it.
type bench struct {
	opts   options
	out    io.Writer // where progress is printed
	tmpDir string    // configs, certificate and logs; removed by stop
	fail   context.CancelCauseFunc
	starts int // proxies started so far, to name their files

	backend *child
	// h2c, h3 and https are the backend's h2c, HTTP/3 and HTTP/2 over TLS
	// addresses.
	h2c, h3, https string
	// directURL is the base URL of the backend's own HTTP/3 server, and
	// counts a connection to it to read its count of requests in flight;
	// directTCPURL is that of its HTTP/2 over TLS server.
	directURL, directTCPURL string
	counts                  *load.Conn

	// spooky is nil until a run needs it; spookyPool is its pool size and
	// spookyMemory whether a memory run has used it.
	spooky       *child
	spookyPool   int
	spookyMemory bool
	// listen is spooky's address for HTTP/3 (UDP) and HTTPS (TCP) alike,
	// admin its admin server's.
	listen, admin string
	viaURL        string

	// caddyBin is empty when Caddy does not run.
	caddyBin            string
	caddy               *child
	caddyMemory         bool
	caddyAddr, caddyURL string
	certFile, keyFile   string // the PEM files Caddy serves
}

// startBench starts the backend and waits until it answers; the proxies
// start when a run first needs them. It returns what it started even on
// error, for the caller to stop. A child that exits before stop makes fail
// cancel the bench with why.
func startBench(ctx context.Context, opts options, caddyBin string, out io.Writer, fail context.CancelCauseFunc) (*bench, error) {
	dir, err := os.MkdirTemp("", "spooky-bench-")
	if err != nil {
		return nil, err
	}
	b := &bench{opts: opts, out: out, tmpDir: dir, fail: fail, caddyBin: caddyBin}
	for _, p := range []struct {
		addr    *string
		network string
	}{{&b.h2c, "tcp"}, {&b.h3, "udp"}, {&b.https, "tcp"}} {
		if *p.addr, err = freePort(p.network); err != nil {
			return b, err
		}
	}
	b.directURL, b.directTCPURL = "https://"+b.h3, "https://"+b.https
	b.counts = load.NewConn(b.h3, insecureTLS)
	if caddyBin != "" {
		cert, err := certs.Dev()
		if err != nil {
			return b, err
		}
		b.certFile, b.keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		if err := writeCertPEM(cert, b.certFile, b.keyFile); err != nil {
			return b, err
		}
	}

	b.backend, err = startChild("backend", filepath.Join(dir, "backend.log"), os.Environ(), b.failed,
		filepath.Join(opts.bin, "backend"), "-listen", b.h2c, "-h3", b.h3, "-https", b.https)
	if err != nil {
		return b, err
	}
	if err := b.waitReady(ctx, load.ProtocolH3, b.directURL, "HTTP/3.0"); err != nil {
		return b, err
	}
	if err := b.waitReady(ctx, load.ProtocolH2, b.directTCPURL, "HTTP/2.0"); err != nil {
		return b, fmt.Errorf("%w (a backend binary older than the bench? run make build)", err)
	}
	fmt.Fprintf(out, "backend pid %d (h2c %s, HTTP/3 %s, HTTP/2 over TLS %s)\n", b.backend.pid(), b.h2c, b.h3, b.https)
	return b, nil
}

func (b *bench) failed(err error) { b.fail(err) }

// waitReady waits until the target at base answers over proto
// (load.ProtocolH3 or load.ProtocolH2) and checks which protocol the
// request reached the backend with: HTTP/3 or HTTP/2 when it is the
// backend's own server, HTTP/2 (h2c) through a proxy.
func (b *bench) waitReady(ctx context.Context, proto, base, backendProto string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	err := waitUp(ctx, proto, base+"/healthz")
	if err == nil {
		err = checkBackendProto(ctx, proto, base, backendProto)
	}
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.DeadlineExceeded) {
		return cause // a child died, or a signal came
	}
	return err
}

// ready makes sure the proxy that t goes through is running as a run of
// sc needs it: started, with the pool size sc needs for spooky, and
// started afresh for every run of a memory scenario or after one.
func (b *bench) ready(ctx context.Context, sc scenario, t target) error {
	switch t {
	case spooky:
		pool := b.opts.poolFor(sc)
		if b.spooky != nil && !sc.memory && !b.spookyMemory && b.spookyPool == pool {
			return nil
		}
		return b.startSpooky(ctx, pool, sc.memory)
	case caddy:
		if b.caddy != nil && !sc.memory && !b.caddyMemory {
			return nil
		}
		return b.startCaddy(ctx, sc.memory)
	}
	return nil
}

// startSpooky (re)starts spooky on fresh ports with pool workers.
func (b *bench) startSpooky(ctx context.Context, pool int, memory bool) (err error) {
	if b.spooky != nil {
		err = b.spooky.stop()
		b.spooky = nil
		if err != nil {
			return err
		}
	}
	// spooky serves HTTPS over TCP on the port of its QUIC socket.
	if b.listen, err = freePortBoth(); err != nil {
		return err
	}
	if b.admin, err = freePort("tcp"); err != nil {
		return err
	}
	b.viaURL = "https://" + b.listen
	b.starts++
	cfgPath := filepath.Join(b.tmpDir, fmt.Sprintf("spooky-%d.yaml", b.starts))
	cfg := spookyConfig{listen: b.listen, admin: b.admin, upstream: b.h2c, poolWorkers: pool}
	if err := os.WriteFile(cfgPath, []byte(cfg.yaml()), 0o644); err != nil {
		return err
	}
	b.spooky, err = startChild("spooky", filepath.Join(b.tmpDir, fmt.Sprintf("spooky-%d.log", b.starts)),
		spookyEnv(os.Environ()), b.failed, filepath.Join(b.opts.bin, "spooky"), "-config", cfgPath)
	if err != nil {
		return err
	}
	b.spookyPool, b.spookyMemory = pool, memory
	for _, proto := range []string{load.ProtocolH3, load.ProtocolH2} {
		if err := b.waitReady(ctx, proto, b.viaURL, "HTTP/2.0"); err != nil {
			return err
		}
	}
	waitCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := waitHTTP(waitCtx, "http://"+b.admin+"/debug/stages"); err != nil {
		return err
	}
	fmt.Fprintf(b.out, "spooky pid %d (HTTP/3 and HTTPS %s, admin %s, pool workers %d)\n", b.spooky.pid(), b.listen, b.admin, pool)
	return nil
}

// startCaddy (re)starts Caddy on a fresh port.
func (b *bench) startCaddy(ctx context.Context, memory bool) (err error) {
	if b.caddy != nil {
		err = b.caddy.stop()
		b.caddy = nil
		if err != nil {
			return err
		}
	}
	// Caddy serves HTTP/3 on the UDP port of the same number as its TLS
	// TCP port: find one free for both.
	if b.caddyAddr, err = freePortBoth(); err != nil {
		return err
	}
	b.caddyURL = "https://" + b.caddyAddr
	b.starts++
	home := filepath.Join(b.tmpDir, fmt.Sprintf("caddy-%d", b.starts))
	if err := os.MkdirAll(home, 0o755); err != nil {
		return err
	}
	cfgPath := filepath.Join(home, "caddy.json")
	cfg := caddyConfig{listen: b.caddyAddr, upstream: b.h2c, certFile: b.certFile, keyFile: b.keyFile,
		dataDir: filepath.Join(home, "data")}
	if err := os.WriteFile(cfgPath, cfg.json(), 0o644); err != nil {
		return err
	}
	b.caddy, err = startChild("caddy", filepath.Join(home, "caddy.log"), caddyEnv(os.Environ(), home), b.failed,
		b.caddyBin, "run", "--config", cfgPath)
	if err != nil {
		return err
	}
	b.caddyMemory = memory
	for _, proto := range []string{load.ProtocolH3, load.ProtocolH2} {
		if err := b.waitReady(ctx, proto, b.caddyURL, "HTTP/2.0"); err != nil {
			return err
		}
	}
	fmt.Fprintf(b.out, "caddy pid %d (TLS and HTTP/3 %s)\n", b.caddy.pid(), b.caddyAddr)
	return nil
}

// stop stops the proxies first, so that they do not log their upstream
// vanishing, then the backend, and removes the temporary directory.
func (b *bench) stop() error {
	var err error
	if b.counts != nil {
		b.counts.Close()
	}
	for _, c := range []*child{b.spooky, b.caddy, b.backend} {
		if c != nil {
			err = errors.Join(err, c.stop())
		}
	}
	return errors.Join(err, os.RemoveAll(b.tmpDir))
}

// logTails returns the end of each server's output.
func (b *bench) logTails() string {
	var tails []string
	for _, c := range []*child{b.spooky, b.caddy, b.backend} {
		if c != nil {
			tails = append(tails, c.logTail())
		}
	}
	return strings.Join(tails, "\n")
}

// targets returns the targets a scenario runs against, in column order.
func (b *bench) targets(sc scenario) []target {
	var ts []target
	if !sc.memory {
		ts = append(ts, direct)
	}
	ts = append(ts, spooky)
	if b.caddyBin != "" {
		ts = append(ts, caddy)
	}
	return ts
}

// runOnce runs sc once against t.
func (b *bench) runOnce(ctx context.Context, sc scenario, rep int, t target) (runResult, error) {
	r := runResult{scenario: sc.name, rep: rep, target: t}
	fail := func(err error) (runResult, error) {
		if cause := context.Cause(ctx); cause != nil {
			return r, cause
		}
		return r, fmt.Errorf("%s rep %d %s: %w", sc.name, rep, t, err)
	}
	if err := b.ready(ctx, sc, t); err != nil {
		return fail(err)
	}
	url, wantBackend, proxy := b.directURL, b.h3, (*child)(nil)
	if sc.overTCP() {
		url, wantBackend = b.directTCPURL, b.https
	}
	switch t {
	case spooky:
		url, wantBackend, proxy = b.viaURL, b.h2c, b.spooky
	case caddy:
		url, wantBackend, proxy = b.caddyURL, b.h2c, b.caddy
	}
	pids := []int{b.backend.pid()}
	if proxy != nil {
		pids = append(pids, proxy.pid())
	}
	left, err := b.quiesce(ctx)
	if err != nil {
		return fail(err)
	}
	if left > 0 {
		fmt.Fprintf(b.out, "note: the backend still serves %d request(s) of earlier runs\n", left)
	}
	lr := loadRun{
		h3load:   filepath.Join(b.opts.bin, "h3load"),
		url:      url + sc.requestPath(memoryRampLimit+b.opts.duration),
		sc:       sc,
		warmup:   b.opts.warmup,
		duration: b.opts.duration,
		pids:     pids,
	}
	var res load.Result
	if sc.memory {
		res, r.allHeld, err = b.runMemory(ctx, lr, sc.inFlight())
	} else {
		res, err = lr.run(ctx)
	}
	if err != nil {
		return fail(err)
	}
	r.res = res
	for _, p := range res.Processes {
		switch {
		case p.PID == b.backend.pid():
			r.backend = p
		case proxy != nil && p.PID == proxy.pid():
			r.proxy = p
		}
	}
	counts, err := inFlight(ctx, b.counts, b.directURL, false)
	if err != nil {
		return fail(err)
	}
	r.backendPeak = counts.Peak
	// Every answer carries X-Backend with the address the backend served it
	// on: h2c through a proxy, HTTP/3 or HTTP/2 over TLS directly. Anything
	// else means the load went somewhere it should not have.
	for name := range res.Backends {
		if name != wantBackend {
			return fail(fmt.Errorf("answered by %q, want %q only", name, wantBackend))
		}
	}
	return r, nil
}

// memoryRampLimit is how long a memory run may take to get every stream
// to the backend before it holds them for the measured duration.
const memoryRampLimit = 30 * time.Second

// runMemory runs a memory scenario's load until the backend holds all
// streams at once, then for lr.duration more, and stops it. It returns
// what h3load measured and how long after its start the backend held every
// stream, or -1 if that did not happen within memoryRampLimit, when the
// load runs memoryRampLimit + lr.duration in all. The run has no warm-up:
// the resident sets' peaks and the errors count from the start.
func (b *bench) runMemory(ctx context.Context, lr loadRun, streams int) (load.Result, time.Duration, error) {
	hold := lr.duration
	stop := make(chan struct{})
	lr.warmup, lr.duration, lr.stop = 0, memoryRampLimit+hold, stop
	var (
		res  load.Result
		err  error
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		res, err = lr.run(ctx)
	}()
	start := time.Now()
	allHeld := time.Duration(-1)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return res, allHeld, err
		case <-tick.C:
		}
		if allHeld >= 0 {
			if time.Since(start) >= allHeld+hold {
				close(stop)
				<-done
				return res, allHeld, err
			}
			continue
		}
		// A failed reading is tried again at the next tick; a backend
		// that stopped answering ends the bench through its child.
		if rep, err := inFlight(ctx, b.counts, b.directURL, false); err == nil && rep.Now >= int64(streams) {
			allHeld = time.Since(start)
		}
	}
}

// quiesce waits up to 10s for the backend to finish the requests of
// earlier runs (a proxy passes a client's cancel on to its upstream only
// so fast), then restarts its count of requests in flight. It returns how
// many were still being served.
func (b *bench) quiesce(ctx context.Context) (int64, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		rep, err := inFlight(ctx, b.counts, b.directURL, false)
		if err != nil {
			return 0, err
		}
		if rep.Now == 0 || time.Now().After(deadline) {
			rep, err = inFlight(ctx, b.counts, b.directURL, true)
			return rep.Now, err
		}
		select {
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// profile runs sc once more through spooky and saves spooky's CPU profile
// and the allocations it made over the measured window in the profile
// directory, as <scenario>.cpu.pprof and <scenario>.allocs.pprof. Not for
// memory scenarios, which restart spooky for every run.
func (b *bench) profile(ctx context.Context, sc scenario) error {
	if err := os.MkdirAll(b.opts.profileDir, 0o755); err != nil {
		return err
	}
	if err := b.ready(ctx, sc, spooky); err != nil {
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

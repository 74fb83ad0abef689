package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"spooky/bench/backend"
	"spooky/bench/load"
)

// stopGrace is how long a child has to stop after SIGTERM before it is
// killed: longer than the backend's own 5s grace and the 2s that spooky's
// and Caddy's bench configs give requests, so that they get to stop
// cleanly.
const stopGrace = 7 * time.Second

// child is a long-running process of the bench: the backend or a proxy.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once the process has exited
	err     error         // valid after done is closed
	// stopping is closed by stop, so the exit that follows is not reported
	// as a failure.
	stopping chan struct{}
}

// startChild starts argv with its output going to logPath. If the process
// exits before stop is called, failed is called with why, so the bench
// ends instead of measuring a dead target.
func startChild(name, logPath string, env []string, failed func(error), argv ...string) (*child, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = env
	cmd.SysProcAttr = childSysProcAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{}), stopping: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		logFile.Close()
		close(c.done)
		select {
		case <-c.stopping:
		default:
			failed(fmt.Errorf("%s (pid %d) exited during the bench: %v\n%s", name, cmd.Process.Pid, c.err, c.logTail()))
		}
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// stop asks the process to stop with SIGTERM and kills it if it has not
// within stopGrace. It returns the exit error only if it had to kill.
func (c *child) stop() error {
	close(c.stopping)
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return nil
	case <-time.After(stopGrace):
	}
	c.cmd.Process.Kill()
	<-c.done
	return fmt.Errorf("%s did not stop within %v of SIGTERM; killed", c.name, stopGrace)
}

// logTail returns the last lines of the child's output, to show why it
// failed.
func (c *child) logTail() string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return c.name + " output:\n  " + strings.Join(lines, "\n  ")
}

// freePort returns a loopback port nothing listens on for network "tcp" or
// "udp". Another process could take it before the caller binds it; on a
// bench machine nothing does.
func freePort(network string) (string, error) {
	switch network {
	case "tcp":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		defer ln.Close()
		return ln.Addr().String(), nil
	default:
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		defer pc.Close()
		return pc.LocalAddr().String(), nil
	}
}

// freePortBoth returns a loopback port free for both TCP and UDP, for a
// server (Caddy) that serves TLS and HTTP/3 on the same port number.
func freePortBoth() (string, error) {
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err == nil {
			pc.Close()
			return addr, nil
		}
	}
	return "", errors.New("no loopback port free for both TCP and UDP in 20 tries")
}

// insecureTLS trusts the self-signed certificates of the backend and the
// proxies.
var insecureTLS = &tls.Config{InsecureSkipVerify: true}

// waitUp waits until url answers 200 over proto (load.ProtocolH3 or
// load.ProtocolH2) with an X-Backend header, or ctx ends.
func waitUp(ctx context.Context, proto, url string) error {
	var last error
	for {
		if last = probe(ctx, proto, url); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s never answered: %w", url, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func probe(ctx context.Context, proto, url string) error {
	resp, _, err := getOnce(ctx, proto, url)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Backend") == "" {
		return fmt.Errorf("status %s, X-Backend %q", resp.Status, resp.Header.Get("X-Backend"))
	}
	return nil
}

// getOnce sends GET url on a connection of its own, a QUIC one, which can
// only carry HTTP/3, for load.ProtocolH3, a TCP one offering only h2 for
// load.ProtocolH2, and returns the response with its body read (up to
// 1 MiB).
func getOnce(ctx context.Context, proto, url string) (*http.Response, []byte, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, err
	}
	var conn interface {
		http.RoundTripper
		Close() error
	}
	if proto == load.ProtocolH2 {
		conn = load.NewH2Conn(insecureTLS)
	} else {
		conn = load.NewConn(req.URL.Host, insecureTLS)
	}
	defer conn.Close()
	return getOn(ctx, conn, url)
}

// protoName is the response protocol a client of proto gets.
func protoName(proto string) string {
	if proto == load.ProtocolH2 {
		return "HTTP/2.0"
	}
	return "HTTP/3.0"
}

// getOn sends GET url on conn, bounded to 2s, and returns the response with
// its body read (up to 1 MiB).
func getOn(ctx context.Context, conn http.RoundTripper, url string) (*http.Response, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := conn.RoundTrip(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp, body, err
}

// checkBackendProto asks base for /headers over proto and checks that the
// answer came over it and that the request reached the backend as want
// ("HTTP/2.0" through a proxy, which must speak h2c upstream; the client's
// protocol directly).
func checkBackendProto(ctx context.Context, proto, base, want string) error {
	resp, body, err := getOnce(ctx, proto, base+"/headers")
	if err != nil {
		return fmt.Errorf("%s/headers: %w", base, err)
	}
	var got backend.Received
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &got) != nil {
		return fmt.Errorf("%s/headers: %s: %.200q", base, resp.Status, body)
	}
	if resp.Proto != protoName(proto) || got.Proto != want {
		return fmt.Errorf("%s/headers: client got %s, backend got %s; want %s and %s",
			base, resp.Proto, got.Proto, protoName(proto), want)
	}
	return nil
}

// inFlight reads the backend's count of requests in flight over HTTP/3
// on conn, a connection to its own server at base; with reset, it also
// restarts the peak.
func inFlight(ctx context.Context, conn *load.Conn, base string, reset bool) (backend.InFlightReport, error) {
	url := base + backend.InFlightPath
	if reset {
		url += "?reset=1"
	}
	var rep backend.InFlightReport
	resp, body, err := getOn(ctx, conn, url)
	if err != nil {
		return rep, fmt.Errorf("%s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return rep, fmt.Errorf("%s: %s", url, resp.Status)
	}
	if err := json.Unmarshal(body, &rep); err != nil {
		return rep, fmt.Errorf("%s: %w (a backend binary older than the bench? run make build)", url, err)
	}
	return rep, nil
}

// waitHTTP waits until url answers 200 over HTTP/1, or ctx ends.
func waitHTTP(ctx context.Context, url string) error {
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s never answered: %w", url, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// loadRun is one invocation of the load generator.
type loadRun struct {
	h3load           string // path of bin/h3load
	url              string
	sc               scenario
	warmup, duration time.Duration
	pids             []int
	// stop, when closed, ends the run early the way a signal does: h3load
	// stops its load and still prints what it measured. Nil: run to the end.
	stop <-chan struct{}
}

// args are the arguments h3load runs with.
func (r loadRun) args() []string {
	args := []string{
		"-json",
		"-d", r.duration.String(), "-warmup", r.warmup.String(),
		"-c", strconv.Itoa(r.sc.conns), "-s", strconv.Itoa(r.sc.streams),
		"-X", r.sc.method,
	}
	if r.sc.proto != "" {
		args = append(args, "-proto", r.sc.proto)
	}
	if r.sc.bodySize > 0 {
		args = append(args, "-body-size", strconv.Itoa(r.sc.bodySize))
	}
	if len(r.pids) > 0 {
		pids := make([]string, len(r.pids))
		for i, p := range r.pids {
			pids[i] = strconv.Itoa(p)
		}
		args = append(args, "-pid", strings.Join(pids, ","))
	}
	return append(args, r.url)
}

// run execs h3load -json and returns its result. Each run gets a fresh
// load generator process, so no heap, GC pacing or goroutines carry over
// from one run to the next, and the harness stays idle while it measures.
func (r loadRun) run(ctx context.Context) (load.Result, error) {
	args := r.args()
	ctx, cancel := context.WithTimeout(ctx, r.warmup+r.duration+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.h3load, args...)
	cmd.SysProcAttr = childSysProcAttr()
	// Interrupted, h3load closes its connections before it exits, so
	// the servers are not left waiting on a client that is gone.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 3 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Start()
	if runErr == nil {
		exited := make(chan struct{})
		go func() {
			select {
			case <-r.stop: // never, when nil
				cmd.Process.Signal(os.Interrupt)
			case <-exited:
			}
		}()
		runErr = cmd.Wait()
		close(exited)
	}
	// h3load prints what it measured even when it also reports an error.
	var res load.Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil || res.Duration == 0 {
		return load.Result{}, fmt.Errorf("h3load %s: %v: %s", strings.Join(args, " "), runErr, strings.TrimSpace(stderr.String()))
	}
	if runErr != nil {
		return res, fmt.Errorf("h3load %s: %v: %s", strings.Join(args, " "), runErr, strings.TrimSpace(stderr.String()))
	}
	return res, nil
}

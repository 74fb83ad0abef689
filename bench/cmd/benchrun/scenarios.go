package main

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"spooky/bench/load"
)

// scenario is one load shape, run against the backend directly and through
// each proxy.
type scenario struct {
	name   string
	method string
	// path is requested on every target, with its query; a memory
	// scenario's gets the hold time added (requestPath).
	path string
	// bodySize is the request body each request sends; zero sends none.
	bodySize int
	// conns × streams requests are in flight at any moment.
	conns, streams int
	// bulk marks scenarios that move bodies large enough for bytes per
	// second, not requests per second, to be the figure that matters.
	bulk bool
	// proto is the protocol of the load: load.ProtocolH3 (empty is the
	// same) over QUIC, or load.ProtocolH2, HTTP/2 over TLS over TCP, sent
	// to spooky's and Caddy's TCP listeners on the port of their HTTP/3
	// ones, and directly to the backend's own HTTPS server.
	proto string
	// memory marks scenarios whose figure is what the proxies hold in
	// memory with every stream in flight at once: each request is held
	// open by the backend for longer than the run, the whole run is
	// measured (no warm-up), only the proxies are targets, and each is
	// started afresh for every run.
	memory bool
}

// overTCP says whether the scenario's load is HTTP/2 over TLS.
func (s scenario) overTCP() bool { return s.proto == load.ProtocolH2 }

// inFlight is how many requests the scenario keeps in flight.
func (s scenario) inFlight() int { return s.conns * s.streams }

// memoryHoldSlack is how much longer than its run a memory scenario's
// request is held by the backend, so that none is answered before the
// load generator stops.
const memoryHoldSlack = 5 * time.Second

// requestPath is the path, with its query, that a run of the scenario
// measuring for duration requests.
func (s scenario) requestPath(duration time.Duration) string {
	if !s.memory {
		return s.path
	}
	return s.path + "?d=" + (duration + memoryHoldSlack).String()
}

// scenarios lists every scenario, in the order they run. The backend has no
// route that swallows a body, so upload sends 1 MiB to /echo, which streams
// it back: every byte crosses the proxy both ways, and the throughput
// figure (response bytes) is one direction of it. The memory scenarios
// keep 1 000 and 10 000 streams open on /slow; HTTP/3 servers (quic-go's
// default, spooky's and Caddy's alike) let a client open 100 streams at a
// time per connection, hence 100 streams on each of 10 or 100 connections.
// tcp-small-4x16 is small-4x16 over HTTP/2 over TLS, each connection its
// own TCP connection: what spooky's TCP path costs, against the backend
// serving HTTP/2 over TLS itself.
var scenarios = []scenario{
	{name: "small-4x16", method: http.MethodGet, path: "/bytes?n=64", conns: 4, streams: 16},
	{name: "small-32x8", method: http.MethodGet, path: "/bytes?n=64", conns: 32, streams: 8},
	{name: "large-4x4", method: http.MethodGet, path: "/bytes?n=1048576", conns: 4, streams: 4, bulk: true},
	{name: "upload-4x4", method: http.MethodPost, path: "/echo", bodySize: 1 << 20, conns: 4, streams: 4, bulk: true},
	{name: "tcp-small-4x16", method: http.MethodGet, path: "/bytes?n=64", conns: 4, streams: 16, proto: load.ProtocolH2},
	{name: "mem-1k", method: http.MethodGet, path: "/slow", conns: 10, streams: 100, memory: true},
	{name: "mem-10k", method: http.MethodGet, path: "/slow", conns: 100, streams: 100, memory: true},
}

// selectScenarios returns the scenarios a comma-separated list names, in
// the order of the list; an empty list selects all of them.
func selectScenarios(list string) ([]scenario, error) {
	if strings.TrimSpace(list) == "" {
		return slices.Clone(scenarios), nil
	}
	var out []scenario
	for name := range strings.SplitSeq(list, ",") {
		name = strings.TrimSpace(name)
		i := slices.IndexFunc(scenarios, func(s scenario) bool { return s.name == name })
		if i < 0 {
			return nil, fmt.Errorf("unknown scenario %q; want some of %s", name, scenarioNames())
		}
		if slices.ContainsFunc(out, func(s scenario) bool { return s.name == name }) {
			return nil, fmt.Errorf("scenario %q named twice", name)
		}
		out = append(out, scenarios[i])
	}
	return out, nil
}

func scenarioNames() string {
	names := make([]string, len(scenarios))
	for i, s := range scenarios {
		names[i] = s.name
	}
	return strings.Join(names, ",")
}

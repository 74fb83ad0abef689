package main

import (
	"fmt"
	"strings"
)

// spookyConfig is what the bench config says; everything else keeps
// spooky's defaults, so the bench measures what a user gets.
type spookyConfig struct {
	listen   string // UDP host:port for HTTP/3
	admin    string // TCP host:port of the admin server
	upstream string // the backend's h2c host:port
	// poolWorkers bounds requests in flight upstream.
	poolWorkers int
}

// poolWorkersFor sizes the pool stage for the busiest of the scenarios:
// twice the requests they keep in flight, so a worker is always free for
// a request the load generator sends while another is being torn down,
// and never fewer than 64.
func poolWorkersFor(scs []scenario) int {
	n := 64
	for _, s := range scs {
		n = max(n, 2*s.inFlight())
	}
	return n
}

// yaml renders the config file spooky is started with.
func (c spookyConfig) yaml() string {
	var b strings.Builder
	b.WriteString("# Written by bench/cmd/benchrun for one benchmark run.\n")
	fmt.Fprintf(&b, "listen:\n  address: %q\n  drain_timeout: 2s\n", c.listen)
	fmt.Fprintf(&b, "admin:\n  address: %q\n", c.admin)
	b.WriteString("log:\n  level: warn\n")
	fmt.Fprintf(&b, "stages:\n  pool: { workers: %d, queue: %d }\n", c.poolWorkers, 4*c.poolWorkers)
	b.WriteString("routes:\n  - match: { host: \"*\", path_prefix: \"/\" }\n    upstream: bench\n    timeout: 30s\n")
	fmt.Fprintf(&b, "upstreams:\n  bench:\n    protocol: h2c\n    endpoints:\n      - { address: %q }\n", c.upstream)
	return b.String()
}

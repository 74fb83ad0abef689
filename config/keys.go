package config

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// key declares one configuration key: where it sits in the file, what it is
// when the file leaves it out, and what it means.
type key struct {
	// path names the key with dots between levels, "[]" after a list,
	// "<name>" for a name the operator chooses (an upstream group) and
	// "<a|b|c>" for one of a fixed set of names (the stages).
	path string
	// def is the default, written as a file would write it; the loader
	// reads a left-out key's def exactly as it reads the file's values, so
	// a default passes the same checks. "[a, b]" is a list. A path with
	// "<a|b|c>" has one default per name, in that order, separated by ", ".
	// Empty when the key has no default.
	def string
	// unset says what leaving out a key without a default means: "required",
	// "no checks", "system roots". It stands in the README's default column.
	unset string
	// doc is the key's meaning: one line of Markdown, the README's meaning
	// column.
	doc string
}

// keys declares every key of the file, in the order of the config reference
// in README.md. It is the only place a default is written: the loader takes
// left-out keys' defaults from here, a mapping in the file may hold only the
// keys declared under it here, and a test holds README.md's table to it.
var keys = []key{
	{path: "listen.address", def: "127.0.0.1:8443",
		doc: "UDP host:port for HTTP/3; by default HTTPS over TCP listens on it too (`listen.tcp`)"},
	{path: "listen.tls[].cert", unset: "unset: dev certificate",
		doc: "PEM certificate chain; `listen.tls` is one `{cert, key}` mapping or a list of them, chosen per handshake by SNI: a certificate naming the host exactly, then one whose wildcard (`*.example.com`, one label) matches, then the first; without `listen.tls` spooky makes a self-signed certificate for localhost in memory; reloaded on SIGHUP and when the files change"},
	{path: "listen.tls[].key", unset: "unset: dev certificate",
		doc: "PEM private key of its `cert`"},
	{path: "listen.admission_wait", def: "100ms",
		doc: "how long a request may wait for room in the router's mailbox before a `503`"},
	{path: "listen.drain_timeout", def: "15s",
		doc: "on SIGTERM/SIGINT, how long in-flight requests may run on"},
	{path: "listen.limits.request_header_bytes", def: "64KiB",
		doc: "request header fields, names and values with 32 bytes each for overhead (as HPACK and QPACK count them), beyond which the request gets `431`; over twice this quic-go itself resets the stream, and net/http answers `431`"},
	{path: "listen.limits.request_headers", def: "100",
		doc: "request header fields (each value counts), beyond which the request gets `431`"},
	{path: "listen.limits.request_body_bytes", def: "1GiB",
		doc: "request body; a larger declared `Content-Length` gets `413`, a body that grows past it unannounced has its stream reset (`0`: no limit)"},
	{path: "listen.limits.connections", def: "10000",
		doc: "QUIC and TCP connections open at once, together; a client over it is refused before its handshake (over TCP, closed at accept)"},
	{path: "listen.limits.connections_per_client", def: "100",
		doc: "QUIC and TCP connections open at once from one client IP address, together"},
	{path: "listen.limits.resets_per_second", def: "100",
		doc: "streams a client may reset before their response starts, per second per connection (bursts of twice that); a faster connection is closed with `H3_EXCESSIVE_LOAD` (rapid reset)"},
	{path: "listen.quic.allow_0rtt", def: "true",
		doc: "accept requests in TLS early data (0-RTT, RFC 8470): GET, HEAD and OPTIONS go upstream with `Early-Data: 1`, any other method gets `425 Too Early`; `false` offers no early data; applies to new connections"},
	{path: "listen.quic.idle_timeout", def: "60s",
		doc: "a QUIC connection with no packets either way for this long is closed (QUIC's max_idle_timeout); applies to new connections"},
	{path: "listen.quic.keep_alive", def: "0s",
		doc: "how often spooky pings an idle QUIC connection to keep it (and NAT bindings) open; `0s` sends no pings; applies to new connections"},
	{path: "listen.quic.max_stream_window", def: "6MiB",
		doc: "the most of one request's body a client may send ahead of spooky's reading it (QUIC stream flow control, auto-tuned up to this from 512 KiB); applies to new connections"},
	{path: "listen.quic.max_connection_window", def: "15MiB",
		doc: "the same for all of a connection's streams together; applies to new connections"},
	{path: "listen.quic.max_streams", def: "100",
		doc: "request streams a client may have open at once on one connection (QUIC `initial_max_streams_bidi`); applies to new connections"},
	{path: "listen.quic.max_handshakes", def: "1000",
		doc: "QUIC handshakes in progress at once; a client over it is refused"},
	{path: "listen.quic.retry_above", def: "500",
		doc: "new connections per second above which a client must first prove its address with a QUIC Retry (RFC 9000 §8.1.2); `0`: every client"},
	{path: "listen.write_idle_timeout", def: "30s",
		doc: "a client that takes no response bytes for this long (from seven eighths of it on) has its stream reset (over HTTP/1.1, its connection closed); the route's `timeout` bounds a response body too"},
	{path: "listen.tcp.enabled", def: "true",
		doc: "serve HTTPS over TCP too (HTTP/2 and HTTP/1.1 by ALPN, TLS 1.2 or later, the same certificate), so that clients that do not yet know spooky speaks HTTP/3 can find it (`Alt-Svc`); its requests take the same route, balancer and pool"},
	{path: "listen.tcp.address", unset: "`listen.address`",
		doc: "TCP host:port for HTTPS; left out, the host and port of `listen.address` (its port as bound, when that is `0`)"},
	{path: "listen.tcp.read_header_timeout", def: "10s",
		doc: "how long a TCP connection may take over its TLS handshake and, over HTTP/1.1, over each request's header; past it the connection is closed"},
	{path: "listen.tcp.idle_timeout", def: "60s",
		doc: "a TCP connection that carries no request for this long is closed"},
	{path: "listen.alt_svc.enabled", def: "true",
		doc: "every response over TCP carries `Alt-Svc: h3=\":PORT\"; ma=SECONDS` (RFC 7838), telling the client where spooky serves HTTP/3; `false` leaves it out"},
	{path: "listen.alt_svc.port", unset: "the QUIC port bound",
		doc: "the UDP port that `Alt-Svc` names, when clients reach spooky's QUIC socket through another port (a load balancer, a NAT)"},
	{path: "listen.alt_svc.max_age", def: "24h",
		doc: "how long a client may remember the `Alt-Svc` (its `ma`, written in whole seconds)"},
	{path: "trusted_proxies", def: "[]",
		doc: "CIDRs (`10.0.0.0/8`, `2001:db8::/32`) or bare IPs of the proxies in front of spooky whose forwarding headers it extends; from any other client they are replaced or removed (see [Headers](#headers)); `[]` trusts nobody; as `SPOOKY_TRUSTED_PROXIES`, comma-separated"},
	{path: "admin.address", def: "127.0.0.1:9901",
		doc: "TCP host:port of the admin server (`/debug/stages`, `/debug/config`, `/metrics`, `/debug/pprof/`)"},
	{path: "log.level", def: "info",
		doc: "`debug`, `info`, `warn` or `error`"},
	{path: "stages.<router|balancer|pool|telemetry>.workers", def: "2, 2, 1024, 1",
		doc: "goroutines reading the stage's mailbox; a pool worker holds a request until the upstream's response head is in (the listener relays the body), so `pool.workers` bounds requests waiting on upstreams, not downloads"},
	{path: "stages.<router|balancer|pool|telemetry>.queue", def: "1024, 1024, 4096, 4096",
		doc: "the stage's mailbox capacity"},
	{path: "routes[].name", unset: "host + path_prefix",
		doc: "label in metrics"},
	{path: "routes[].match.host", def: "*",
		doc: "`*`, an exact host, or `*.example.com`; port ignored, case-insensitive"},
	{path: "routes[].match.path_prefix", def: "/",
		doc: "request path prefix, matched as a string against the path with its dot-segments (`/./`, `/../`) resolved; the first matching route wins, in file order"},
	{path: "routes[].upstream", unset: "required",
		doc: "an upstream group name"},
	{path: "routes[].timeout", def: "30s",
		doc: "bounds the whole exchange, every retry included, from arrival to the last byte → `504`"},
	{path: "routes[].retries.attempts", def: "1",
		doc: "tries in all, the first included (1: no retry)"},
	{path: "routes[].retries.per_try_timeout", unset: "none",
		doc: "bounds one try until its response headers; a try that runs out may be retried (`504` condition)"},
	{path: "routes[].retries.on", def: "[connect-failure, refused-stream]",
		doc: "which failures are retried: `connect-failure`, `refused-stream`, `reset-before-response`, `502`, `503`, `504`, `425`"},
	{path: "upstreams.<name>.policy", def: "round_robin",
		doc: "`round_robin`, `weighted_round_robin` (smooth, nginx-style), `random`, `weighted_random`, `least_request` (power of two choices, weight-aware), `peak_ewma` (latency × load, unmeasured endpoints first), `ring_hash`, `maglev`, `fallback`"},
	{path: "upstreams.<name>.hash_on", def: "client_ip",
		doc: "key for `ring_hash`/`maglev`: `header:NAME`, `cookie:NAME`, `query:NAME`, `client_ip` (behind `trusted_proxies`, the nearest untrusted `X-Forwarded-For` hop), `path`, `authority`; a request without it is balanced round robin"},
	{path: "upstreams.<name>.groups", unset: "—",
		doc: "`fallback` only, instead of `endpoints`: a list of priority groups, each a list of endpoints; a group takes traffic only while every group before it has no available endpoint"},
	{path: "upstreams.<name>.health.path", unset: "no checks",
		doc: "active health check: `GET path` over the pool's own HTTP/2 connections"},
	{path: "upstreams.<name>.health.interval", def: "5s",
		doc: "between checks of one endpoint (±10% jitter)"},
	{path: "upstreams.<name>.health.timeout", def: "1s",
		doc: "bound on one check"},
	{path: "upstreams.<name>.health.healthy", def: "2",
		doc: "passes in a row that bring an unhealthy endpoint back"},
	{path: "upstreams.<name>.health.unhealthy", def: "3",
		doc: "failures in a row that take an endpoint out"},
	{path: "upstreams.<name>.health.expected_status", def: "200-399",
		doc: "passing status or range"},
	{path: "upstreams.<name>.outlier.consecutive_failures", def: "5",
		doc: "5xx, connect errors and resets in a row that eject an endpoint; `0` turns ejection off"},
	{path: "upstreams.<name>.outlier.base_ejection", def: "30s",
		doc: "the nth ejection lasts n × this"},
	{path: "upstreams.<name>.outlier.max_ejection_percent", def: "50",
		doc: "cap on the share of a group ejected at once (one may always go, unless it is the group's only endpoint)"},
	{path: "upstreams.<name>.limits.max_requests", def: "0",
		doc: "circuit breaker per endpoint (`0`: none): an endpoint with `max_requests + max_pending` requests picked and not finished is skipped; none left → `503`"},
	{path: "upstreams.<name>.limits.max_pending", def: "0",
		doc: "requests picked beyond `max_requests` that may wait for a stream or connection; only with `max_requests`"},
	{path: "upstreams.<name>.retry_budget.percent", def: "20",
		doc: "retries in flight to a group are capped at `percent` of its requests in flight, but at least `min_concurrency`"},
	{path: "upstreams.<name>.retry_budget.min_concurrency", def: "3",
		doc: "retries in flight to a group that `percent` never forbids"},
	{path: "upstreams.<name>.protocol", def: "h2c",
		doc: "`h2c` (HTTP/2 cleartext, prior knowledge) or `h2` (HTTP/2 over TLS)"},
	{path: "upstreams.<name>.max_connections", def: "64",
		doc: "HTTP/2 connections to one endpoint at most; requests beyond what they carry wait for a stream, within their route's timeout"},
	{path: "upstreams.<name>.idle_timeout", def: "90s",
		doc: "a connection to an endpoint, other than its first, that carries no stream for this long is closed (GOAWAY)"},
	{path: "upstreams.<name>.connect_timeout", def: "2s",
		doc: "bound on dialing one upstream connection"},
	{path: "upstreams.<name>.tls.ca", unset: "system roots",
		doc: "PEM CA file for `h2` upstreams"},
	{path: "upstreams.<name>.tls.server_name", unset: "endpoint host",
		doc: "name checked in the upstream certificate"},
	{path: "upstreams.<name>.tls.insecure_skip_verify", def: "false",
		doc: "skip certificate checks (labs only)"},
	{path: "upstreams.<name>.endpoints[].address", unset: "required",
		doc: "host:port"},
	{path: "upstreams.<name>.endpoints[].weight", def: "1",
		doc: "share for weighted policies and hash rings"},
}

// DefaultPolicy and DefaultRouteTimeout are the declared defaults of
// upstreams.<name>.policy and routes[].timeout, for code that builds a
// Config by hand.
var (
	DefaultPolicy       = mustDefault("upstreams.<name>.policy").(string)
	DefaultRouteTimeout = mustDuration(mustDefault("routes[].timeout").(string))
)

// lookup finds the key declared at path. The path names list items "[]"
// and upstream groups "<name>", as keys does, but a stage by its own name:
// "stages.pool.workers". It returns the key's default for that path as the
// loader reads it (a string, or a []any for a list), nil when there is none.
func lookup(path string) (def any, ok bool) {
	segs := strings.Split(path, ".")
	for _, k := range keys {
		ksegs := strings.Split(k.path, ".")
		if len(ksegs) != len(segs) {
			continue
		}
		alt, match := -1, true
		for i, s := range ksegs {
			if a, ok := alternative(s, segs[i]); ok {
				alt = a
				continue
			}
			if s != segs[i] {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		d := k.def
		if alt >= 0 {
			d = strings.Split(d, ", ")[alt]
		}
		return parseDefault(d), true
	}
	return nil, false
}

// alternative reports whether seg is one of the names of a "<a|b|c>"
// segment, and which.
func alternative(pattern, seg string) (int, bool) {
	names, ok := alternatives(pattern)
	if !ok {
		return 0, false
	}
	i := slices.Index(names, seg)
	return i, i >= 0
}

// alternatives splits a "<a|b|c>" segment into its names.
func alternatives(seg string) ([]string, bool) {
	if !strings.HasPrefix(seg, "<") || !strings.HasSuffix(seg, ">") || !strings.Contains(seg, "|") {
		return nil, false
	}
	return strings.Split(seg[1:len(seg)-1], "|"), true
}

// children lists, in the order of keys, the names a mapping at path may
// hold: the next level of every key declared below it, with a "<a|b|c>"
// level spelled out and the "[]" of a list left off.
func children(path string) []string {
	var segs []string
	if path != "" {
		segs = strings.Split(path, ".")
	}
	var names []string
	for _, k := range keys {
		ksegs := strings.Split(k.path, ".")
		if len(ksegs) <= len(segs) {
			continue
		}
		match := true
		for i, s := range segs {
			if _, ok := alternative(ksegs[i], s); !ok && ksegs[i] != s {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		next := []string{strings.TrimSuffix(ksegs[len(segs)], "[]")}
		if alts, ok := alternatives(next[0]); ok {
			next = alts
		}
		for _, n := range next {
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	return names
}

// parseDefault turns a declared default into the value a file would give:
// "" is none, "[a, b]" a list, anything else a string.
func parseDefault(def string) any {
	if def == "" {
		return nil
	}
	if inner, ok := strings.CutPrefix(def, "["); ok {
		if inner, ok = strings.CutSuffix(inner, "]"); ok {
			var list []any
			for item := range strings.SplitSeq(inner, ",") {
				if item = strings.TrimSpace(item); item != "" {
					list = append(list, item)
				}
			}
			return list
		}
	}
	return def
}

func mustDefault(path string) any {
	def, ok := lookup(path)
	if !ok || def == nil {
		panic("config: no default declared for " + path)
	}
	return def
}

func mustDuration(s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(fmt.Sprintf("config: declared default %q: %v", s, err))
	}
	return d
}

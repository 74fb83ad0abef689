// Package config owns spooky's configuration: the typed, immutable Config
// that every stage reads (config.go); the declaration of every key of the
// file, with its default and meaning, in one table (keys.go), which
// README.md's config reference must match; and the loading of a YAML file
// with SPOOKY_ environment overrides (load.go), decoded and validated in
// full (decode.go for single values, sections.go for each mapping), every
// problem reported as an Error naming key, value and what was expected.
//
// Fields are named after their keys (AdmissionWait is
// listen.admission_wait); a key's default and meaning are written in
// keys.go and nowhere else in code.
//
// A Config is never modified after Load returns it; a reload builds a new one.
package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"
)

// Config is one complete, validated configuration snapshot.
type Config struct {
	Listen Listen

	// TrustedProxies is trusted_proxies, parsed: the proxies in front of
	// spooky whose X-Forwarded-For and Forwarded it extends and whose other
	// forwarding headers it keeps; from every other client it replaces or
	// removes them. Empty (the default) trusts nobody. Each prefix is
	// masked; IPv4 ranges are IPv4, never IPv4-mapped IPv6, and a bare IP is
	// a /32 or /128.
	TrustedProxies []netip.Prefix

	Admin     Admin
	Log       Log
	Stages    Stages
	Routes    []Route
	Upstreams map[string]*Upstream

	// UpstreamNames lists the keys of Upstreams in sorted order, so that
	// everything that walks the groups does it in a stable order.
	UpstreamNames []string
}

// Listen is the client-facing side.
type Listen struct {
	// Address is listen.address, the UDP host:port for HTTP/3 (and, unless
	// TCP.Address says otherwise, the TCP one for HTTPS).
	Address string
	// TLS is listen.tls, the certificate and key files: one pair (the
	// file's single mapping) or several, chosen by SNI, the first the
	// default. Nil means dev mode: a self-signed certificate for localhost
	// is made in memory.
	TLS []TLS
	// AdmissionWait is listen.admission_wait: how long a request may wait
	// for room in the router's mailbox before it is shed with 503.
	AdmissionWait time.Duration
	// DrainTimeout is listen.drain_timeout. It bounds the graceful stop on
	// SIGTERM/SIGINT: requests still running after it are cut.
	DrainTimeout time.Duration
	// Limits bound what one client may ask of spooky (listen.limits).
	Limits ClientLimits
	// QUIC tunes the QUIC transport (listen.quic).
	QUIC QUIC
	// WriteIdleTimeout is listen.write_idle_timeout: how long a client may
	// take no response bytes before its stream is reset.
	WriteIdleTimeout time.Duration
	// TCP is listen.tcp, the HTTPS server over TCP.
	TCP TCP
	// AltSvc is listen.alt_svc, what responses over TCP say of HTTP/3.
	AltSvc AltSvc
}

// TCP is listen.tcp: HTTPS over TCP (HTTP/2 and HTTP/1.1) beside HTTP/3.
type TCP struct {
	Enabled bool // listen.tcp.enabled
	// Address is listen.tcp.address; empty means listen.address's host
	// and port (TCPAddress resolves it).
	Address           string
	ReadHeaderTimeout time.Duration // listen.tcp.read_header_timeout
	IdleTimeout       time.Duration // listen.tcp.idle_timeout
}

// AltSvc is listen.alt_svc.
type AltSvc struct {
	Enabled bool // listen.alt_svc.enabled
	// Port is listen.alt_svc.port; 0 means the UDP port the QUIC socket is
	// bound to.
	Port   int
	MaxAge time.Duration // listen.alt_svc.max_age
}

// TCPAddress is the host:port the TCP server binds: listen.tcp.address,
// or else listen.address, whose port 0 stands for udpPort, the port its
// UDP socket was given, so that both protocols share one port.
func (l Listen) TCPAddress(udpPort int) string {
	if l.TCP.Address != "" {
		return l.TCP.Address
	}
	host, port, err := net.SplitHostPort(l.Address)
	if err != nil || port != "0" {
		return l.Address
	}
	return net.JoinHostPort(host, strconv.Itoa(udpPort))
}

// ClientLimits is listen.limits: the bounds on what one client may ask.
type ClientLimits struct {
	RequestHeaderBytes   int64 // listen.limits.request_header_bytes
	RequestHeaders       int   // listen.limits.request_headers
	RequestBodyBytes     int64 // listen.limits.request_body_bytes; 0: none
	Connections          int   // listen.limits.connections
	ConnectionsPerClient int   // listen.limits.connections_per_client
	ResetsPerSecond      int   // listen.limits.resets_per_second
}

// QUIC is listen.quic.
type QUIC struct {
	IdleTimeout         time.Duration // listen.quic.idle_timeout
	KeepAlive           time.Duration // listen.quic.keep_alive; 0: none
	MaxStreamWindow     int64         // listen.quic.max_stream_window
	MaxConnectionWindow int64         // listen.quic.max_connection_window
	Allow0RTT           bool          // listen.quic.allow_0rtt
	MaxStreams          int           // listen.quic.max_streams
	MaxHandshakes       int           // listen.quic.max_handshakes
	RetryAbove          int           // listen.quic.retry_above; 0: always Retry
}

// TLS names a PEM certificate chain and its private key.
type TLS struct {
	Cert string
	Key  string
}

// Admin is the loopback debug and metrics server.
type Admin struct {
	// Address is admin.address, the TCP host:port.
	Address string
}

// Log sets the daemon's structured log.
type Log struct {
	// Level is log.level: debug, info, warn or error.
	Level string
}

// Stage is the tuning of one stage, stages.<name>: how many workers read its
// mailbox and how many envelopes the mailbox holds. Each stage has its own
// defaults.
type Stage struct {
	Workers int
	Queue   int
}

// Stages holds the tuning of every stage that has a mailbox.
type Stages struct {
	Router    Stage
	Balancer  Stage
	Pool      Stage
	Telemetry Stage
}

// Route sends matching requests to an upstream group.
type Route struct {
	// Name labels the route in metrics and logs. Left out, it is
	// host+path_prefix, e.g. "*/api".
	Name     string
	Match    Match
	Upstream string
	// Timeout bounds the whole exchange, from arrival to the last response
	// byte, every retry included.
	Timeout time.Duration
	Retries Retries
}

// Match selects requests.
type Match struct {
	// Host is an exact host name (port ignored, case-insensitive), a
	// "*.example.com" suffix wildcard, or "*" for any.
	Host string
	// PathPrefix matches the request path by prefix.
	PathPrefix string
}

// Upstream is one group of interchangeable backends.
type Upstream struct {
	Name string
	// Policy picks an endpoint for each request: one of Policies.
	Policy string
	// Protocol is h2c (HTTP/2 over cleartext TCP with prior knowledge) or
	// h2 (HTTP/2 over TLS).
	Protocol string
	// TLS configures h2 upstreams; ignored for h2c.
	TLS UpstreamTLS
	// ConnectTimeout bounds dialing one connection.
	ConnectTimeout time.Duration
	// MaxConnections caps the connections to one endpoint
	// (upstreams.<name>.max_connections).
	MaxConnections int
	// IdleTimeout is how long a surplus connection may carry no stream
	// before it is closed (upstreams.<name>.idle_timeout).
	IdleTimeout time.Duration
	// Endpoints lists the group's backends. For the fallback policy they
	// come from Groups instead, in priority order, each with its Priority.
	Endpoints []Endpoint
	// HashOn says what ring_hash and maglev hash: header:NAME, cookie:NAME,
	// query:NAME, client_ip, path or authority.
	HashOn HashOn
	// Health configures active health checks; nil means none.
	Health *Health
	// Outlier configures passive ejection on consecutive failures.
	Outlier Outlier
	// Limits is the per-endpoint circuit breaker.
	Limits Limits
	// RetryBudget caps retries to this group.
	RetryBudget RetryBudget
}

// HashOn is a parsed hash_on value.
type HashOn struct {
	Source string // header, cookie, query, client_ip, path, authority
	Name   string // for header (canonical form), cookie and query
}

// Health is an active health check, sent over the pool's HTTP/2
// connections.
type Health struct {
	// Path is requested with GET. Required.
	Path string
	// Interval between checks of one endpoint, with ±10% jitter.
	Interval time.Duration
	// Timeout bounds one check.
	Timeout time.Duration
	// Healthy is how many passes in a row make an unhealthy endpoint
	// healthy again.
	Healthy int
	// Unhealthy is how many failures in a row take an endpoint out.
	Unhealthy int
	// StatusMin and StatusMax bound the passing statuses, both included:
	// expected_status, a range such as "200-399" or one status, "204".
	StatusMin, StatusMax int
}

// Outlier is passive outlier detection: a 5xx, connect error or reset
// counts as a failure.
type Outlier struct {
	// ConsecutiveFailures ejects an endpoint after that many failures in a
	// row; 0 turns ejection off.
	ConsecutiveFailures int
	// BaseEjection is the first ejection's length; the nth lasts n times
	// as long.
	BaseEjection time.Duration
	// MaxEjectionPercent caps the share of a group out at once (at least
	// one endpoint may always be ejected, in a group of two or more).
	MaxEjectionPercent int
}

// Limits is the per-endpoint circuit breaker.
type Limits struct {
	// MaxRequests caps requests in flight to one endpoint; 0 means no cap.
	MaxRequests int
	// MaxPending allows that many more to be picked while waiting for a
	// stream or connection. An endpoint at MaxRequests+MaxPending is
	// skipped; when every endpoint is, the client gets 503. It counts only
	// when MaxRequests does.
	MaxPending int
}

// RetryBudget bounds retries in flight to a group: at most Percent of its
// active requests, but always at least MinConcurrency.
type RetryBudget struct {
	Percent        int
	MinConcurrency int
}

// Retries is a route's retry policy.
type Retries struct {
	// Attempts is the number of tries in all, the first included; 1 means
	// no retries.
	Attempts int
	// PerTryTimeout bounds one try until its response headers; 0 means
	// only the route timeout applies.
	PerTryTimeout time.Duration
	// On lists the failures that may be retried, each one of
	// RetryConditions.
	On []string
}

// RetryConditions lists the accepted retries.on values.
var RetryConditions = []string{"connect-failure", "refused-stream", "reset-before-response", "502", "503", "504", "425"}

// UpstreamTLS is the client side of TLS to an h2 upstream.
type UpstreamTLS struct {
	// CA is a PEM file of roots to trust. Empty means the system roots.
	CA string
	// ServerName overrides the name checked in the certificate. Empty means
	// the endpoint's host.
	ServerName string
	// InsecureSkipVerify turns off certificate checks; only for tests and
	// labs.
	InsecureSkipVerify bool
}

// Endpoint is one backend address.
type Endpoint struct {
	Address string
	// Weight is the endpoint's share for weighted policies.
	Weight int
	// Priority is the endpoint's fallback group: 0 for the first.
	Priority int
}

// Policies lists the balancing policies this build knows.
var Policies = []string{"round_robin", "weighted_round_robin", "random", "weighted_random", "least_request", "peak_ewma", "ring_hash", "maglev", "fallback"}

// Protocols lists the upstream protocols.
var Protocols = []string{"h2c", "h2"}

// LogLevels lists the accepted log.level values.
var LogLevels = []string{"debug", "info", "warn", "error"}

// Load reads the certificate and key files.
func (t *TLS) Load() (tls.Certificate, error) {
	return tls.LoadX509KeyPair(t.Cert, t.Key)
}

// RootCAs reads the CA file into a pool. It returns nil, nil when no CA file
// is set, which means the system roots.
func (t UpstreamTLS) RootCAs() (*x509.CertPool, error) {
	if t.CA == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(t.CA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificate in %s", t.CA)
	}
	return pool, nil
}

// Package config owns spooky's configuration schema: the typed, immutable
// Config that every stage reads, its defaults, and the loading and full
// validation of a YAML file with SPOOKY_ environment overrides.
//
// A Config is never modified after Load returns it; a reload builds a new one.
package config

import (
	"crypto/x509"
	"fmt"
	"os"
	"time"
)

// Config is one complete, validated configuration snapshot.
type Config struct {
	Listen    Listen
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
	// Address is the UDP host:port for HTTP/3. Default "127.0.0.1:8443".
	Address string
	// TLS names the certificate and key files. Nil means dev mode: a
	// self-signed certificate for localhost is made in memory.
	TLS *TLS
	// AdmissionWait is how long a request may wait for room in the router's
	// mailbox before it is shed with 503. Default 100ms.
	AdmissionWait time.Duration
	// DrainTimeout bounds the graceful stop on SIGTERM/SIGINT: requests
	// still running after it are cut. Default 15s.
	DrainTimeout time.Duration
}

// TLS names a PEM certificate chain and its private key.
type TLS struct {
	Cert string
	Key  string
}

// Admin is the loopback debug and metrics server.
type Admin struct {
	// Address is the TCP host:port. Default "127.0.0.1:9901".
	Address string
}

// Log sets the daemon's structured log.
type Log struct {
	// Level is debug, info, warn or error. Default info.
	Level string
}

// Stage is the tuning of one stage: how many workers read its mailbox and
// how many envelopes the mailbox holds.
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
	// Name labels the route in metrics and logs. Default host+path_prefix,
	// e.g. "*/api".
	Name     string
	Match    Match
	Upstream string
	// Timeout bounds the whole exchange, from arrival to the last response
	// byte, every retry included. Default 30s.
	Timeout time.Duration
	Retries Retries
}

// Match selects requests. Empty fields match everything.
type Match struct {
	// Host is an exact host name (port ignored, case-insensitive), a
	// "*.example.com" suffix wildcard, or "*" for any. Default "*".
	Host string
	// PathPrefix matches the request path by prefix. Default "/".
	PathPrefix string
}

// Upstream is one group of interchangeable backends.
type Upstream struct {
	Name string
	// Policy picks an endpoint for each request. Default round_robin.
	Policy string
	// Protocol is h2c (HTTP/2 over cleartext TCP with prior knowledge) or
	// h2 (HTTP/2 over TLS). Default h2c.
	Protocol string
	// TLS configures h2 upstreams; ignored for h2c.
	TLS UpstreamTLS
	// ConnectTimeout bounds dialing one connection. Default 2s.
	ConnectTimeout time.Duration
	// Endpoints lists the group's backends. For the fallback policy they
	// come from Groups instead, in priority order, each with its Priority.
	Endpoints []Endpoint
	// HashOn says what ring_hash and maglev hash: header:NAME, cookie:NAME,
	// query:NAME, client_ip, path or authority. Default client_ip.
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
	// Interval between checks of one endpoint, with ±10% jitter. Default 5s.
	Interval time.Duration
	// Timeout bounds one check. Default 1s.
	Timeout time.Duration
	// Healthy is how many passes in a row make an unhealthy endpoint
	// healthy again. Default 2.
	Healthy int
	// Unhealthy is how many failures in a row take an endpoint out.
	// Default 3.
	Unhealthy int
	// ExpectedStatus is the range of passing statuses, e.g. "200-399"
	// (the default) or "204".
	StatusMin, StatusMax int
}

// Outlier is passive outlier detection: a 5xx, connect error or reset
// counts as a failure.
type Outlier struct {
	// ConsecutiveFailures ejects an endpoint after that many failures in a
	// row. Default 5; 0 turns ejection off.
	ConsecutiveFailures int
	// BaseEjection is the first ejection's length; the nth lasts n times
	// as long. Default 30s.
	BaseEjection time.Duration
	// MaxEjectionPercent caps the share of a group out at once (at least
	// one endpoint may always be ejected, in a group of two or more).
	// Default 50.
	MaxEjectionPercent int
}

// Limits is the per-endpoint circuit breaker. Zero means no limit.
type Limits struct {
	// MaxRequests caps requests in flight to one endpoint.
	MaxRequests int
	// MaxPending allows that many more to be picked while waiting for a
	// stream or connection. An endpoint at MaxRequests+MaxPending is
	// skipped; when every endpoint is, the client gets 503.
	MaxPending int
}

// RetryBudget bounds retries in flight to a group: at most Percent of its
// active requests, but always at least MinConcurrency.
type RetryBudget struct {
	Percent        int // default 20
	MinConcurrency int // default 3
}

// Retries is a route's retry policy.
type Retries struct {
	// Attempts is the number of tries in all, the first included.
	// Default 1: no retries.
	Attempts int
	// PerTryTimeout bounds one try until its response headers; 0 means
	// only the route timeout applies.
	PerTryTimeout time.Duration
	// On lists the failures that may be retried: connect-failure,
	// refused-stream, reset-before-response, 502, 503, 504, 425.
	// Default connect-failure and refused-stream.
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
	// InsecureSkipVerify turns off certificate checks. Default false; only
	// for tests and labs.
	InsecureSkipVerify bool
}

// Endpoint is one backend address.
type Endpoint struct {
	Address string
	// Weight is the endpoint's share for weighted policies. Default 1.
	Weight int
	// Priority is the endpoint's fallback group: 0 for the first.
	Priority int
}

// Default values, named so that docs and code agree.
const (
	DefaultListenAddress  = "127.0.0.1:8443"
	DefaultAdminAddress   = "127.0.0.1:9901"
	DefaultAdmissionWait  = 100 * time.Millisecond
	DefaultDrainTimeout   = 15 * time.Second
	DefaultRouteTimeout   = 30 * time.Second
	DefaultConnectTimeout = 2 * time.Second
	DefaultPolicy         = "round_robin"
	DefaultProtocol       = "h2c"
)

// Policies lists the balancing policies this build knows.
var Policies = []string{"round_robin", "weighted_round_robin", "random", "weighted_random", "least_request", "peak_ewma", "ring_hash", "maglev", "fallback"}

// Protocols lists the upstream protocols.
var Protocols = []string{"h2c", "h2"}

// LogLevels lists the accepted log.level values.
var LogLevels = []string{"debug", "info", "warn", "error"}

func defaultStages() Stages {
	return Stages{
		Router:    Stage{Workers: 2, Queue: 1024},
		Balancer:  Stage{Workers: 2, Queue: 1024},
		Pool:      Stage{Workers: 1024, Queue: 4096},
		Telemetry: Stage{Workers: 1, Queue: 4096},
	}
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

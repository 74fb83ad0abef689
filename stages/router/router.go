// Package router owns the route table: it refuses malformed request
// targets, matches each request to a route by host and path prefix, applies
// the route's deadline, normalises the request headers for the upstream hop
// (trusting forwarding fields only from config's trusted proxies), and hands
// the envelope to the balancer.
package router

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path"
	"strings"
	"sync/atomic"

	"spooky/config"
	"spooky/envelope"
	"spooky/headers"
	"spooky/stages"
)

// Errors the client reads.
var (
	ErrNoRoute          = errors.New("no route for this host and path")
	ErrConnectForbidden = errors.New("CONNECT is not supported")
)

// Router is the routing stage.
type Router struct {
	*stages.Workers
	balancer *stages.Mailbox
	config   atomic.Pointer[config.Config]
}

// New makes a router reading inbox and handing on to balancer.
func New(cfg *config.Config, inbox, balancer *stages.Mailbox) *Router {
	r := &Router{Workers: stages.NewWorkers(inbox, cfg.Stages.Router.Workers), balancer: balancer}
	r.config.Store(cfg)
	return r
}

// Serve runs the workers until ctx ends.
func (r *Router) Serve(ctx context.Context) error { return r.Run(ctx, r) }

// Control applies a new config: later envelopes match the new routes.
func (r *Router) Control(c stages.Control) {
	if rc, ok := c.(stages.Reconfigure); ok {
		r.config.Store(rc.Config)
		r.Tune(rc.Config.Stages.Router)
	}
}

// Handle routes one envelope: a CONNECT gets 405, a malformed target 400
// (checkTarget), a request no route matches 404; the rest go on to the
// balancer with the route's deadline and the headers for the upstream hop.
func (r *Router) Handle(e *envelope.Envelope) {
	req := e.Request
	if req.Method == http.MethodConnect {
		e.Finish(http.StatusMethodNotAllowed, ErrConnectForbidden)
		return
	}
	if err := checkTarget(req.RequestURI, req.Host); err != nil {
		e.Finish(http.StatusBadRequest, err)
		return
	}
	cfg := r.config.Load()
	i := Match(cfg.Routes, req.Host, matchPath(req.URL.Path))
	if i < 0 {
		e.Finish(http.StatusNotFound, ErrNoRoute)
		return
	}
	e.Route = &cfg.Routes[i]
	e.SetDeadline(e.Arrived.Add(e.Route.Timeout))
	headers.ToUpstream(req.Header, e.ClientAddr, cfg.TrustedProxies, headers.ViaFor(req))
	stages.HandOn(r.balancer, e)
}

// Match returns the index of the first route that matches host and path, or
// -1. host may carry a port, which is ignored.
func Match(routes []config.Route, host, path string) int {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	// A fully qualified name's final dot names the same host (RFC 1034
	// §3.1): example.com. is example.com.
	host = strings.TrimSuffix(host, ".")
	for i := range routes {
		m := &routes[i].Match
		if strings.HasPrefix(path, m.PathPrefix) && hostMatches(m.Host, host) {
			return i
		}
	}
	return -1
}

// hostMatches compares case-insensitively; pattern is already lower case.
func hostMatches(pattern, host string) bool {
	switch {
	case pattern == "*":
		return true
	case strings.HasPrefix(pattern, "*."):
		suffix := pattern[1:]
		return len(host) > len(suffix) && strings.EqualFold(host[len(host)-len(suffix):], suffix)
	default:
		return strings.EqualFold(pattern, host)
	}
}

// matchPath is the path a route matches against: with its dot-segments
// resolved (RFC 3986 §5.2.4), so that /public/../admin is routed as the
// /admin the upstream will serve, not by its /public prefix. The path the
// upstream receives is the client's, unchanged.
func matchPath(p string) string {
	if !strings.Contains(p, "/.") {
		return p
	}
	clean := path.Clean(p)
	if strings.HasSuffix(p, "/") && clean != "/" {
		clean += "/"
	}
	return clean
}

package pool

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"spooky/config"
	"spooky/stages/pool/h2"
)

// Health checks on idle connections: a connection that has read nothing for
// readIdleTimeout is pinged, and closed if the answer takes longer than
// pingTimeout, so a dead upstream is found before a request is sent to it.
const (
	readIdleTimeout = 30 * time.Second
	pingTimeout     = 5 * time.Second
)

// connector makes the connections of one upstream group. It is immutable;
// a reload builds a new one, so that a CA file that changed under the same
// name is read again.
type connector struct {
	scheme  string
	timeout time.Duration
	dialer  net.Dialer
	tls     *tls.Config // nil for h2c
}

func newConnector(u *config.Upstream) (*connector, error) {
	c := &connector{scheme: "http", timeout: u.ConnectTimeout}
	if u.Protocol == "h2" {
		roots, err := u.TLS.RootCAs()
		if err != nil {
			return nil, fmt.Errorf("pool: upstream %q: %w", u.Name, err)
		}
		c.scheme = "https"
		c.tls = &tls.Config{
			NextProtos:         []string{"h2"},
			RootCAs:            roots,
			ServerName:         u.TLS.ServerName,
			InsecureSkipVerify: u.TLS.InsecureSkipVerify,
			MinVersion:         tls.VersionTLS12,
		}
	}
	return c, nil
}

// connect dials addr and starts an HTTP/2 connection on it. The group's
// connect timeout bounds the whole of it: TCP, TLS and the exchange of
// settings, after which the connection knows the peer's
// MAX_CONCURRENT_STREAMS.
func (c *connector) connect(ctx context.Context, addr string) (*h2.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	raw, err := c.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	nc, err := c.secure(ctx, raw, addr)
	if err != nil {
		raw.Close()
		return nil, err
	}
	// Handshake closes the connection itself when it fails.
	return h2.Handshake(ctx, nc, h2.Config{ReadIdleTimeout: readIdleTimeout, PingTimeout: pingTimeout})
}

// secure runs the TLS handshake over s for an h2 group and fails unless
// ALPN chose h2; for h2c it returns s as it is.
func (c *connector) secure(ctx context.Context, s net.Conn, addr string) (net.Conn, error) {
	if c.tls == nil {
		return s, nil
	}
	cfg := c.tls
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	tc := tls.Client(s, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
		return nil, fmt.Errorf("pool: %s negotiated ALPN %q, not h2", addr, p)
	}
	return tc, nil
}

// dialCall is one dial in flight to an endpoint. Its fields are valid after
// done is closed.
type dialCall struct {
	done chan struct{}
	err  error
}

// endpointConns holds the HTTP/2 connections to one endpoint.
//
// get returns a connection on which a stream has been reserved with
// Conn.Reserve, so the caller must follow with exactly one RoundTrip on it;
// RoundTrip takes the reservation over, even when it fails at once. get reuses the first connection that can take another stream and
// dials a new one only when every connection is full (the peer's
// MAX_CONCURRENT_STREAMS) or going away. Concurrent callers that find no
// room share one dial. A connection that has closed is dropped the next
// time the list is looked at; one that is going away stays listed, taking
// no new streams, until it closes.
//
// Dials run in goroutines counted by wg and end with ctx, the pool's
// lifetime, so that callers that give up do not cancel a dial that others
// wait on or that warms the endpoint.
type endpointConns struct {
	addr string
	ctx  context.Context
	wg   *sync.WaitGroup

	mu      sync.Mutex
	conns   []*h2.Conn
	dialing *dialCall // nil when no dial is in flight
	closed  bool      // set once ec is removed from the pool; nothing is added after
}

func newEndpointConns(ctx context.Context, wg *sync.WaitGroup, addr string) *endpointConns {
	return &endpointConns{addr: addr, ctx: ctx, wg: wg}
}

// get returns a connection with a stream reserved for the caller, dialing
// with c when none has room. It gives up when ctx ends.
func (ec *endpointConns) get(ctx context.Context, c *connector) (*h2.Conn, error) {
	for {
		ec.mu.Lock()
		if ec.closed {
			ec.mu.Unlock()
			return nil, ErrNoEndpoint
		}
		if cc := ec.reserveLocked(); cc != nil {
			ec.mu.Unlock()
			return cc, nil
		}
		call := ec.dialLocked(c)
		ec.mu.Unlock()

		select {
		case <-call.done:
			if call.err != nil {
				return nil, call.err
			}
			// The new connection is in the list now; the next turn
			// reserves on it unless other callers filled it first.
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// warm starts a dial with c if ec has no live connection and none is being
// dialed.
func (ec *endpointConns) warm(c *connector) {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	ec.pruneLocked()
	if !ec.closed && ec.dialing == nil && len(ec.conns) == 0 {
		ec.dialLocked(c)
	}
}

// reserveLocked reserves a stream on the first live connection that can
// take one, or returns nil.
func (ec *endpointConns) reserveLocked() *h2.Conn {
	ec.pruneLocked()
	for _, c := range ec.conns {
		if c.Reserve() {
			return c
		}
	}
	return nil
}

// pruneLocked drops the connections that have closed.
func (ec *endpointConns) pruneLocked() {
	live := ec.conns[:0]
	for _, c := range ec.conns {
		if !c.Closed() {
			live = append(live, c)
		}
	}
	// Zero the freed tail so dropped connections can be collected.
	clear(ec.conns[len(live):])
	ec.conns = live
}

// dialLocked returns the dial in flight, starting one with c if there is
// none.
func (ec *endpointConns) dialLocked(c *connector) *dialCall {
	if ec.dialing != nil {
		return ec.dialing
	}
	call := &dialCall{done: make(chan struct{})}
	ec.dialing = call
	ec.wg.Go(func() { ec.dial(call, c) })
	return call
}

func (ec *endpointConns) dial(call *dialCall, c *connector) {
	cn, err := c.connect(ec.ctx, ec.addr)
	if err != nil {
		// The client only reads the sentinel, so the cause is kept here.
		slog.Debug("pool: dial failed", "endpoint", ec.addr, "err", err)
		err = ErrConnectFailed
	}

	ec.mu.Lock()
	ec.dialing = nil
	keep := err == nil && !ec.closed
	if keep {
		ec.conns = append(ec.conns, cn)
	}
	ec.mu.Unlock()
	if err == nil && !keep {
		// ec was removed from the pool while the dial was in flight.
		cn.Close()
		err = ErrNoEndpoint
	}

	call.err = err
	close(call.done)
}

// detach stops ec from handing out connections and returns the ones it
// held, for the caller to close.
func (ec *endpointConns) detach() []*h2.Conn {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	ec.closed = true
	conns := ec.conns
	ec.conns = nil
	return conns
}

// stats counts the live connections and their active streams.
func (ec *endpointConns) stats() (conns, streams int) {
	ec.mu.Lock()
	ec.pruneLocked()
	for _, c := range ec.conns {
		streams += c.ActiveStreams()
	}
	conns = len(ec.conns)
	ec.mu.Unlock()
	return conns, streams
}

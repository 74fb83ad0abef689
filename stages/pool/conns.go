package pool

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"spooky/config"
	"spooky/stages/pool/h2"
	"spooky/supervisor"
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
	scheme      string
	timeout     time.Duration
	maxConns    int           // upstreams.<name>.max_connections, per endpoint
	idleTimeout time.Duration // upstreams.<name>.idle_timeout
	dialer      net.Dialer
	tls         *tls.Config // nil for h2c
}

func newConnector(u *config.Upstream) (*connector, error) {
	c := &connector{scheme: "http", timeout: u.ConnectTimeout, maxConns: u.MaxConnections, idleTimeout: u.IdleTimeout}
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
// RoundTrip takes the reservation over, even when it fails at once. get
// reuses the first connection that can take another stream and dials a new
// one only when every connection is full (the peer's
// MAX_CONCURRENT_STREAMS) or going away, and never more than the group's
// max_connections. Concurrent callers that find no room share one dial.
// A dial whose connection offers no stream slot at all (a peer at
// MAX_CONCURRENT_STREAMS 0, which RFC 9113 allows for a while) is not
// followed by another at once: the next waits a backoff, from
// noSlotBackoff doubling to maxNoSlotBackoff. Callers that may not dial
// wait for a stream to end (done) or the backoff to pass, as long as their
// context allows. A connection that has closed is dropped the next time
// the list is looked at; one that is going away stays listed, taking no
// new streams, until it closes.
//
// Dials run in goroutines counted by wg and end with ctx, the pool's
// lifetime, so that callers that give up do not cancel a dial that others
// wait on or that warms the endpoint.
type endpointConns struct {
	addr string
	ctx  context.Context
	wg   *sync.WaitGroup
	log  *failureLog

	mu       sync.Mutex
	conns    []*h2.Conn
	lastUsed map[*h2.Conn]time.Time // when each connection last had a stream reserved
	dialing  *dialCall              // nil when no dial is in flight
	closed   bool                   // set once ec is removed from the pool; nothing is added after
	freed    chan struct{}          // closed when a stream ends, waking callers that wait for room
	nextDial time.Time              // no dial before this: the last one offered no stream slot
	backoff  time.Duration          // the wait after the next dial that offers no slot

	waiters     atomic.Int32  // callers of get waiting for room
	noSlotDials atomic.Uint64 // dials whose connection offered no stream slot
}

// The backoff between dials whose connections offer no stream slot.
const (
	noSlotBackoff    = 100 * time.Millisecond
	maxNoSlotBackoff = 5 * time.Second
)

func newEndpointConns(ctx context.Context, wg *sync.WaitGroup, addr string, log *slog.Logger) *endpointConns {
	return &endpointConns{addr: addr, ctx: ctx, wg: wg, log: newFailureLog(log, addr),
		lastUsed: make(map[*h2.Conn]time.Time), freed: make(chan struct{}), backoff: noSlotBackoff}
}

// get returns a connection with a stream reserved for the caller, dialing
// with c when none has room and the limits allow. It gives up when ctx
// ends.
func (ec *endpointConns) get(ctx context.Context, c *connector) (*h2.Conn, error) {
	var retry *time.Timer
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
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
		var dialed <-chan struct{}
		var backedOff <-chan time.Time
		var call *dialCall
		switch wait := time.Until(ec.nextDial); {
		case ec.dialing != nil:
			call = ec.dialing
		case len(ec.conns) >= c.maxConns:
			// Wait for a stream to end on one of them.
		case wait > 0:
			if retry == nil {
				retry = time.NewTimer(wait)
			} else {
				retry.Reset(wait)
			}
			backedOff = retry.C
		default:
			call = ec.dialLocked(c)
		}
		freed := ec.freed
		ec.waiters.Add(1)
		ec.mu.Unlock()
		if call != nil {
			dialed = call.done
		}

		select {
		case <-dialed:
			if call.err != nil {
				return nil, call.err
			}
			// The new connection is in the list now; the next turn
			// reserves on it unless other callers filled it first.
		case <-freed:
		case <-backedOff:
		case <-ctx.Done():
			ec.waiters.Add(-1)
			return nil, ctx.Err()
		}
		ec.waiters.Add(-1)
	}
}

// streamEnded wakes the callers waiting for room on ec, if any: a stream
// the pool reserved has ended. It costs one atomic load when nobody waits.
func (ec *endpointConns) streamEnded() {
	if ec.waiters.Load() == 0 {
		return
	}
	ec.mu.Lock()
	close(ec.freed)
	ec.freed = make(chan struct{})
	ec.mu.Unlock()
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
			ec.lastUsed[c] = time.Now()
			return c
		}
	}
	return nil
}

// pruneLocked drops the connections that have closed.
func (ec *endpointConns) pruneLocked() {
	live := ec.conns[:0]
	for _, c := range ec.conns {
		if c.Closed() {
			delete(ec.lastUsed, c)
		} else {
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
	var cn *h2.Conn
	var err error
	// A dial that panics fails like one that errs: the callers waiting on
	// it must hear.
	supervisor.Guard(ec.log.log, "dial", func() { cn, err = c.connect(ec.ctx, ec.addr) }, func(perr error) { err = perr })()
	if err != nil {
		// The client only reads the sentinel, so the cause is logged
		// here.
		ec.log.failed("connect", err)
		err = ErrConnectFailed
	}

	ec.mu.Lock()
	ec.dialing = nil
	keep := err == nil && !ec.closed
	if keep {
		ec.conns = append(ec.conns, cn)
		ec.lastUsed[cn] = time.Now()
		if cn.PeerMaxStreams() == 0 {
			ec.nextDial = time.Now().Add(ec.backoff)
			ec.backoff = min(2*ec.backoff, maxNoSlotBackoff)
			ec.noSlotDials.Add(1)
		} else {
			ec.backoff = noSlotBackoff
		}
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

// closeIdle shuts down gracefully the connections beyond the first that have
// had no stream for idle, and reports how many it shut down. The first live
// connection stays, warm.
func (ec *endpointConns) closeIdle(idle time.Duration, shutdown func(*h2.Conn)) int {
	ec.mu.Lock()
	ec.pruneLocked()
	var surplus []*h2.Conn
	if len(ec.conns) > 1 {
		keep := ec.conns[:1]
		for _, c := range ec.conns[1:] {
			if c.ActiveStreams() == 0 && time.Since(ec.lastUsed[c]) >= idle {
				surplus = append(surplus, c)
				delete(ec.lastUsed, c)
				continue
			}
			keep = append(keep, c)
		}
		clear(ec.conns[len(keep):])
		ec.conns = keep
	}
	ec.mu.Unlock()
	for _, c := range surplus {
		shutdown(c)
	}
	return len(surplus)
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

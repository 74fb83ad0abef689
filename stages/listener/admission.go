package listener

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"spooky/config"
)

// Why a client, a connection or a request was refused: the reasons on
// spooky_refused_total{stage="listener"}, one per limit.
const (
	refusedConnections = "connections"
	refusedPerClient   = "connections_per_client"
	refusedHandshakes  = "handshakes"
	refusedHeaderBytes = "request_header_bytes"
	refusedHeaders     = "request_headers"
	refusedBodyBytes   = "request_body_bytes"
	refusedRapidReset  = "resets_per_second"
	retriedAddress     = "retry" // not a refusal: a client asked to prove its address
	numRefusalReasons  = 8
)

var errConnectionRefused = errors.New("listener: connection refused by listen.limits")

var refusalReasons = [numRefusalReasons]string{
	refusedConnections, refusedPerClient, refusedHandshakes, refusedHeaderBytes,
	refusedHeaders, refusedBodyBytes, refusedRapidReset, retriedAddress,
}

// refusals counts refusals by reason.
type refusals [numRefusalReasons]atomic.Uint64

func (r *refusals) add(reason string) {
	for i, name := range refusalReasons {
		if name == reason {
			r[i].Add(1)
			return
		}
	}
	panic("listener: unknown refusal reason " + reason)
}

func (r *refusals) snapshot() map[string]uint64 {
	m := make(map[string]uint64, numRefusalReasons)
	for i, name := range refusalReasons {
		m[name] = r[i].Load()
	}
	return m
}

// admission decides which QUIC connections the listener takes, before
// their handshake costs anything: at most limits.connections in all,
// limits.connections_per_client from one IP address, and
// quic.max_handshakes handshaking at once. Above quic.retry_above new
// connections a second, a client must first prove its address with a
// Retry, so that a flood of spoofed Initials costs one packet each and no
// state.
type admission struct {
	refused *refusals

	mu          sync.Mutex
	limits      config.ClientLimits
	quic        config.QUIC
	total       int
	perClient   map[netip.Addr]int
	handshaking int
	open        map[*conn]struct{} // every admitted connection, for the drain
	// A token bucket of new connections a second, for Retry: tokens
	// accrue at quic.retry_above a second up to that many.
	tokens float64
	filled time.Time
}

func newAdmission(cfg *config.Config, refused *refusals) *admission {
	a := &admission{refused: refused, perClient: make(map[netip.Addr]int), open: make(map[*conn]struct{})}
	a.apply(cfg)
	return a
}

// apply takes a new config's limits; connections already open stay.
func (a *admission) apply(cfg *config.Config) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.limits, a.quic = cfg.Listen.Limits, cfg.Listen.QUIC
}

// conn is one admitted connection's share of the limits, kept in its
// context; released when the connection ends.
type conn struct {
	a         *admission
	client    netip.Addr
	handshook atomic.Bool
	released  atomic.Bool
	quic      atomic.Pointer[quic.Conn]
	resets    resetBucket
	active    atomic.Int32 // requests being served on it
}

type connKey struct{}

// connContext is quic.Transport.ConnContext: it admits a new connection or
// refuses it (quic-go then answers CONNECTION_REFUSED).
func (a *admission) connContext(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	client := clientIP(info.RemoteAddr)
	a.mu.Lock()
	reason := ""
	switch {
	case a.total >= a.limits.Connections:
		reason = refusedConnections
	case a.perClient[client] >= a.limits.ConnectionsPerClient:
		reason = refusedPerClient
	case a.handshaking >= a.quic.MaxHandshakes:
		reason = refusedHandshakes
	}
	if reason != "" {
		a.mu.Unlock()
		a.refused.add(reason)
		return nil, errConnectionRefused
	}
	a.total++
	a.perClient[client]++
	a.handshaking++
	resetLimit := a.limits.ResetsPerSecond
	a.mu.Unlock()
	c := &conn{a: a, client: client}
	c.resets.init(resetLimit)
	a.mu.Lock()
	a.open[c] = struct{}{}
	a.mu.Unlock()
	// quic-go cancels ctx when the connection closes or its handshake
	// fails.
	context.AfterFunc(ctx, c.release)
	return context.WithValue(ctx, connKey{}, c), nil
}

// admitTCP counts a TCP connection from client against
// limits.connections and connections_per_client, which QUIC and TCP
// connections share, or refuses it. A TCP connection is not a handshake
// the listener counts: net/http runs each TLS handshake on the
// connection's own goroutine, bounded by listen.tcp.read_header_timeout.
func (a *admission) admitTCP(client netip.Addr) bool {
	a.mu.Lock()
	reason := ""
	switch {
	case a.total >= a.limits.Connections:
		reason = refusedConnections
	case a.perClient[client] >= a.limits.ConnectionsPerClient:
		reason = refusedPerClient
	}
	if reason != "" {
		a.mu.Unlock()
		a.refused.add(reason)
		return false
	}
	a.total++
	a.perClient[client]++
	a.mu.Unlock()
	return true
}

// releaseTCP gives back what admitTCP counted.
func (a *admission) releaseTCP(client netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total--
	if a.perClient[client]--; a.perClient[client] <= 0 {
		delete(a.perClient, client)
	}
}

// serverConnContext is http3.Server.ConnContext, called once quic-go
// hands the connection over (before its handshake completes, since the
// listener takes 0.5-RTT connections): it learns the connection, and
// when its handshake completes, it stops counting it as handshaking.
func serverConnContext(ctx context.Context, qc *quic.Conn) context.Context {
	c, ok := ctx.Value(connKey{}).(*conn)
	if !ok {
		return ctx
	}
	c.quic.Store(qc)
	go func() {
		select {
		case <-qc.HandshakeComplete():
			c.handshakeDone()
		case <-qc.Context().Done():
		}
	}()
	return ctx
}

func (c *conn) handshakeDone() {
	if !c.handshook.CompareAndSwap(false, true) {
		return
	}
	c.a.mu.Lock()
	if !c.released.Load() {
		c.a.handshaking--
	}
	c.a.mu.Unlock()
}

func (c *conn) release() {
	a := c.a
	a.mu.Lock()
	defer a.mu.Unlock()
	if !c.released.CompareAndSwap(false, true) {
		return
	}
	a.total--
	delete(a.open, c)
	if a.perClient[c.client]--; a.perClient[c.client] <= 0 {
		delete(a.perClient, c.client)
	}
	if !c.handshook.Load() {
		a.handshaking--
	}
}

// closeIdle closes every admitted connection that serves no request: once
// the drain has sent GOAWAY, a client is to close its connection when its
// requests are done, and an idle one has none left to finish, but not
// every client does, and each would hold the drain to its timeout.
func (a *admission) closeIdle() {
	a.mu.Lock()
	var idle []*quic.Conn
	for c := range a.open {
		if qc := c.quic.Load(); qc != nil && c.active.Load() == 0 {
			idle = append(idle, qc)
		}
	}
	a.mu.Unlock()
	for _, qc := range idle {
		qc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "draining")
	}
}

// count is how many connections are admitted and not yet closed.
func (a *admission) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.total
}

// verifySourceAddress is quic.Transport.VerifySourceAddress: it asks for a
// Retry once new connections come faster than quic.retry_above a second.
func (a *admission) verifySourceAddress(net.Addr) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	rate := float64(a.quic.RetryAbove)
	retry := rate == 0
	if !retry {
		now := time.Now()
		a.tokens = min(rate, a.tokens+now.Sub(a.filled).Seconds()*rate)
		a.filled = now
		if a.tokens >= 1 {
			a.tokens--
		} else {
			retry = true
		}
	}
	if retry {
		a.refused.add(retriedAddress)
	}
	return retry
}

// earlyReset counts a stream the client reset before its response started
// and closes the connection with H3_EXCESSIVE_LOAD once that happens
// faster than listen.limits.resets_per_second (rapid reset, CVE-2023-44487
// in HTTP/2 terms). It reports whether it closed the connection.
func (c *conn) earlyReset(refused *refusals) bool {
	if c.resets.take() {
		return false
	}
	qc := c.quic.Load()
	if qc == nil {
		return false
	}
	refused.add(refusedRapidReset)
	qc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeExcessiveLoad), "streams reset too fast")
	return true
}

// resetBucket is a token bucket of early resets: limit a second, bursts of
// twice that.
type resetBucket struct {
	mu     sync.Mutex
	rate   float64
	tokens float64
	filled time.Time
}

func (b *resetBucket) init(perSecond int) {
	b.rate = float64(perSecond)
	b.tokens = 2 * b.rate
	b.filled = time.Now()
}

// take reports whether a reset is within the limit.
func (b *resetBucket) take() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	b.tokens = min(2*b.rate, b.tokens+now.Sub(b.filled).Seconds()*b.rate)
	b.filled = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// clientIP is the IP address of a UDP or TCP peer, IPv4-mapped addresses
// unmapped so that one client counts once.
func clientIP(a net.Addr) netip.Addr {
	switch u := a.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(u.IP)
		return ip.Unmap()
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(u.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

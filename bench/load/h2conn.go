package load

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/url"
	"sync"
)

// Protocols [Options.Protocol] names.
const (
	ProtocolH3 = "h3" // HTTP/3 over QUIC, the default
	ProtocolH2 = "h2" // HTTP/2 over TLS over TCP
)

// H2Conn is an HTTP/2-over-TLS client that keeps to one TCP connection for
// as long as that connection lives, and dials a new one only once it has
// closed: the HTTP/2 counterpart of [Conn]. It is safe for concurrent use.
//
// It is a net/http Transport of its own, offering only h2 by ALPN (a
// server that does not pick it fails the request, rather than serving
// HTTP/1.1 the run would not be measuring), allowed one connection to its
// host and holding requests beyond the server's stream limit back on that
// connection instead of dialling another.
type H2Conn struct {
	tr *http.Transport

	mu     sync.Mutex
	conns  map[net.Conn]struct{} // the TCP connections dialled and not closed
	closed bool
}

var _ http.RoundTripper = (*H2Conn)(nil)

// stallingH2 takes 64 KiB a stream that nobody reads, as stallingQUIC
// does for HTTP/3.
var stallingH2 = &http.HTTP2Config{
	MaxReceiveBufferPerStream:     64 << 10,
	MaxReceiveBufferPerConnection: 1 << 30,
}

// NewH2Conn returns an H2Conn that dials on its first request. Requests
// name their host in their URL; the Conn is meant for one. A nil
// tlsConfig verifies the server against the system roots.
func NewH2Conn(tlsConfig *tls.Config) *H2Conn {
	return newH2Conn(tlsConfig, nil)
}

func newH2Conn(tlsConfig *tls.Config, h2 *http.HTTP2Config) *H2Conn {
	cfg := &tls.Config{}
	if tlsConfig != nil {
		cfg = tlsConfig.Clone()
	}
	// A slice of its own: Clone shares the caller's backing array, and
	// net/http appends to NextProtos as a transport starts, so transports
	// made from one config would write to the same memory. h2 alone, so
	// that a server without HTTP/2 fails rather than be measured over
	// HTTP/1.1.
	cfg.NextProtos = []string{"h2"}
	c := &H2Conn{conns: map[net.Conn]struct{}{}}
	var protocols http.Protocols
	protocols.SetHTTP2(true)
	h2cfg := http.HTTP2Config{StrictMaxConcurrentRequests: true}
	if h2 != nil {
		h2cfg = *h2
		h2cfg.StrictMaxConcurrentRequests = true
	}
	var dialer net.Dialer
	c.tr = &http.Transport{
		Protocols:         &protocols,
		ForceAttemptHTTP2: true,
		HTTP2:             &h2cfg,
		TLSClientConfig:   cfg,
		MaxConnsPerHost:   1,
		// Proxy is left nil, so no proxy from the environment: the load
		// goes where it is sent.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.closed {
				nc.Close()
				return nil, ErrConnClosed
			}
			c.conns[nc] = struct{}{}
			return &trackedConn{Conn: nc, owner: c}, nil
		},
	}
	return c
}

// RoundTrip sends req on the connection, dialling it first if needed.
func (c *H2Conn) RoundTrip(req *http.Request) (*http.Response, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, ErrConnClosed
	}
	return c.tr.RoundTrip(req)
}

// Close closes the connection, aborting requests in flight, and makes
// later requests fail with [ErrConnClosed].
func (c *H2Conn) Close() error {
	c.mu.Lock()
	c.closed = true
	conns := c.conns
	c.conns = map[net.Conn]struct{}{}
	c.mu.Unlock()
	for nc := range conns {
		nc.Close()
	}
	c.tr.CloseIdleConnections()
	return nil
}

// trackedConn forgets itself in its H2Conn when closed.
type trackedConn struct {
	net.Conn
	owner *H2Conn
}

func (t *trackedConn) Close() error {
	t.owner.mu.Lock()
	delete(t.owner.conns, t.Conn)
	t.owner.mu.Unlock()
	return t.Conn.Close()
}

// roundTripCloser is what a run sends its requests on: a [Conn] or an
// [H2Conn].
type roundTripCloser interface {
	http.RoundTripper
	Close() error
}

// newConnection returns a connection of opts' protocol to target.
func newConnection(opts Options, target *url.URL) roundTripCloser {
	if opts.Protocol == ProtocolH2 {
		var h2 *http.HTTP2Config
		if opts.Stall {
			h2 = stallingH2
		}
		return newH2Conn(opts.TLSConfig, h2)
	}
	c := NewConn(target.Host, opts.TLSConfig)
	if opts.Stall {
		c.quicConf = stallingQUIC
	}
	return c
}

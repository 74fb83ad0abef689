package load

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/url"
	"sync"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// ErrConnClosed is returned by [Conn.RoundTrip] after [Conn.Close].
var ErrConnClosed = errors.New("load: connection closed")

// Conn is an HTTP/3 client that keeps to one QUIC connection, with its own
// UDP socket, for as long as that connection lives, and dials a new one
// only once it has closed. It is safe for concurrent use.
//
// It exists because http3.Transport (quic-go v0.65) drops its connection
// from its pool, without closing it, after any request that fails before
// the response headers, and dials another. A run that provokes stream
// resets would then pay a handshake per error, and leave the server holding
// the forgotten connections until they time out.
//
// A request sent after the server's GOAWAY fails, until the connection has
// drained, closed and been redialled.
type Conn struct {
	authority string
	tlsConfig *tls.Config
	factory   http3.Transport // makes ClientConns; never dials
	quicConf  *quic.Config    // nil: quic-go's defaults

	mu     sync.Mutex
	quic   *quic.Conn // nil until the first request
	client *http3.ClientConn
	closed bool
}

var _ http.RoundTripper = (*Conn)(nil)

// NewConn returns a Conn to authority, a URL's host part ("host:port", or
// "host" for port 443), that dials on its first request. A nil tlsConfig
// verifies the server against the system roots.
func NewConn(authority string, tlsConfig *tls.Config) *Conn {
	cfg := &tls.Config{}
	if tlsConfig != nil {
		cfg = tlsConfig.Clone()
	}
	cfg.NextProtos = []string{http3.NextProtoH3}
	u := url.URL{Host: authority} // for its IPv6-aware Hostname and Port
	port := u.Port()
	if port == "" {
		port = "443"
	}
	return &Conn{authority: net.JoinHostPort(u.Hostname(), port), tlsConfig: cfg}
}

// RoundTrip sends req on the connection, dialling it first if needed.
func (c *Conn) RoundTrip(req *http.Request) (*http.Response, error) {
	client, err := c.clientConn(req.Context())
	if err != nil {
		return nil, err
	}
	return client.RoundTrip(req)
}

// clientConn returns the live connection, dialling one if there is none.
// The lock is held while dialling, so concurrent requests wait for that
// one handshake instead of starting their own.
func (c *Conn) clientConn(ctx context.Context) (*http3.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrConnClosed
	}
	if c.quic != nil && c.quic.Context().Err() == nil {
		return c.client, nil
	}
	qc, err := quic.DialAddr(ctx, c.authority, c.tlsConfig, c.quicConf)
	if err != nil {
		return nil, err
	}
	c.quic, c.client = qc, c.factory.NewClientConn(qc)
	return c.client, nil
}

// Close closes the connection, aborting requests in flight, and makes
// later requests fail with [ErrConnClosed].
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.quic == nil {
		return nil
	}
	return c.quic.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
}

package listener

// This file is the edge over TCP: HTTPS with HTTP/2 and HTTP/1.1 (ALPN),
// served by net/http beside HTTP/3, so that a client that does not know yet
// that spooky speaks HTTP/3 reaches it, and learns of HTTP/3 from Alt-Svc
// (RFC 7838). Its requests go through the same handler, ServeHTTP, hence
// the same router, balancer and pool.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"spooky/config"
	"spooky/supervisor"
)

// tcpSocket is one bound TCP address. It outlives the http.Servers that
// serve it, across stage restarts and reloads that keep the address: each
// server accepts on a duplicate of its descriptor, since Shutdown and Close
// close what a server accepts on.
type tcpSocket struct {
	ln       *net.TCPListener
	boundFor string // the address it was bound for (config.Listen.TCPAddress)
	once     sync.Once
}

func bindTCP(address string) (*tcpSocket, error) {
	addr, err := net.ResolveTCPAddr("tcp", address)
	if err != nil {
		return nil, fmt.Errorf("listener: listen.tcp.address %q: %w", address, err)
	}
	ln, err := net.ListenTCP("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listener: listen.tcp.address %q: %w", address, err)
	}
	return &tcpSocket{ln: ln, boundFor: address}, nil
}

// close stops the socket taking connections; those accepted go on.
func (s *tcpSocket) close() {
	s.once.Do(func() { s.ln.Close() })
}

// accepter is a duplicate of the socket's descriptor, for one server.
func (s *tcpSocket) accepter() (net.Listener, error) {
	f, err := s.ln.File()
	if err != nil {
		return nil, fmt.Errorf("listener: tcp: %w", err)
	}
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("listener: tcp: %w", err)
	}
	return ln, nil
}

// tcpSettings are what an http.Server is built with. A server is never
// changed once it serves: a reload that changes them starts a new server on
// the same socket and shuts the old one down gracefully.
type tcpSettings struct {
	readHeader     time.Duration // listen.tcp.read_header_timeout
	idle           time.Duration // listen.tcp.idle_timeout
	maxHeaderBytes int           // twice listen.limits.request_header_bytes
}

func tcpSettingsOf(cfg *config.Config) tcpSettings {
	return tcpSettings{
		readHeader:     cfg.Listen.TCP.ReadHeaderTimeout,
		idle:           cfg.Listen.TCP.IdleTimeout,
		maxHeaderBytes: maxHeaderBytes(cfg.Listen.Limits.RequestHeaderBytes),
	}
}

// maxHeaderBytes is what the HTTP servers themselves allow of a request's
// header: twice the limit, so that the handler sees, counts and answers
// with 431 what is over the limit; past this the servers answer 431 (net/http) or reset the
// stream (quic-go) themselves.
func maxHeaderBytes(limit int64) int { return int(min(2*limit, 1<<30)) }

// tcpTLS is the TLS config of the TCP server: the QUIC socket's certificate
// (so a reload's new certificate serves both), TLS 1.2 at least, since
// browsers' first visit may come from older stacks, and ALPN h2 before
// http/1.1.
func (l *Listener) tcpTLS() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: l.certs.GetCertificate,
	}
}

// bindTCPFor binds the TCP socket cfg asks for, next to the UDP socket
// bound on udpPort, unless cur is already bound there. It returns nil when
// nothing is to be bound.
func bindTCPFor(cfg *config.Config, udpPort int, cur *tcpSocket) (*tcpSocket, error) {
	if !cfg.Listen.TCP.Enabled {
		return nil, nil
	}
	target := cfg.Listen.TCPAddress(udpPort)
	if cur != nil && cur.boundFor == target {
		return nil, nil
	}
	return bindTCP(target)
}

// sharesPortZero reports whether cfg asks for one port that the system
// chooses for both UDP and TCP: a port free for UDP may be taken for TCP,
// and then both are bound anew.
func sharesPortZero(cfg *config.Config) bool {
	_, port, err := net.SplitHostPort(cfg.Listen.Address)
	return cfg.Listen.TCP.Enabled && cfg.Listen.TCP.Address == "" && err == nil && port == "0"
}

// bindBoth binds the UDP socket of listen.address and, if listen.tcp asks
// for one that cur is not, the TCP socket beside it.
func (l *Listener) bindBoth(cfg *config.Config, cur *tcpSocket) (*socket, *tcpSocket, error) {
	for attempt := 0; ; attempt++ {
		s, err := l.bind(cfg.Listen.Address)
		if err != nil {
			return nil, nil, err
		}
		t, err := bindTCPFor(cfg, udpPort(s), cur)
		if err == nil {
			return s, t, nil
		}
		s.close()
		if attempt >= 10 || !sharesPortZero(cfg) {
			return nil, nil, err
		}
	}
}

func udpPort(s *socket) int { return s.conn.LocalAddr().(*net.UDPAddr).Port }

// altSvcValue is the Alt-Svc field of responses over TCP (RFC 7838 §3),
// empty when listen.alt_svc is off.
func altSvcValue(a config.AltSvc, quicPort int) string {
	if !a.Enabled {
		return ""
	}
	port := a.Port
	if port == 0 {
		port = quicPort
	}
	return `h3=":` + strconv.Itoa(port) + `"; ma=` + strconv.FormatInt(int64(a.MaxAge/time.Second), 10)
}

// setAltSvc takes listen.alt_svc for the UDP port now bound.
func (l *Listener) setAltSvc(a config.AltSvc, quicPort int) {
	v := altSvcValue(a, quicPort)
	l.altSvc.Store(&v)
}

// startTCPLocked starts an http.Server on the current TCP socket with the
// current settings. Its failure to accept is the stage's failure.
func (l *Listener) startTCPLocked() {
	sock, settings, errs := l.tcpSock, l.tcpSettings, l.serveErrs
	srv := &http.Server{
		Handler:           l,
		TLSConfig:         l.tcpTLS(),
		ReadHeaderTimeout: settings.readHeader,
		IdleTimeout:       settings.idle,
		MaxHeaderBytes:    settings.maxHeaderBytes,
		// net/http logs failed handshakes and the like: noise at
		// the edge, so at debug level.
		ErrorLog: slog.NewLogLogger(l.log.Handler(), slog.LevelDebug),
	}
	l.tcpSrv, l.tcpLn = srv, nil
	ln, err := sock.accepter()
	if err != nil {
		select {
		case errs <- err:
		default:
		}
		return
	}
	ln = &limitListener{Listener: ln, a: l.conns}
	l.tcpLn = ln
	l.serving.Go(func() {
		err := srv.ServeTLS(ln, "", "")
		// A server is stopped by closing what it accepts on (a move),
		// by Shutdown or by Close; anything else is a failure.
		if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			select {
			case errs <- err:
			default:
			}
		}
	})
}

// applyTCP takes listen.tcp from a new config: bound is the socket
// SendControl bound for it (nil when the address stays or TCP is off).
// The old server, if one is replaced, finishes what it serves within the
// drain timeout; the old socket stops taking connections at once.
func (l *Listener) applyTCP(cfg *config.Config, bound *tcpSocket) {
	settings := tcpSettingsOf(cfg)
	l.mu.Lock()
	defer l.mu.Unlock()
	old, oldSrv, oldLn := l.tcpSock, l.tcpSrv, l.tcpLn
	switch {
	case !cfg.Listen.TCP.Enabled:
		l.tcpSock = nil
	case bound != nil:
		l.tcpSock = bound
	case settings != l.tcpSettings && oldSrv != nil:
		old = nil // the socket stays; the server is replaced
	default:
		l.tcpSettings = settings
		return
	}
	l.tcpSrv, l.tcpLn, l.tcpSettings = nil, nil, settings
	if oldSrv != nil {
		// It stops accepting now, so that a closed socket takes no
		// more connections through its duplicate.
		if oldLn != nil {
			oldLn.Close()
		}
		l.retireTCPLocked(oldSrv)
	}
	if old != nil {
		old.close()
		l.log.Info("no longer listening on TCP", "address", old.ln.Addr().String())
	}
	if l.tcpSock != nil && l.srv != nil && l.tcpSrv == nil {
		l.startTCPLocked()
	}
}

// retireTCPLocked shuts srv down in the background: it stops accepting at
// once, lets the requests it serves finish within the drain timeout, closes
// idle connections, then closes what is left.
func (l *Listener) retireTCPLocked(srv *http.Server) {
	l.tcpRetiring[srv] = struct{}{}
	d := time.Duration(l.drain.Load())
	go supervisor.Guard(l.log, "tcp server retirement", func() {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		srv.Shutdown(ctx)
		srv.Close()
		l.mu.Lock()
		delete(l.tcpRetiring, srv)
		l.mu.Unlock()
	}, nil)()
}

// TCPAddr is the bound TCP address, nil when listen.tcp.enabled is false.
func (l *Listener) TCPAddr() net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tcpSock == nil {
		return nil
	}
	return l.tcpSock.ln.Addr()
}

// limitListener counts TCP connections against listen.limits.connections
// and connections_per_client, with the QUIC connections, and closes at
// accept those over either, counted in the same refusals.
type limitListener struct {
	net.Listener
	a *admission
}

func (ln *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		client := clientIP(c.RemoteAddr())
		if !ln.a.admitTCP(client) {
			c.Close()
			continue
		}
		return &countedConn{Conn: c, a: ln.a, client: client}, nil
	}
}

// countedConn is an admitted TCP connection, released from the counts once
// closed.
type countedConn struct {
	net.Conn
	a        *admission
	client   netip.Addr
	released sync.Once
	// stalled is set once a write timed out (listen.write_idle_timeout
	// over HTTP/1.1): the TLS stream is broken then, and a later write
	// fails at once. Without it, closing the connection would wait 5 s
	// more, the deadline crypto/tls gives its close_notify alert, for a
	// client that reads nothing.
	stalled atomic.Bool
}

func (c *countedConn) Write(p []byte) (int, error) {
	if c.stalled.Load() {
		return 0, os.ErrDeadlineExceeded
	}
	n, err := c.Conn.Write(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.stalled.Store(true)
	}
	return n, err
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.released.Do(func() { c.a.releaseTCP(c.client) })
	return err
}

// Package listener owns spooky's client-facing edge: the UDP socket, the QUIC
// transport, the HTTP/3 server and its TLS certificate. Each request becomes
// an envelope offered to the router; the handler then waits until the
// pipeline has finished it.
package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"spooky/config"
	"spooky/envelope"
	"spooky/stages"
)

// ErrOverloaded is what a shed request reads: the router's mailbox stayed
// full for the whole admission wait.
var ErrOverloaded = errors.New("proxy overloaded, retry later")

// Recorder is told of every finished envelope, just before it is released.
// It must not block and must not keep e.
type Recorder interface {
	Record(e *envelope.Envelope)
}

// Listener is the HTTP/3 edge stage.
type Listener struct {
	router   *stages.Mailbox
	recorder Recorder
	log      *slog.Logger

	conn      *net.UDPConn
	transport *quic.Transport
	quicLn    *quic.EarlyListener
	cert      atomic.Pointer[tls.Certificate]
	admission atomic.Int64 // time.Duration
	server    atomic.Pointer[http3.Server]
	inFlight  atomic.Int64
}

// New binds the UDP socket and starts accepting QUIC handshakes; requests
// are served once Serve runs. The socket lives until Close, across restarts
// of the stage.
func New(cfg *config.Config, router *stages.Mailbox, recorder Recorder, log *slog.Logger) (*Listener, error) {
	l := &Listener{router: router, recorder: recorder, log: log}
	if err := l.loadCertificate(cfg.Listen.TLS); err != nil {
		return nil, err
	}
	l.admission.Store(int64(cfg.Listen.AdmissionWait))
	addr, err := net.ResolveUDPAddr("udp", cfg.Listen.Address)
	if err != nil {
		return nil, fmt.Errorf("listener: listen.address %q: %w", cfg.Listen.Address, err)
	}
	if l.conn, err = net.ListenUDP("udp", addr); err != nil {
		return nil, fmt.Errorf("listener: listen.address %q: %w", cfg.Listen.Address, err)
	}
	l.transport = &quic.Transport{Conn: l.conn}
	tlsConf := http3.ConfigureTLSConfig(&tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return l.cert.Load(), nil
		},
	})
	l.quicLn, err = l.transport.ListenEarly(tlsConf, &quic.Config{
		Allow0RTT:       true,
		EnableDatagrams: false,
		MaxIdleTimeout:  60 * time.Second,
	})
	if err != nil {
		l.conn.Close()
		return nil, fmt.Errorf("listener: %w", err)
	}
	return l, nil
}

func (l *Listener) loadCertificate(t *config.TLS) error {
	var cert tls.Certificate
	var err error
	if t == nil {
		cert, err = DevCertificate()
		if err == nil {
			l.log.Warn("listen.tls is not set: serving a self-signed development certificate for localhost; clients must skip verification")
		}
	} else {
		cert, err = t.Load()
	}
	if err != nil {
		return fmt.Errorf("listener: certificate: %w", err)
	}
	l.cert.Store(&cert)
	return nil
}

// SendControl applies a control message at once: the listener has no
// mailbox, since its work arrives from QUIC, not from another stage. A new
// config brings a new certificate (for new handshakes; open connections go
// on) and admission wait.
func (l *Listener) SendControl(_ context.Context, c stages.Control) error {
	rc, ok := c.(stages.Reconfigure)
	if !ok {
		return nil
	}
	if err := l.loadCertificate(rc.Config.Listen.TLS); err != nil {
		return err
	}
	l.admission.Store(int64(rc.Config.Listen.AdmissionWait))
	return nil
}

// Addr is the bound UDP address, useful when listen.address had port 0.
func (l *Listener) Addr() net.Addr { return l.conn.LocalAddr() }

// Serve serves HTTP/3 on the socket until ctx ends or Drain is called.
func (l *Listener) Serve(ctx context.Context) error {
	srv := &http3.Server{
		Handler: l,
		Logger:  l.log,
	}
	l.server.Store(srv)
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	err := srv.ServeListener(l.quicLn)
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, quic.ErrServerClosed) {
		return nil
	}
	return err
}

// Drain stops taking new requests (HTTP/3 GOAWAY) and waits until those in
// flight have finished or ctx ends.
func (l *Listener) Drain(ctx context.Context) error {
	if srv := l.server.Load(); srv != nil {
		return srv.Shutdown(ctx)
	}
	return nil
}

// Close releases the QUIC listener and the socket.
func (l *Listener) Close() error {
	return errors.Join(l.quicLn.Close(), l.transport.Close(), l.conn.Close())
}

// Inspect shows the requests in flight as the listener's workers: each one
// holds an http3 handler goroutine.
func (l *Listener) Inspect() stages.Info {
	return stages.Info{Workers: int(l.inFlight.Load())}
}

// ServeHTTP turns one HTTP/3 request into an envelope, offers it to the
// router and waits for the pipeline to finish it.
func (l *Listener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.inFlight.Add(1)
	defer l.inFlight.Add(-1)
	e := envelope.Get()
	e.Ctx = r.Context()
	e.Request = r
	e.Writer = w
	e.ClientAddr = r.RemoteAddr
	e.Arrived = time.Now()

	if !l.admit(e) {
		e.Finish(http.StatusServiceUnavailable, ErrOverloaded)
	}
	<-e.Done()
	l.recorder.Record(e)
	aborted := e.Aborted
	e.Release()
	if aborted {
		// quic-go resets the stream when a handler panics with this value,
		// so the client sees an error rather than a clean, short body.
		panic(http.ErrAbortHandler)
	}
}

// admit offers e to the router, waiting at most the admission wait.
func (l *Listener) admit(e *envelope.Envelope) bool {
	return l.router.SendWithin(e.Ctx, e, time.Duration(l.admission.Load())) == nil
}

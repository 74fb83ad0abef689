// Package listener owns spooky's client-facing edge: the UDP socket (bound
// once, moved when listen.address changes), the QUIC transport, the HTTP/3
// server, the HTTPS server over TCP beside it (tcp.go) and their TLS
// certificate. Each request becomes an envelope offered to the router; the
// handler then waits until the pipeline has finished it, and tells the
// Recorder (telemetry) how it went.
package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"spooky/certs"
	"spooky/config"
	"spooky/envelope"
	"spooky/stages"
	"spooky/supervisor"
)

// ErrOverloaded is what a shed request reads: the router's mailbox stayed
// full for the whole admission wait.
var ErrOverloaded = errors.New("proxy overloaded, retry later")

// Recorder is told of every finished envelope, just before it is released.
// It must not block and must not keep e.
type Recorder interface {
	Record(e *envelope.Envelope)
}

// Listener is the edge stage: HTTP/3, and HTTPS over TCP.
type Listener struct {
	router   *stages.Mailbox
	recorder Recorder
	log      *slog.Logger
	tls      *tls.Config

	certs         certs.Store // listen.tls, chosen by SNI; swapped on reload (certwatch.go)
	certReport    atomic.Pointer[CertReporter]
	certsMoved    chan struct{} // the files to watch changed: re-arm the watch
	admissionWait atomic.Int64  // time.Duration
	drain         atomic.Int64  // time.Duration: how long a replaced socket serves on
	writeIdle     atomic.Int64  // time.Duration: listen.write_idle_timeout
	inFlight      atomic.Int64
	limits        atomic.Pointer[config.ClientLimits]
	quicConf      atomic.Pointer[quic.Config] // listen.quic, for new connections
	udpWarned     sync.Once                   // the warning about small UDP buffers, once
	conns         *admission
	refused       refusals

	unfinishedGrace time.Duration // defaultUnfinishedGrace; tests shorten it

	// afterFunc runs f once d has passed: time.AfterFunc, which tests
	// replace to retire a socket when they choose.
	afterFunc func(d time.Duration, f func())

	mu        sync.Mutex
	sock      *socket   // the socket new connections arrive on
	boundFor  string    // the listen.address sock was bound for
	retired   []*socket // replaced sockets whose connections are draining
	srv       *http3.Server
	serveErrs chan error
	serving   sync.WaitGroup

	// The TCP side (tcp.go), under mu.
	tcpSock     *tcpSocket // nil: listen.tcp.enabled is false
	tcpSettings tcpSettings
	tcpSrv      *http.Server // serving tcpSock while Serve runs
	tcpLn       net.Listener // what tcpSrv accepts on
	tcpRetiring map[*http.Server]struct{}

	altSvc atomic.Pointer[string] // the Alt-Svc of responses over TCP; "": none
}

// socket is one bound UDP address with its QUIC transport and listener.
type socket struct {
	conn      *net.UDPConn
	transport *quic.Transport
	ln        *quic.EarlyListener
}

// New binds the UDP socket and starts accepting QUIC handshakes; requests
// are served once Serve runs. The socket lives until Close, across restarts
// of the stage and reloads that keep listen.address.
func New(cfg *config.Config, router *stages.Mailbox, recorder Recorder, log *slog.Logger) (*Listener, error) {
	l := &Listener{router: router, recorder: recorder, log: log, afterFunc: afterFunc, unfinishedGrace: defaultUnfinishedGrace,
		tcpRetiring: make(map[*http.Server]struct{}), certsMoved: make(chan struct{}, 1)}
	if err := l.loadCertificate(cfg.Listen.TLS); err != nil {
		return nil, err
	}
	l.admissionWait.Store(int64(cfg.Listen.AdmissionWait))
	l.drain.Store(int64(cfg.Listen.DrainTimeout))
	l.applyLimits(cfg)
	l.conns = newAdmission(cfg, &l.refused)
	l.tls = http3.ConfigureTLSConfig(&tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: l.certs.GetCertificate,
	})
	var err error
	if l.sock, l.tcpSock, err = l.bindBoth(cfg, nil); err != nil {
		return nil, err
	}
	l.boundFor = cfg.Listen.Address
	l.tcpSettings = tcpSettingsOf(cfg)
	l.setAltSvc(cfg.Listen.AltSvc, udpPort(l.sock))
	return l, nil
}

func (l *Listener) bind(address string) (*socket, error) {
	addr, err := net.ResolveUDPAddr("udp", address)
	if err != nil {
		return nil, fmt.Errorf("listener: listen.address %q: %w", address, err)
	}
	s := &socket{}
	if s.conn, err = net.ListenUDP("udp", addr); err != nil {
		return nil, fmt.Errorf("listener: listen.address %q: %w", address, err)
	}
	s.transport = &quic.Transport{
		Conn:                s.conn,
		ConnContext:         l.conns.connContext,
		VerifySourceAddress: l.conns.verifySourceAddress,
	}
	quietQUICGoBufferWarning()
	// Early data is allowed here so that quicConfig can allow it per
	// connection, as listen.quic.allow_0rtt says when the connection comes.
	s.ln, err = s.transport.ListenEarly(l.tls, &quic.Config{
		Allow0RTT:          true,
		GetConfigForClient: l.quicConfig,
	})
	if err != nil {
		s.conn.Close()
		return nil, fmt.Errorf("listener: %w", err)
	}
	l.checkUDPBuffers(s.conn)
	return s, nil
}

func (s *socket) close() error {
	return errors.Join(s.ln.Close(), s.transport.Close(), s.conn.Close())
}

// loadCertificate serves the pairs t names, or a development certificate
// when there are none. A pair that does not load changes nothing.
func (l *Listener) loadCertificate(t []config.TLS) error {
	if len(t) == 0 {
		cert, err := certs.Dev()
		if err != nil {
			return fmt.Errorf("listener: certificate: %w", err)
		}
		l.log.Warn("listen.tls is not set: serving a self-signed development certificate for localhost; clients must skip verification")
		l.certs.SetDev(cert)
		l.certFilesMoved()
		return nil
	}
	pairs := make([]certs.Pair, len(t))
	for i, p := range t {
		pairs[i] = certs.Pair{Cert: p.Cert, Key: p.Key}
	}
	moved := !slices.Equal(pairs, l.certs.Pairs())
	if _, err := l.certs.Load(pairs); err != nil {
		return fmt.Errorf("listener: certificate: %w", err)
	}
	if moved {
		l.certFilesMoved()
	}
	return nil
}

// SendControl applies a control message at once: the listener has no
// mailbox, since its work arrives from QUIC, not from another stage. A new
// config brings a new certificate (for new handshakes; open connections go
// on), admission wait and drain timeout, and, when listen.address changed,
// a new socket: it is bound before the old one stops taking connections,
// and the old one's connections are served on for the drain timeout. The
// TCP socket moves the same way with listen.tcp (applyTCP).
func (l *Listener) SendControl(_ context.Context, c stages.Control) error {
	rc, ok := c.(stages.Reconfigure)
	if !ok {
		return nil
	}
	defer rc.Applied()
	cfg := rc.Config
	// Binding is the step that can fail, so it comes first: a reload that
	// names an address in use changes nothing at all.
	var moved *socket
	var movedTCP *tcpSocket
	l.mu.Lock()
	curTCP, quicPort := l.tcpSock, udpPort(l.sock)
	l.mu.Unlock()
	var err error
	if cfg.Listen.Address != l.listenAddress() {
		if moved, movedTCP, err = l.bindBoth(cfg, curTCP); err != nil {
			return err
		}
		quicPort = udpPort(moved)
	} else if movedTCP, err = bindTCPFor(cfg, quicPort, curTCP); err != nil {
		return err
	}
	if cfg.Listen.TLS != nil || !certs.IsDev(l.certs.Current()) {
		if err := l.loadCertificate(cfg.Listen.TLS); err != nil {
			if moved != nil {
				moved.close()
			}
			if movedTCP != nil {
				movedTCP.close()
			}
			return err
		}
	}
	l.admissionWait.Store(int64(cfg.Listen.AdmissionWait))
	l.drain.Store(int64(cfg.Listen.DrainTimeout))
	l.applyLimits(cfg)
	l.conns.apply(cfg)
	if moved != nil {
		l.move(moved, cfg.Listen.Address)
	}
	l.applyTCP(cfg, movedTCP)
	l.setAltSvc(cfg.Listen.AltSvc, quicPort)
	return nil
}

// move makes moved the socket that takes new connections and lets the old
// one's connections go on for the drain timeout.
func (l *Listener) move(moved *socket, address string) {
	l.mu.Lock()
	old := l.sock
	l.sock, l.boundFor = moved, address
	l.retired = append(l.retired, old)
	if l.srv != nil {
		l.serveLocked(moved)
	}
	l.mu.Unlock()
	old.ln.Close()
	l.log.Info("listening on a new address; the old one drains", "address", moved.conn.LocalAddr().String(), "old", old.conn.LocalAddr().String())
	l.afterFunc(time.Duration(l.drain.Load()), supervisor.Guard(l.log, "socket retirement", func() { l.retire(old) }, nil))
}

func afterFunc(d time.Duration, f func()) { time.AfterFunc(d, f) }

// retire closes a replaced socket, once its drain timeout has passed,
// unless Close already did: what is still connected to it is cut.
func (l *Listener) retire(old *socket) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i := slices.Index(l.retired, old); i >= 0 {
		l.retired = slices.Delete(l.retired, i, i+1)
		old.close()
	}
}

// DrainTimeout is listen.drain_timeout as last configured.
func (l *Listener) DrainTimeout() time.Duration { return time.Duration(l.drain.Load()) }

// listenAddress is the listen.address in force, as the config spells it:
// the one the current socket was bound for (Addr is where it is bound).
func (l *Listener) listenAddress() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.boundFor
}

// Addr is the bound UDP address, useful when listen.address had port 0.
func (l *Listener) Addr() net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sock.conn.LocalAddr()
}

// Serve serves HTTP/3 until ctx ends, on the current socket and on any that
// a reload adds.
func (l *Listener) Serve(ctx context.Context) error {
	srv := &http3.Server{
		Handler:     l,
		Logger:      l.log,
		ConnContext: serverConnContext,
		// quic-go reads a request's header block whole before the
		// handler sees it: this bounds that read, and the handler
		// applies listen.limits.request_header_bytes itself (counting
		// the refusal). Set when Serve starts.
		MaxHeaderBytes: maxHeaderBytes(l.limits.Load().RequestHeaderBytes),
	}
	errs := make(chan error, 1)
	watchCtx, stopWatch := context.WithCancel(ctx)
	var watching sync.WaitGroup
	watching.Go(supervisor.Guard(l.log, "certificate file watch", func() { l.watchCertificates(watchCtx) }, nil))
	defer watching.Wait()
	defer stopWatch()
	l.mu.Lock()
	l.srv, l.serveErrs = srv, errs
	l.serveLocked(l.sock)
	if l.tcpSock != nil {
		l.startTCPLocked()
	}
	l.mu.Unlock()

	var err error
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	l.mu.Lock()
	l.srv = nil
	tcp := l.tcpSrv
	l.tcpSrv, l.tcpLn = nil, nil
	l.mu.Unlock()
	srv.Close()
	if tcp != nil {
		tcp.Close()
	}
	l.serving.Wait()
	return err
}

func (l *Listener) serveLocked(s *socket) {
	srv, errs := l.srv, l.serveErrs
	l.serving.Go(func() {
		err := srv.ServeListener(s.ln)
		// A listener closed by a move or by Close ends its Serve
		// normally; anything else is a failure of the stage.
		if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, quic.ErrServerClosed) {
			select {
			case errs <- err:
			default:
			}
		}
	})
}

// idleCloseDelay is how long the drain waits, after GOAWAY, before it
// closes the connections that carry no request.
const idleCloseDelay = 250 * time.Millisecond

// Drain stops taking new requests (HTTP/3 GOAWAY; over TCP, the socket
// closed, HTTP/2 GOAWAY and idle keep-alive connections closed) and waits
// until those in flight have finished or ctx ends.
func (l *Listener) Drain(ctx context.Context) error {
	l.mu.Lock()
	srv, tcp, tcpSock := l.srv, l.tcpSrv, l.tcpSock
	l.mu.Unlock()
	if srv == nil {
		return nil
	}
	tcpShut := make(chan error, 1)
	if tcp != nil {
		tcpSock.close()
		go func() { tcpShut <- tcp.Shutdown(ctx) }()
	} else {
		tcpShut <- nil
	}
	err := l.drainQUIC(ctx, srv)
	return errors.Join(err, <-tcpShut)
}

// drainQUIC is Drain's HTTP/3 half.
func (l *Listener) drainQUIC(ctx context.Context, srv *http3.Server) error {
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(ctx) }()
	// Shutdown has stopped new connections and is sending GOAWAY. Once
	// requests already on their way have had a moment to arrive, the
	// connections with nothing in flight need not wait for their clients.
	select {
	case err := <-shut:
		return err
	case <-time.After(idleCloseDelay):
	}
	l.conns.closeIdle()
	return <-shut
}

// Close releases every socket.
func (l *Listener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	errs := []error{l.sock.close()}
	for _, s := range l.retired {
		errs = append(errs, s.close())
	}
	l.retired = nil
	if l.tcpSock != nil {
		l.tcpSock.close()
	}
	for srv := range l.tcpRetiring {
		srv.Close()
	}
	return errors.Join(errs...)
}

// Inspect shows the requests in flight: each one holds a handler goroutine
// of quic-go's or net/http's. The listener has no mailbox and no workers of its own.
func (l *Listener) Inspect() stages.Info {
	return stages.Info{InFlight: int(l.inFlight.Load()), Connections: l.conns.count(), Refused: l.refused.snapshot()}
}

// ServeHTTP turns one request, over HTTP/3 or over TCP, into an envelope,
// offers it to the router and waits for the pipeline to finish it.
func (l *Listener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.inFlight.Add(1)
	defer l.inFlight.Add(-1)
	// The QUIC connection's share of the limits; nil over TCP.
	c, _ := r.Context().Value(connKey{}).(*conn)
	if c != nil {
		c.active.Add(1)
		defer c.active.Add(-1)
	}
	e := envelope.Get()
	cw := &clientWriter{ResponseWriter: w, e: e, idle: time.Duration(l.writeIdle.Load())}
	if r.ProtoMajor == 1 {
		// net/http's HTTP/1 server reads (and drops) up to 256 KiB of
		// a request body it was not done with once the response
		// starts, and ends the body there: an upstream that answers
		// as the body arrives (an echo, a stream) would get it cut
		// short. Full duplex relays both, as HTTP/2 and HTTP/3 do.
		http.NewResponseController(w).EnableFullDuplex()
	}
	if r.ProtoMajor < 3 {
		// Over TCP, every response says where HTTP/3 is; set here
		// and again by WriteHeader, over an upstream's own.
		if v := l.altSvc.Load(); v != nil && *v != "" {
			cw.altSvc = *v
			w.Header().Set("Alt-Svc", *v)
		}
	}
	e.Ctx = r.Context()
	e.Request = r
	e.Writer = cw
	e.ClientAddr = r.RemoteAddr
	e.Arrived = time.Now()

	if status, err := l.checkHeader(r, l.limits.Load()); err != nil {
		e.Finish(status, err)
	} else if status, err := checkEarlyData(r, c); err != nil {
		e.Finish(status, err)
	} else if !l.admit(e) {
		e.Finish(http.StatusServiceUnavailable, ErrOverloaded)
	}
	select {
	case <-e.Done():
	case <-r.Context().Done():
		if !l.awaitAfterClientGone(e) {
			// A stage still holds e: it is neither read nor
			// released here, and what the stage writes goes nowhere.
			cw.abandon()
			abortIncomplete(w)
			return
		}
	}
	// A response the pool handed over is relayed here, at the client's
	// pace, on this request's own goroutine.
	l.relay(e)
	l.recorder.Record(e)
	aborted, incomplete := e.Aborted, e.Status == envelope.StatusClientClosed && !e.ResponseStarted
	if incomplete && r.Context().Err() != nil && c != nil && c.earlyReset(&l.refused) {
		// The client reset this stream before its answer, and too many
		// like it: the connection is closed, this stream with it.
		incomplete = false
	}
	// quic-go writes what is still buffered when the handler returns:
	// that write is bounded too.
	cw.boundLast()
	e.Release()
	switch {
	case aborted:
		// quic-go and net/http reset the stream (over HTTP/1.1, close
		// the connection) when a handler panics with this value, so
		// the client sees an error rather than a clean, short body.
		panic(http.ErrAbortHandler)
	case incomplete:
		// Nothing was answered: the client went away or its body
		// failed. Returning would send an empty 200.
		abortIncomplete(w)
	}
}

// defaultUnfinishedGrace is how long the listener waits for an envelope to
// be finished once its client has gone away: every stage finishes an
// envelope whose context ended within moments, so one that takes longer is
// held by a stage that is stuck, and the request's goroutine stops waiting
// for it.
const defaultUnfinishedGrace = 5 * time.Second

// awaitAfterClientGone waits for e to be finished after its client went
// away, at most unfinishedGrace, and reports whether it was.
func (l *Listener) awaitAfterClientGone(e *envelope.Envelope) bool {
	t := time.NewTimer(l.unfinishedGrace)
	defer t.Stop()
	select {
	case <-e.Done():
		return true
	case <-t.C:
		l.log.Error("a request was not finished within the grace after its client went away; its goroutine stops waiting", "grace", l.unfinishedGrace)
		return false
	}
}

// relay runs e's relay, containing a panic in it to this request: logged
// once, and the request settled as a 502 (its stream reset if the response
// had started). It recovers by hand rather than through supervisor.Guard,
// which costs two allocations a request.
func (l *Listener) relay(e *envelope.Envelope) {
	defer func() {
		if r := recover(); r != nil {
			l.log.Error("panic in response relay", "err", r, "stack", string(debug.Stack()))
			e.RelayFailed(fmt.Errorf("%w: %v", stages.ErrStagePanic, r))
		}
	}()
	e.Relay()
}

// admit offers e to the router, waiting at most the admission wait.
func (l *Listener) admit(e *envelope.Envelope) bool {
	return l.router.SendWithin(e.Ctx, e, time.Duration(l.admissionWait.Load())) == nil
}

// Package h2 owns spooky's client side of HTTP/2 (RFC 9113): one
// connection to an upstream, its streams, flow control and frame I/O.
//
// It exists because a proxy uses a client connection differently from a
// general-purpose client: many requests at once on few connections, most of
// them without a body. x/net's client runs a goroutine per request and
// writes each request's HEADERS with its own system call; here a request is
// written from the caller's goroutine, writes that queue up behind one
// another go out in one system call, and only a request that has a body
// gets a goroutine to stream it. Framing, HPACK and frame validation are
// x/net's (http2.Framer, hpack).
//
// An upstream that is broken or hostile costs bounded memory and fails
// only its own connection or stream: header blocks are bounded in frames
// and bytes (maxHeaderBlockFrames), interim responses in number
// (maxInterimResponses), acks waiting for a peer that does not read them
// in bytes (maxQueuedControl), and a panic in one of a connection's
// goroutines ends that connection, not the process (contain). Its
// conformance to RFC 9113 is checked with h2spec's client suite
// (TestH2Spec).
package h2

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// What this side advertises. A stream's window is the most of its response
// that can wait in memory for a slow reader (a client that stops reading
// holds that much of spooky's memory), so it is kept small: 256 KiB moves
// 1 MiB bodies from a loopback upstream as fast as 4 MiB did (bench/
// RESULTS.md), where 1 000 stalled streams held 3.4 GiB at 4 MiB. The
// connection's window is large, so that one stream never holds up another.
const (
	streamWindow = 256 << 10
	connWindow   = 1 << 30
	connRefresh  = 1 << 20 // owed connection window that triggers WINDOW_UPDATE

	// defaultMaxReadFrameSize is Config.MaxReadFrameSize's default.
	defaultMaxReadFrameSize = 1 << 20
	maxHeaderListSize       = 1 << 20
	// defaultMaxStreams applies until the peer's SETTINGS say otherwise,
	// and caps a peer that sets no limit.
	defaultMaxStreams = 1000
	// maxStreamID is the last client stream ID (RFC 9113 §5.1.1); a
	// connection that reaches it takes no more streams.
	maxStreamID = math.MaxInt32
)

// Errors a request can fail with, besides http2.StreamError (the peer reset
// the stream) and http2.ConnectionError (the peer broke the protocol).
var (
	// ErrUnprocessed means the request was not processed by the peer and
	// can be sent again, whatever its method: the connection went away
	// before the request was sent, or the peer's GOAWAY says it never
	// looked at the stream (RFC 9113 §6.8).
	ErrUnprocessed = errors.New("h2: request not processed by the upstream")
	// ErrConnClosed means the connection was lost or closed while the
	// request was in flight.
	ErrConnClosed = errors.New("h2: connection closed")
	// ErrRequestBody means the request's own body failed: its reader
	// returned an error (the client went away) or a length other than
	// its Content-Length. The stream is reset; the upstream is not at
	// fault.
	ErrRequestBody = errors.New("h2: request body failed")
	// ErrPanic means one of the connection's goroutines panicked (a bug,
	// here or in a request body's reader): the connection ended, and
	// every request on it failed, with an error that wraps ErrPanic and
	// ErrConnClosed and carries the panic's value and stack.
	ErrPanic = errors.New("h2: panic")
)

// Config tunes a connection's liveness checks.
type Config struct {
	// ReadIdleTimeout: a connection that has read nothing for this long
	// is pinged. Zero disables the check.
	ReadIdleTimeout time.Duration
	// PingTimeout: a ping unanswered for this long closes the connection.
	// Zero means 15 seconds.
	PingTimeout time.Duration
	// WriteTimeout bounds each write to the socket: a peer that stops
	// reading (a hung or stopped process) fails the connection, and the
	// requests on it, instead of holding its writers for ever. Zero means
	// 10 seconds.
	WriteTimeout time.Duration
	// MaxReadFrameSize is the largest frame payload the peer may send,
	// advertised in SETTINGS_MAX_FRAME_SIZE (RFC 9113 §6.5.2); a larger
	// frame is a connection error FRAME_SIZE_ERROR. Zero means 1 MiB;
	// other values are kept within 16 KiB and 16 MiB - 1, the setting's
	// range.
	MaxReadFrameSize uint32

	hooks *testHooks // nil but in this package's tests
}

// testHooks are called, when set, at points where a test injects a fault
// (a panic) into one of the connection's goroutines.
type testHooks struct {
	frame func(http2.Frame) // in the read loop, before it handles a frame
	flush func()            // in the flusher, before it flushes
	idle  func()            // in the idle check, before it looks
}

// Conn is one client HTTP/2 connection. Its methods are safe for
// concurrent use.
type Conn struct {
	nc  net.Conn
	cfg Config
	fr  *http2.Framer // read by the read loop, written holding wlock
	// guard reads the socket for fr; the read loop asks it the type of
	// the frame fr read last.
	guard *frameGuard

	// The write side. Frames are appended to wbuf holding wlock; only
	// flushNow writes to the socket, holding sockMu (called by flushLoop,
	// by writeNow and during the handshake), so a request never waits on
	// a peer that reads slowly or not at all.
	// flushLoop lets other runnable goroutines add their frames before
	// it takes wbuf: requests that arrive together leave in one
	// write(2). wlock is a channel so that a request can stop waiting
	// for it when its context ends.
	wlock        chan struct{}
	wbuf         []byte // frames not yet handed to the socket
	spare        []byte // the buffer of the previous flush, for reuse
	henc         *hpack.Encoder
	hbuf         []byte        // HPACK output, reused holding wlock
	werr         error         // first write error; every later write fails with it
	flushPending bool          // flushLoop has been asked to flush
	flushc       chan struct{} // asks flushLoop to flush
	// ctrlQueued counts the bytes of answers to the peer's control
	// frames (PING and SETTINGS acks) in wbuf; see writeControl.
	ctrlQueued int
	// drained is closed, and replaced, each time a flush has left the
	// socket; body senders wait on it while too much is buffered.
	drained chan struct{}
	sockMu  sync.Mutex     // held across taking wbuf and writing it
	sock    deadlineWriter // the socket, each write with a time limit

	mu            sync.Mutex
	flow          sync.Cond // senders waiting for send window; on mu
	idle          sync.Cond // Shutdown waiting for streams to end; on mu
	streams       map[uint32]*stream
	nextID        uint32
	reserved      int // reservations not yet turned into streams
	maxStreams    int
	peerWindow    int32 // the peer's SETTINGS_INITIAL_WINDOW_SIZE
	peerFrameSize int
	peerMaxHeader uint32 // the peer's SETTINGS_MAX_HEADER_LIST_SIZE, 0 for none
	sendWindow    int64  // connection-level send window
	recvAvail     int64  // connection-level window the peer may still use
	recvUnsent    int64  // consumed but not yet given back in WINDOW_UPDATE
	// goAway: no new streams, and the connection closes with its last
	// one; the peer sent GOAWAY, or Shutdown gave up waiting.
	goAway bool
	// shutdown: no new streams; Shutdown waits for the last one to end,
	// then sends GOAWAY and closes.
	shutdown bool
	closed   bool
	closeErr error
	// goAwayErr describes the peer's GOAWAY with an error code, if one
	// came; the connection's end is reported with it.
	goAwayErr error
	pings     map[[8]byte]chan struct{}
	pingSeq   uint64 // the payload of the last PING sent
	// ended holds the IDs of the last streams the peer ended (END_STREAM
	// or RST_STREAM) that are gone from streams, endedN how many were
	// ever added; see peerEndedLocked.
	ended  [64]uint32
	endedN int

	lastRead atomic.Int64  // unix nanoseconds of the last frame read
	done     chan struct{} // closed when the read loop has ended
}

// Handshake starts HTTP/2 on nc: it sends the preface and this side's
// settings and waits, until ctx ends, for the peer's SETTINGS, so that the
// connection knows the peer's limits before its first request. On error nc
// is closed.
func Handshake(ctx context.Context, nc net.Conn, cfg Config) (*Conn, error) {
	if cfg.PingTimeout <= 0 {
		cfg.PingTimeout = 15 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.MaxReadFrameSize == 0 {
		cfg.MaxReadFrameSize = defaultMaxReadFrameSize
	}
	cfg.MaxReadFrameSize = min(max(cfg.MaxReadFrameSize, 16<<10), 1<<24-1)
	c := &Conn{
		nc:            nc,
		cfg:           cfg,
		sock:          deadlineWriter{nc, cfg.WriteTimeout},
		drained:       make(chan struct{}),
		streams:       make(map[uint32]*stream),
		nextID:        1,
		maxStreams:    defaultMaxStreams,
		peerWindow:    65535,
		peerFrameSize: 16 << 10,
		sendWindow:    65535,
		recvAvail:     connWindow,
		pings:         make(map[[8]byte]chan struct{}),
		wlock:         make(chan struct{}, 1),
		flushc:        make(chan struct{}, 1),
		done:          make(chan struct{}),
	}
	c.flow.L, c.idle.L = &c.mu, &c.mu
	c.guard = &frameGuard{r: bufio.NewReaderSize(nc, 64<<10)}
	c.fr = http2.NewFramer(frameSink{c}, c.guard)
	c.fr.SetMaxReadFrameSize(cfg.MaxReadFrameSize)
	c.fr.SetReuseFrames() // a frame is done with before the next is read
	c.fr.MaxHeaderListSize = maxHeaderListSize
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.henc = hpack.NewEncoder(headerSink{c})

	if deadline, ok := ctx.Deadline(); ok {
		nc.SetDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { c.contain(func() { nc.SetDeadline(time.Unix(1, 0)) }) })
	err := c.start()
	if !stop() || err != nil {
		nc.Close()
		if d, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(d) {
			// The socket's deadline was ctx's: ctx ends now, if it
			// has not already.
			<-ctx.Done()
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	c.lastRead.Store(time.Now().UnixNano())
	go c.readLoop()
	go c.contain(c.flushLoop)
	if cfg.ReadIdleTimeout > 0 {
		time.AfterFunc(cfg.ReadIdleTimeout, c.idleCheck)
	}
	return c, nil
}

// start exchanges the preface and settings (RFC 9113 §3.4).
func (c *Conn) start() error {
	c.wbuf = append(c.wbuf, http2.ClientPreface...)
	c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: c.cfg.MaxReadFrameSize},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderListSize},
	)
	c.fr.WriteWindowUpdate(0, connWindow-65535)
	if err := c.flushNow(); err != nil {
		return err
	}
	f, err := c.fr.ReadFrame()
	if err != nil {
		return err
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		return fmt.Errorf("h2: peer sent %v before its SETTINGS", f.Header().Type)
	}
	tableSize, err := c.applySettings(sf)
	if err != nil {
		return err
	}
	if err := c.ackSettings(tableSize); err != nil {
		return err
	}
	return c.flushNow()
}

// Reserve reserves a stream for one request and reports whether it could:
// the connection is open, not going away, and below the peer's limit on
// concurrent streams. A true result must be followed by exactly one
// RoundTrip, which takes the reservation over.
func (c *Conn) Reserve() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.usableLocked() || len(c.streams)+c.reserved >= c.maxStreams {
		return false
	}
	c.reserved++
	return true
}

// unreserve gives back a reservation that did not become a stream.
func (c *Conn) unreserve() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reserved > 0 {
		c.reserved--
	}
	c.idle.Broadcast()
	c.closeIfDoneLocked()
}

func (c *Conn) usableLocked() bool {
	// Each reservation will take a stream ID; keep the IDs they will use
	// within range.
	return !c.closed && !c.goAway && !c.shutdown && int64(c.nextID)+2*int64(c.reserved) <= maxStreamID
}

// Closed reports whether the connection has ended: nothing more can be sent
// or received on it.
func (c *Conn) Closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// ActiveStreams counts the streams open on the connection.
func (c *Conn) ActiveStreams() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.streams)
}

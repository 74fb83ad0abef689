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
package h2

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// What this side advertises. Windows are large so that a response is never
// held up by window updates on a fast path; a stream's window is also the
// most of its response that can wait in memory for a slow reader.
const (
	streamWindow = 4 << 20
	connWindow   = 1 << 30
	connRefresh  = 1 << 20 // owed connection window that triggers WINDOW_UPDATE

	maxReadFrameSize  = 1 << 20
	maxHeaderListSize = 1 << 20
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
}

// Conn is one client HTTP/2 connection. Its methods are safe for
// concurrent use.
type Conn struct {
	nc  net.Conn
	cfg Config
	fr  *http2.Framer // read by the read loop, written holding wlock

	// The write side. Frames are appended to wbuf holding wlock; only
	// flushLoop (and writeNow) write to the socket, holding sockMu, so a
	// request never waits on a peer that reads slowly or not at all.
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
	pings    map[[8]byte]chan struct{}

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
	c.fr = http2.NewFramer(frameSink{c}, bufio.NewReaderSize(nc, 64<<10))
	c.fr.SetMaxReadFrameSize(maxReadFrameSize)
	c.fr.SetReuseFrames() // a frame is done with before the next is read
	c.fr.MaxHeaderListSize = maxHeaderListSize
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.henc = hpack.NewEncoder(headerSink{c})

	if deadline, ok := ctx.Deadline(); ok {
		nc.SetDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
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
	go c.flushLoop()
	if cfg.ReadIdleTimeout > 0 {
		time.AfterFunc(cfg.ReadIdleTimeout, c.checkIdle)
	}
	return c, nil
}

// start exchanges the preface and settings (RFC 9113 §3.4).
func (c *Conn) start() error {
	c.wbuf = append(c.wbuf, http2.ClientPreface...)
	c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: maxReadFrameSize},
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

// Close closes the connection at once; streams in flight fail with
// ErrConnClosed.
func (c *Conn) Close() error {
	c.closeWith(ErrConnClosed)
	<-c.done
	return nil
}

// Shutdown stops the connection from taking new streams, waits for those
// in flight to end, then sends GOAWAY and closes. If ctx ends first it
// returns ctx's error, and the connection closes with its last stream or
// when the caller closes it.
func (c *Conn) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	c.shutdown = true
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.idle.Broadcast()
		c.mu.Unlock()
	})
	defer stop()
	for (len(c.streams) > 0 || c.reserved > 0) && !c.closed && ctx.Err() == nil {
		c.idle.Wait()
	}
	if err := ctx.Err(); err != nil {
		c.goAway = true
		c.closeIfDoneLocked()
		c.mu.Unlock()
		return err
	}
	c.mu.Unlock()
	c.writeNow(func() error { return c.fr.WriteGoAway(0, http2.ErrCodeNo, nil) })
	return c.Close()
}

// Ping sends a PING and waits for its answer or for ctx to end.
func (c *Conn) Ping(ctx context.Context) error {
	var data [8]byte
	binary.BigEndian.PutUint64(data[:], uint64(time.Now().UnixNano()))
	ack := make(chan struct{})
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.closeErr
	}
	c.pings[data] = ack
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pings, data)
		c.mu.Unlock()
	}()
	if err := c.write(func() error { return c.fr.WritePing(false, data) }); err != nil {
		return err
	}
	select {
	case <-ack:
		return nil
	case <-c.done:
		return ErrConnClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// checkIdle pings a connection that has read nothing for ReadIdleTimeout
// and closes it if the answer does not come within PingTimeout. It
// re-arms itself for when the connection next could be idle that long.
func (c *Conn) checkIdle() {
	if c.Closed() {
		return
	}
	idle := time.Since(time.Unix(0, c.lastRead.Load()))
	if wait := c.cfg.ReadIdleTimeout - idle; wait > 0 {
		time.AfterFunc(wait, c.checkIdle)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.PingTimeout)
	defer cancel()
	if err := c.Ping(ctx); err != nil {
		// Not wrapped: the caller of a request that fails with it must
		// not take it for the end of its own context.
		c.closeWith(fmt.Errorf("h2: ping unanswered within %v", c.cfg.PingTimeout))
		return
	}
	time.AfterFunc(c.cfg.ReadIdleTimeout, c.checkIdle)
}

// lockWrite takes the write side; <-c.wlock gives it back.
func (c *Conn) lockWrite() { c.wlock <- struct{}{} }

// write runs frames, which writes frames with c.fr, on the write side,
// and has them flushed soon. It fails once a write has failed.
func (c *Conn) write(frames func() error) error {
	c.lockWrite()
	if c.werr == nil {
		c.werr = frames()
	}
	return c.unlockWrite()
}

// unlockWrite releases the write side, asking flushLoop to flush what was
// written.
func (c *Conn) unlockWrite() error {
	if c.werr == nil && !c.flushPending {
		c.flushPending = true
		c.flushc <- struct{}{} // never blocks: one request is pending at most
	}
	err := c.werr
	<-c.wlock
	if err != nil {
		c.closeWith(err)
	}
	return err
}

// flushLoop flushes the write side when asked. It yields first, so that
// goroutines already runnable (other requests on their way to this
// connection) can add their frames to the same write. Flushing in the
// writer's own goroutine costs a write(2) per request; handing it over
// without yielding costs the same, since the flusher runs next.
func (c *Conn) flushLoop() {
	for {
		select {
		case <-c.flushc:
		case <-c.done:
			return
		}
		runtime.Gosched()
		if err := c.flushNow(); err != nil {
			c.closeWith(err)
		}
	}
}

// flushNow hands what the write side holds to the socket and returns once
// it has left, or the write failed.
func (c *Conn) flushNow() error {
	c.sockMu.Lock()
	defer c.sockMu.Unlock()
	c.lockWrite()
	out := c.wbuf
	c.wbuf, c.spare = c.spare[:0], nil
	c.flushPending = false
	err := c.werr
	<-c.wlock
	if err == nil && len(out) > 0 {
		_, err = c.sock.Write(out)
	}

	c.lockWrite()
	if err != nil && c.werr == nil {
		c.werr = err
	}
	if cap(out) <= maxSpare {
		c.spare = out[:0]
	}
	drained := c.drained
	c.drained = make(chan struct{})
	<-c.wlock
	close(drained)
	return err
}

// maxSpare is the largest write buffer kept for the next flush; a burst
// larger than that is left to the collector.
const maxSpare = 256 << 10

// writeNow writes frames and flushes them before it returns, for frames
// that go out just before the connection closes.
func (c *Conn) writeNow(frames func() error) {
	c.lockWrite()
	if c.werr == nil {
		c.werr = frames()
	}
	<-c.wlock
	c.flushNow()
}

// frameSink collects the framer's output in wbuf; the framer writes only
// holding wlock.
type frameSink struct{ c *Conn }

func (f frameSink) Write(p []byte) (int, error) {
	f.c.wbuf = append(f.c.wbuf, p...)
	return len(p), nil
}

// closeWith ends the connection with err: every stream in flight fails
// with it, waiters wake, and the socket closes, which ends the read loop.
func (c *Conn) closeWith(err error) {
	if !errors.Is(err, ErrConnClosed) {
		err = fmt.Errorf("%w: %w", ErrConnClosed, err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed, c.closeErr = true, err
	for _, s := range c.streams {
		s.failLocked(err)
	}
	c.streams = nil
	c.flow.Broadcast()
	c.idle.Broadcast()
	c.mu.Unlock()
	c.nc.Close()
}

// connError ends the connection for a protocol error of the peer's,
// telling it why with GOAWAY.
func (c *Conn) connError(code http2.ErrCode, reason string) {
	// The last stream ID counts streams the peer opened: none, push
	// being off.
	c.writeNow(func() error { return c.fr.WriteGoAway(0, code, []byte(reason)) })
	c.closeWith(fmt.Errorf("%w: %s", http2.ConnectionError(code), reason))
}

// readLoop reads and dispatches frames until the connection ends.
func (c *Conn) readLoop() {
	defer close(c.done)
	for {
		f, err := c.fr.ReadFrame()
		var se http2.StreamError
		if errors.As(err, &se) {
			// A malformed frame on one stream: that stream fails, the
			// connection goes on.
			c.resetStream(se.StreamID, se.Code, se)
			continue
		}
		if err == nil {
			c.lastRead.Store(time.Now().UnixNano())
			err = c.dispatch(f)
		}
		if err != nil {
			// A protocol error of the peer's is answered with GOAWAY;
			// anything else is the socket's end.
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				c.connError(http2.ErrCode(ce), err.Error())
			} else {
				c.closeWith(err)
			}
			return
		}
	}
}

// protocolError is a connection error of type PROTOCOL_ERROR with a reason
// for GOAWAY's debug data and the logs.
func protocolError(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{http2.ConnectionError(http2.ErrCodeProtocol)}, args...)...)
}

func (c *Conn) dispatch(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return c.onHeaders(f)
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.RSTStreamFrame:
		return c.onReset(f)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		tableSize, err := c.applySettings(f)
		if err != nil {
			return err
		}
		return c.write(func() error { return c.ackSettings(tableSize) })
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.PingFrame:
		if f.IsAck() {
			c.mu.Lock()
			if ack, ok := c.pings[f.Data]; ok {
				close(ack)
				delete(c.pings, f.Data)
			}
			c.mu.Unlock()
			return nil
		}
		return c.write(func() error { return c.fr.WritePing(true, f.Data) })
	case *http2.GoAwayFrame:
		c.onGoAway(f)
	case *http2.PushPromiseFrame:
		return protocolError("PUSH_PROMISE with push disabled")
	}
	// Unknown frame types are ignored (RFC 9113 §4.1); PRIORITY is
	// advisory.
	return nil
}

// applySettings takes the peer's settings (RFC 9113 §6.5.2). A new initial
// window changes the send window of every open stream by the difference.
// A new SETTINGS_HEADER_TABLE_SIZE is returned, or -1, for ackSettings.
func (c *Conn) applySettings(f *http2.SettingsFrame) (int64, error) {
	tableSize := int64(-1)
	c.mu.Lock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingEnablePush:
			if s.Val != 0 {
				// Only a client may offer push (RFC 9113 §6.5.2).
				return protocolError("SETTINGS_ENABLE_PUSH=%d from a server", s.Val)
			}
		case http2.SettingMaxConcurrentStreams:
			c.maxStreams = int(min(s.Val, defaultMaxStreams))
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - int64(c.peerWindow)
			c.peerWindow = int32(s.Val)
			for _, st := range c.streams {
				st.sendWindow += delta
				if st.sendWindow > math.MaxInt32 {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
			}
			c.flow.Broadcast()
		case http2.SettingMaxFrameSize:
			c.peerFrameSize = int(s.Val)
		case http2.SettingMaxHeaderListSize:
			c.peerMaxHeader = s.Val
		case http2.SettingHeaderTableSize:
			tableSize = int64(s.Val)
		}
		return nil
	})
	c.mu.Unlock()
	return tableSize, err
}

// ackSettings acknowledges the peer's settings and, in the same hold of the
// write side, applies a new header table size to the encoder: the size
// update it then emits must open the first header block after the ACK
// (RFC 7541 §4.2). Called holding the write side.
func (c *Conn) ackSettings(tableSize int64) error {
	if err := c.fr.WriteSettingsAck(); err != nil {
		return err
	}
	if tableSize >= 0 {
		c.henc.SetMaxDynamicTableSizeLimit(uint32(tableSize))
	}
	return nil
}

func (c *Conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		c.sendWindow += inc
		if c.sendWindow > math.MaxInt32 {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
	} else if s := c.streams[f.StreamID]; s == nil {
		if err := c.unknownStreamLocked(f.StreamID, "WINDOW_UPDATE"); err != nil {
			return err
		}
	} else if s.sendWindow += inc; s.sendWindow > math.MaxInt32 {
		c.mu.Unlock()
		c.reset(s.id, s, http2.ErrCodeFlowControl, http2.StreamError{StreamID: s.id, Code: http2.ErrCodeFlowControl})
		c.mu.Lock()
	}
	c.flow.Broadcast()
	return nil
}

// onGoAway stops new streams; those the peer says it never processed fail
// with ErrUnprocessed, the others may finish (RFC 9113 §6.8).
func (c *Conn) onGoAway(f *http2.GoAwayFrame) {
	c.mu.Lock()
	c.goAway = true
	for id, s := range c.streams {
		if id > f.LastStreamID {
			s.failLocked(ErrUnprocessed)
			c.removeLocked(s)
		}
	}
	empty := len(c.streams) == 0 && c.reserved == 0
	c.mu.Unlock()
	if f.ErrCode != http2.ErrCodeNo || empty {
		c.closeWith(fmt.Errorf("GOAWAY %v %q", f.ErrCode, f.DebugData()))
	}
}

// removeLocked forgets s: it no longer counts against the peer's limit and
// frames for it are dropped. A connection going away closes with its last
// stream.
func (c *Conn) removeLocked(s *stream) {
	if c.streams[s.id] != s {
		return
	}
	delete(c.streams, s.id)
	c.flow.Broadcast()
	c.idle.Broadcast()
	c.closeIfDoneLocked()
}

// closeIfDoneLocked closes a connection the peer is going away from once
// nothing is left on it.
func (c *Conn) closeIfDoneLocked() {
	if c.goAway && len(c.streams) == 0 && c.reserved == 0 && !c.closed {
		go c.closeWith(ErrConnClosed)
	}
}

// windowUpdate is the flow control owed to the peer that is due now.
type windowUpdate struct {
	conn, stream int64
	id           uint32
}

// giveBackLocked gives n consumed or discarded bytes back to the
// connection's window, and to s's when s is not nil, and returns the
// WINDOW_UPDATEs now due: once a good share of a window is owed, so that a
// response costs few extra writes, or once more is owed than the peer has
// left, so that streams whose readers are slow cannot hold up the others
// for long.
func (c *Conn) giveBackLocked(n int64, s *stream) windowUpdate {
	if c.closed {
		return windowUpdate{}
	}
	var u windowUpdate
	c.recvUnsent += n
	if c.recvUnsent >= connRefresh || (c.recvUnsent > 0 && c.recvUnsent >= c.recvAvail) {
		u.conn, c.recvUnsent = c.recvUnsent, 0
		c.recvAvail += u.conn
	}
	if s != nil && !s.recvDone {
		s.recvUnsent += n
		if s.recvUnsent >= streamWindow/2 {
			u.stream, u.id, s.recvUnsent = s.recvUnsent, s.id, 0
			s.recvAvail += u.stream
		}
	}
	return u
}

// send writes u's WINDOW_UPDATE frames, if any are due.
func (u windowUpdate) send(c *Conn) {
	if u.conn+u.stream == 0 {
		return
	}
	c.write(func() error {
		if u.conn > 0 {
			if err := c.fr.WriteWindowUpdate(0, uint32(u.conn)); err != nil {
				return err
			}
		}
		if u.stream > 0 {
			return c.fr.WriteWindowUpdate(u.id, uint32(u.stream))
		}
		return nil
	})
}

// returnWindow is giveBackLocked for a caller that does not hold mu.
func (c *Conn) returnWindow(n int64, s *stream) {
	c.mu.Lock()
	u := c.giveBackLocked(n, s)
	c.mu.Unlock()
	u.send(c)
}

// resetStream fails stream id with err, if this side still has it, and
// sends RST_STREAM with code.
func (c *Conn) resetStream(id uint32, code http2.ErrCode, err error) {
	c.reset(id, nil, code, err)
}

// reset fails stream id with err and sends RST_STREAM with code. With only
// set, it fails that stream and resets it only if it is still open. The
// reset is queued before the stream's slot is freed, both holding the write
// side, so that no new stream can reach the peer ahead of it while the peer
// still counts the old one against MAX_CONCURRENT_STREAMS.
func (c *Conn) reset(id uint32, only *stream, code http2.ErrCode, err error) {
	c.lockWrite()
	c.mu.Lock()
	s := c.streams[id]
	if only != nil {
		only.failLocked(err)
	}
	send := (only == nil || s == only) && !c.closed
	if s != nil && send {
		s.failLocked(err)
	}
	c.mu.Unlock()
	if send && c.werr == nil {
		// Written without mu: a write that waits on a full socket must
		// not hold up the read loop or Reserve.
		c.werr = c.fr.WriteRSTStream(id, code)
	}
	if s != nil && send {
		c.mu.Lock()
		c.removeLocked(s)
		c.mu.Unlock()
	}
	c.unlockWrite()
}

// deadlineWriter gives every write to the socket a time limit.
type deadlineWriter struct {
	nc      net.Conn
	timeout time.Duration
}

func (w deadlineWriter) Write(p []byte) (int, error) {
	w.nc.SetWriteDeadline(time.Now().Add(w.timeout))
	return w.nc.Write(p)
}

// headerSink collects the encoder's output in c.hbuf.
type headerSink struct{ c *Conn }

func (h headerSink) Write(p []byte) (int, error) {
	h.c.hbuf = append(h.c.hbuf, p...)
	return len(p), nil
}

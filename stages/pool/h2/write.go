package h2

import (
	"fmt"
	"net"
	"runtime"
	"time"

	"golang.org/x/net/http2"
)

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
		if h := c.cfg.hooks; h != nil && h.flush != nil {
			h.flush()
		}
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
	c.ctrlQueued = 0
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

// writeControl is write for the answers the peer's own frames call for:
// acks of its PINGs and SETTINGS. A peer that sends those without end and
// does not read would have them pile up while a flush waits on the socket
// (up to WriteTimeout): a PING flood made 240 MiB of acks in 10 seconds.
// Past maxQueuedControl bytes of them not yet taken by a flush, the
// connection fails with errControlFlood instead.
//
// The other frames the read loop writes cannot pile up that way: a
// RST_STREAM ends an open stream, and only requests open streams (at most
// 1000 at a time, 13 bytes each); a WINDOW_UPDATE returns at least half a
// window (26 bytes for every 1 MiB or more received).
func (c *Conn) writeControl(frames func() error) error {
	c.lockWrite()
	if c.werr == nil && c.ctrlQueued >= maxQueuedControl {
		<-c.wlock
		return errControlFlood
	}
	if c.werr == nil {
		n := len(c.wbuf)
		c.werr = frames()
		c.ctrlQueued += len(c.wbuf) - n
	}
	return c.unlockWrite()
}

// maxQueuedControl bounds the bytes of PING and SETTINGS acks waiting for
// a flush: about 7 700 PING acks, or 14 500 SETTINGS acks (x/net's server
// allows 10 000 queued control frames). A peer that behaves has a PING or
// two, and a SETTINGS, unanswered at a time, and a flush takes what is
// queued as soon as the socket takes the previous one; so only a peer that
// floods them while it stops reading reaches it. The write side then
// holds at most this much more than requests and bodies put there.
const maxQueuedControl = 128 << 10

// errControlFlood ends a connection whose peer sends PING or SETTINGS
// frames faster than it reads their acks.
var errControlFlood = fmt.Errorf("%w: more than %d bytes of PING and SETTINGS acks queued for a peer that does not read them",
	http2.ConnectionError(http2.ErrCodeEnhanceYourCalm), maxQueuedControl)

// writeOpen runs frames on the write side if s may still send: neither
// side has reset it. A frame on a stream the peer has closed is a
// connection error for some peers (net/http's server among them). It
// first waits while the write side holds maxBuffered or more.
func (s *stream) writeOpen(frames func() error) error {
	c := s.c
	c.lockWrite()
	for c.werr == nil && len(c.wbuf) >= maxBuffered {
		drained := c.drained
		<-c.wlock
		select {
		case <-drained:
		case <-c.done:
			return ErrConnClosed
		}
		c.lockWrite()
	}
	c.mu.Lock()
	err := s.sendErr
	if err == nil && c.streams[s.id] != s {
		err = errStreamClosed
	}
	c.mu.Unlock()
	if err != nil {
		<-c.wlock
		return err
	}
	if c.werr == nil {
		c.werr = frames()
	}
	return c.unlockWrite()
}

// maxBuffered is how much the write side holds for the socket before a
// body sender waits for a flush to leave: requests never wait on the
// socket, bodies do, so that a peer that reads slowly holds back uploads
// rather than memory.
const maxBuffered = 512 << 10

// frameSink collects the framer's output in wbuf; the framer writes only
// holding wlock.
type frameSink struct{ c *Conn }

func (f frameSink) Write(p []byte) (int, error) {
	f.c.wbuf = append(f.c.wbuf, p...)
	return len(p), nil
}

// headerSink collects the encoder's output in c.hbuf.
type headerSink struct{ c *Conn }

func (h headerSink) Write(p []byte) (int, error) {
	h.c.hbuf = append(h.c.hbuf, p...)
	return len(p), nil
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

package h2

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"golang.org/x/net/http2"
)

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
		c.contain(func() {
			c.mu.Lock()
			c.idle.Broadcast()
			c.mu.Unlock()
		})
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
	if c.closed {
		// The connection failed while its streams were finishing: they
		// failed with it, and the caller is told why.
		err := c.closeErr
		c.mu.Unlock()
		return err
	}
	c.mu.Unlock()
	c.writeNow(func() error { return c.fr.WriteGoAway(0, http2.ErrCodeNo, nil) })
	return c.Close()
}

// Ping sends a PING and waits for its answer or for ctx to end.
func (c *Conn) Ping(ctx context.Context) error {
	ack := make(chan struct{})
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.closeErr
	}
	// A counter, not the clock: two pings sent at the same instant
	// (or under a test's frozen clock) must not share an entry.
	c.pingSeq++
	var data [8]byte
	binary.BigEndian.PutUint64(data[:], c.pingSeq)
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

// idleCheck runs checkIdle, from a timer.
func (c *Conn) idleCheck() { c.contain(c.checkIdle) }

// checkIdle pings a connection that has read nothing for ReadIdleTimeout
// and closes it if the answer does not come within PingTimeout. It
// re-arms itself for when the connection next could be idle that long.
func (c *Conn) checkIdle() {
	if c.Closed() {
		return
	}
	if h := c.cfg.hooks; h != nil && h.idle != nil {
		h.idle()
	}
	idle := time.Since(time.Unix(0, c.lastRead.Load()))
	if wait := c.cfg.ReadIdleTimeout - idle; wait > 0 {
		time.AfterFunc(wait, c.idleCheck)
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
	time.AfterFunc(c.cfg.ReadIdleTimeout, c.idleCheck)
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
	if c.goAwayErr != nil {
		err = fmt.Errorf("%w, after the peer's %w", err, c.goAwayErr)
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

// onGoAway stops new streams; those the peer says it never processed fail
// with ErrUnprocessed, the others may finish (RFC 9113 §6.8), whatever
// the error code: a peer that sends one may still answer what it took,
// and closes the connection when it is done. The connection closes with
// its last stream.
func (c *Conn) onGoAway(f *http2.GoAwayFrame) {
	c.mu.Lock()
	c.goAway = true
	if f.ErrCode != http2.ErrCodeNo && c.goAwayErr == nil {
		// Debug data can be as long as a frame: the error keeps a
		// line's worth.
		debug := f.DebugData()
		c.goAwayErr = fmt.Errorf("GOAWAY %v %q", f.ErrCode, debug[:min(len(debug), 256)])
	}
	for id, s := range c.streams {
		if id > f.LastStreamID {
			s.failLocked(ErrUnprocessed)
			c.removeLocked(s)
		}
	}
	c.closeIfDoneLocked()
	c.mu.Unlock()
}

// closeIfDoneLocked closes a connection that is going away (the peer sent
// GOAWAY, or Shutdown gave up waiting) once nothing is left on it.
func (c *Conn) closeIfDoneLocked() {
	if c.goAway && len(c.streams) == 0 && c.reserved == 0 && !c.closed {
		go c.contain(func() { c.closeWith(ErrConnClosed) })
	}
}

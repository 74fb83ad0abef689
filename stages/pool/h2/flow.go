package h2

import (
	"math"

	"golang.org/x/net/http2"
)

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

// onWindowUpdate adds to a send window (RFC 9113 §6.9.1): a stream's
// window beyond 2^31-1 resets that stream, the connection's ends the
// connection.
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
		c.reset(s, http2.ErrCodeFlowControl, http2.StreamError{StreamID: s.id, Code: http2.ErrCodeFlowControl})
		c.mu.Lock()
	}
	c.flow.Broadcast()
	return nil
}

// awaitWindow waits until s may send and returns how much of want it may
// send in one frame; zero needs no window.
func (s *stream) awaitWindow(want int) (int, error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		switch {
		case s.sendErr != nil:
			return 0, s.sendErr
		case c.closed:
			return 0, c.closeErr
		case want == 0:
			return 0, nil
		case s.sendWindow > 0 && c.sendWindow > 0:
			n := int64(min(want, c.peerFrameSize))
			n = min(n, s.sendWindow, c.sendWindow)
			s.sendWindow -= n
			c.sendWindow -= n
			return int(n), nil
		}
		c.flow.Wait()
	}
}

package h2

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/net/http2"
)

// readLoop reads and dispatches frames until the connection ends.
func (c *Conn) readLoop() {
	defer close(c.done)
	c.contain(c.readFrames)
}

func (c *Conn) readFrames() {
	for {
		f, err := c.fr.ReadFrame()
		var se http2.StreamError
		if errors.As(err, &se) {
			// A malformed frame on one stream: that stream fails, the
			// connection goes on.
			err = c.onStreamError(se)
		} else if err == nil {
			c.lastRead.Store(time.Now().UnixNano())
			if h := c.cfg.hooks; h != nil && h.frame != nil {
				h.frame(f)
			}
			err = c.dispatch(f)
		}
		if err != nil {
			var ce http2.ConnectionError
			switch {
			case errors.Is(err, errControlFlood):
				// The peer does not read: a GOAWAY would wait
				// behind the writes it does not take.
				c.closeWith(err)
			case errors.As(err, &ce):
				// A protocol error of the peer's is answered
				// with GOAWAY.
				c.connError(http2.ErrCode(ce), err.Error())
			case errors.Is(err, http2.ErrFrameTooLarge):
				c.connError(http2.ErrCodeFrameSize, fmt.Sprintf("frame larger than SETTINGS_MAX_FRAME_SIZE %d", c.cfg.MaxReadFrameSize))
			default:
				// The socket's end.
				c.closeWith(err)
			}
			return
		}
	}
}

// onStreamError handles a frame the framer found malformed for one stream:
// an open stream is reset, a frame for a stream that has ended is dropped
// (RST_STREAM on a closed stream is not allowed, RFC 9113 §5.1), and one
// for a stream never opened is a connection error. A HEADERS frame whose
// padding is longer than the frame is a connection error (RFC 9113 §6.2):
// its block was never decoded, so HPACK state is lost; the framer reports
// it as a stream error without a cause, unlike a decoded block's invalid
// fields.
func (c *Conn) onStreamError(se http2.StreamError) error {
	frame := c.guard.lastType
	if frame == http2.FrameHeaders && se.Cause == nil {
		return protocolError("HEADERS on stream %d with padding longer than the frame", se.StreamID)
	}
	if frame == http2.FrameContinuation {
		frame = http2.FrameHeaders // the block's invalid fields
	}
	c.mu.Lock()
	s := c.streams[se.StreamID]
	if s == nil {
		err := c.unknownStreamLocked(se.StreamID, frame.String())
		c.mu.Unlock()
		return err
	}
	c.mu.Unlock()
	c.reset(s, se.Code, se)
	return nil
}

// protocolError is a connection error of type PROTOCOL_ERROR with a reason
// for GOAWAY's debug data and the logs.
func protocolError(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{http2.ConnectionError(http2.ErrCodeProtocol)}, args...)...)
}

// dispatch handles one frame from the peer; an error it returns ends the
// connection.
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
		return c.writeControl(func() error { return c.ackSettings(tableSize) })
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
		return c.writeControl(func() error { return c.fr.WritePing(true, f.Data) })
	case *http2.GoAwayFrame:
		c.onGoAway(f)
	case *http2.PushPromiseFrame:
		return protocolError("PUSH_PROMISE with push disabled")
	}
	// Unknown frame types are ignored (RFC 9113 §4.1); PRIORITY is
	// advisory.
	return nil
}

// onHeaders takes a response head, an interim response or trailers.
func (c *Conn) onHeaders(f *http2.MetaHeadersFrame) error {
	c.mu.Lock()
	s := c.streams[f.StreamID]
	if s == nil {
		err := c.unknownStreamLocked(f.StreamID, "HEADERS")
		c.mu.Unlock()
		return err
	}
	var reset error
	code := http2.ErrCodeProtocol
	switch {
	case s.recvDone:
		reset, code = errors.New("HEADERS after the end of the stream"), http2.ErrCodeStreamClosed
	case f.Truncated:
		// The framer stopped decoding at SETTINGS_MAX_HEADER_LIST_SIZE.
		reset = errors.New("header list larger than this side accepts")
	case s.resp == nil:
		reset = s.onResponseHeadLocked(f)
	case !f.StreamEnded():
		reset = errors.New("trailers without END_STREAM")
	case len(f.PseudoFields()) > 0:
		reset = errors.New("pseudo-header in trailers")
	default:
		s.trailers, reset = header(f.RegularFields())
		if reset == nil {
			s.endRecvLocked()
		}
	}
	c.mu.Unlock()
	if reset != nil {
		c.reset(s, code, http2.StreamError{StreamID: s.id, Code: code, Cause: reset})
	}
	return nil
}

// onResponseHeadLocked takes the head of the response, or skips an
// interim one. It returns why the head is malformed, if it is.
func (s *stream) onResponseHeadLocked(f *http2.MetaHeadersFrame) error {
	status := f.PseudoValue("status")
	code, err := strconv.Atoi(status)
	if err != nil || len(status) != 3 || code < 100 {
		return errors.New("malformed :status " + strconv.Quote(status))
	}
	if code < 200 {
		// 1xx are interim (RFC 9110 §15.2): the final response follows.
		// 101 has no place in HTTP/2 (RFC 9113 §8.6).
		if code == http.StatusSwitchingProtocols || f.StreamEnded() {
			return errors.New("interim response " + status + " not allowed here")
		}
		if s.interim++; s.interim > maxInterimResponses {
			return fmt.Errorf("more than %d interim (1xx) responses", maxInterimResponses)
		}
		return nil
	}
	h, err := header(f.RegularFields())
	if err != nil {
		return err
	}
	if cl, ok := h["Content-Length"]; ok {
		n, err := strconv.ParseUint(cl[0], 10, 63)
		for _, v := range cl[1:] {
			if v != cl[0] {
				err = errors.New("conflicting Content-Length")
			}
		}
		if err != nil {
			// ParseUint takes digits only, no sign (RFC 9110 §8.6).
			return errors.New("malformed Content-Length")
		}
		s.declared = int64(n)
	}
	if code == http.StatusNoContent || code == http.StatusNotModified {
		s.noBody = true
	}
	s.resp = &http.Response{
		StatusCode:    code,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        h,
		ContentLength: s.declared,
		Body:          &s.body,
	}
	if s.noBody || f.StreamEnded() {
		// A response that ended with its header has no body: its length
		// is known, 0, so that a proxy passes it on as one header too
		// (gRPC's Trailers-Only answers rely on that).
		s.resp.ContentLength = max(s.declared, 0)
	}
	if f.StreamEnded() {
		s.endRecvLocked()
	}
	s.notifyLocked()
	return nil
}

// onData buffers a DATA frame for its stream's reader.
func (c *Conn) onData(f *http2.DataFrame) error {
	n := int64(f.Length) // padding included, as flow control counts it
	c.mu.Lock()
	if n > c.recvAvail {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	c.recvAvail -= n
	s := c.streams[f.StreamID]
	if s == nil {
		err := c.unknownStreamLocked(f.StreamID, "DATA")
		c.mu.Unlock()
		c.returnWindow(n, nil)
		return err
	}
	data := f.Data()
	var reset error
	code := http2.ErrCodeProtocol
	switch {
	case s.resp == nil:
		reset = errors.New("DATA before the response head")
	case s.recvDone:
		reset, code = errors.New("DATA after the end of the stream"), http2.ErrCodeStreamClosed
	case n > s.recvAvail:
		reset, code = errors.New("DATA beyond the stream's window"), http2.ErrCodeFlowControl
	case s.declared >= 0 && s.received+int64(len(data)) > s.declared:
		reset = errors.New("response body longer than its Content-Length")
	}
	if reset != nil {
		c.mu.Unlock()
		c.reset(s, code, http2.StreamError{StreamID: s.id, Code: code, Cause: reset})
		c.returnWindow(n, nil)
		return nil
	}
	s.recvAvail -= n
	s.received += int64(len(data))
	s.data.write(data)
	if f.StreamEnded() {
		s.endRecvLocked()
	} else if len(data) > 0 {
		s.notifyLocked()
	}
	c.mu.Unlock()
	if pad := n - int64(len(data)); pad > 0 {
		c.returnWindow(pad, s)
	}
	return nil
}

// onReset ends a stream the peer reset. NO_ERROR after a complete response
// only asks to stop sending the request body (RFC 9113 §8.1).
func (c *Conn) onReset(f *http2.RSTStreamFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.streams[f.StreamID]
	if s == nil {
		return c.unknownStreamLocked(f.StreamID, "RST_STREAM")
	}
	s.failLocked(http2.StreamError{StreamID: s.id, Code: f.ErrCode})
	s.peerEnded = true
	c.removeLocked(s)
	return nil
}

// unknownStreamLocked judges a frame for a stream not in the map. One never
// opened is a protocol error (RFC 9113 §5.1). One that ended is fine:
// frames for it can still be in flight after this side reset it; but
// DATA or HEADERS after the peer itself ended the stream (END_STREAM or
// RST_STREAM) is a connection error STREAM_CLOSED (RFC 9113 §5.1,
// "closed"), when the stream is recent enough to be remembered.
func (c *Conn) unknownStreamLocked(id uint32, frame string) error {
	if id%2 == 0 || id >= c.nextID {
		return protocolError("%s on stream %d, which was never opened", frame, id)
	}
	if (frame == "DATA" || frame == "HEADERS") && c.peerEndedLocked(id) {
		return fmt.Errorf("%w: %s on stream %d after the peer ended it",
			http2.ConnectionError(http2.ErrCodeStreamClosed), frame, id)
	}
	return nil
}

// maxInterimResponses bounds the interim (1xx) responses to one request;
// more fail it with a stream error PROTOCOL_ERROR. A peer that sent them
// without end would hold the request for ever, each one costing a header
// block to decode. A request gets a 100 (Continue) and perhaps a 103
// (Early Hints) or two. net/http's client used to allow 5; it and x/net's
// now bound the bytes of the 1xx headers instead, unless the caller reads
// them.
const maxInterimResponses = 5

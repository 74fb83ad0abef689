package h2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"

	"golang.org/x/net/http2"
)

// Request is one request to send upstream.
type Request struct {
	Method    string
	Scheme    string
	Authority string
	// Path is the request target with its query, as in :path.
	Path   string
	Header http.Header
	// ContentLength is the body's length, or -1 when unknown.
	ContentLength int64
	// Body is nil for a request without one. The connection closes it.
	Body io.ReadCloser
	// Trailer, when it has fields once Body has returned io.EOF, is sent
	// after the body. Its keys at the start are announced in a Trailer
	// header field.
	Trailer http.Header
}

var (
	// errBodyClosed fails a stream whose response body its reader closed.
	errBodyClosed = errors.New("h2: response body closed")
	// errStreamClosed stops a body sender whose stream has ended.
	errStreamClosed = errors.New("h2: stream closed")
	// A request body that does not match its Content-Length.
	errBodyLonger  = errors.New("h2: request body longer than its Content-Length")
	errBodyShorter = errors.New("h2: request body shorter than its Content-Length")
)

// stream is one request and its response. Its fields are guarded by c.mu
// unless noted.
type stream struct {
	c   *Conn
	id  uint32 // set once, before the stream is shared
	req *Request
	ctx context.Context // ends the stream when it ends
	// wake tells the caller, waiting for the response or its body, that
	// something changed; the caller looks under c.mu.
	wake chan struct{}
	body body

	resp       *http.Response // the final response's head, once it came
	err        error          // why the response failed, if it did
	recvDone   bool           // nothing more comes from the peer
	data       dataBuffer
	declared   int64 // the response's Content-Length, -1 if none
	received   int64
	noBody     bool // a response to HEAD, or a 204 or 304: its length is not its body's
	trailers   http.Header
	recvAvail  int64 // what the peer may still send on the stream
	recvUnsent int64 // read by the caller, not yet given back

	sendWindow int64
	sendErr    error // stops the body sender
	sendDone   bool  // END_STREAM sent

	bodyDone chan struct{} // closed when the body sender returns; nil without a body
	chunks   [2]*chunk     // the first of data's chunks, kept here to save an allocation
}

// RoundTrip sends req on a stream reserved with Reserve and returns the
// response once its header has come. The response body must be closed; that
// resets the stream if it is still open and returns once the request body
// is no longer read. When ctx ends while RoundTrip or the body's Read
// waits, the stream is reset and they fail with ctx's error.
func (c *Conn) RoundTrip(ctx context.Context, req *Request) (*http.Response, error) {
	fields, err := checkRequest(req)
	if err != nil {
		c.unreserve()
		closeBody(req)
		return nil, err
	}
	s := &stream{
		c: c, req: req, ctx: ctx, wake: make(chan struct{}, 1),
		declared: -1, recvAvail: streamWindow,
		noBody:   req.Method == http.MethodHead,
		sendDone: req.Body == nil, // END_STREAM goes on the HEADERS frame
	}
	s.body.s = s
	s.data.chunks = s.chunks[:0]

	select {
	case c.wlock <- struct{}{}:
	case <-ctx.Done():
		// The write side is stuck behind a peer that stopped reading;
		// nothing of the request was sent.
		c.unreserve()
		closeBody(req)
		return nil, ctx.Err()
	}
	c.mu.Lock()
	usable := !c.closed && !c.goAway && !c.shutdown && c.werr == nil
	if !usable || (c.peerMaxHeader > 0 && fields > uint64(c.peerMaxHeader)) {
		tooLarge := usable
		c.mu.Unlock()
		<-c.wlock
		c.unreserve()
		closeBody(req)
		if tooLarge {
			return nil, errors.New("h2: request header list larger than the upstream accepts")
		}
		return nil, ErrUnprocessed
	}
	c.reserved--
	s.id = c.nextID
	c.nextID += 2
	c.streams[s.id] = s
	s.sendWindow = int64(c.peerWindow)
	frameSize := c.peerFrameSize
	c.mu.Unlock()
	c.werr = c.writeRequestHeaders(s.id, req, frameSize)
	if c.unlockWrite() != nil {
		// The stream failed with the connection.
		closeBody(req)
		return nil, s.finish()
	}

	if req.Body != nil {
		s.bodyDone = make(chan struct{})
		go s.sendBody()
	}

	c.mu.Lock()
	for s.resp == nil && s.err == nil {
		c.mu.Unlock()
		s.await()
		c.mu.Lock()
	}
	resp, err := s.resp, s.err
	c.mu.Unlock()
	if resp == nil {
		s.finish()
		return nil, err
	}
	return resp, nil
}

// await waits for news on s, or for its context to end, which resets it.
func (s *stream) await() {
	select {
	case <-s.wake:
	case <-s.ctx.Done():
		s.cancel(s.ctx.Err())
	}
}

// notifyLocked wakes the caller waiting on s, if it waits.
func (s *stream) notifyLocked() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
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

func closeBody(req *Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// failLocked ends s with err: the response, unless it has come in full,
// fails, and the body sender stops.
func (s *stream) failLocked(err error) {
	if !s.recvDone {
		s.err, s.recvDone = err, true
	}
	if s.sendErr == nil {
		s.sendErr = err
	}
	s.notifyLocked()
	s.c.flow.Broadcast()
}

// endRecvLocked marks the response complete; a body shorter than its
// Content-Length fails it.
func (s *stream) endRecvLocked() {
	if s.declared >= 0 && s.received != s.declared && !s.noBody {
		s.failLocked(http2.StreamError{StreamID: s.id, Code: http2.ErrCodeProtocol, Cause: errors.New("response body shorter than its Content-Length")})
	}
	s.recvDone = true
	s.notifyLocked()
	if s.sendDone {
		s.c.removeLocked(s)
	}
}

// cancel resets s for its caller's context.
func (s *stream) cancel(err error) {
	s.c.reset(s.id, s, http2.ErrCodeCancel, err)
	// A body sender may be waiting for the client's next bytes.
	closeBody(s.req)
}

// finish releases what s holds once its caller is done with it: a stream
// still open is reset, its unread data is given back to the connection's
// window, and the body sender is stopped and waited for. It returns the
// error the stream failed with, if any.
func (s *stream) finish() error {
	c := s.c
	c.mu.Lock()
	if c.streams[s.id] == s {
		c.mu.Unlock()
		c.reset(s.id, s, http2.ErrCodeCancel, errBodyClosed)
		c.mu.Lock()
	}
	err := s.err
	u := c.giveBackLocked(int64(s.data.release()), nil)
	c.mu.Unlock()
	u.send(c)
	if s.bodyDone != nil {
		select {
		case <-s.bodyDone:
		default:
			// The sender may be waiting for the client's next bytes;
			// closing the body wakes it.
			closeBody(s.req)
			<-s.bodyDone
		}
	}
	return err
}

// body is a response body. Like most readers, it is for one goroutine:
// Close must not race with Read.
type body struct {
	s      *stream
	closed bool // by the caller; only the caller touches it
}

func (b *body) Read(p []byte) (int, error) {
	s := b.s
	c := s.c
	if b.closed {
		return 0, errBodyClosed
	}
	c.mu.Lock()
	for s.data.size == 0 && !s.recvDone {
		c.mu.Unlock()
		s.await()
		c.mu.Lock()
	}
	if s.data.size == 0 {
		err := s.err
		if err == nil {
			err = io.EOF
			if s.trailers != nil {
				s.resp.Trailer = s.trailers
			}
		}
		c.mu.Unlock()
		return 0, err
	}
	n := s.data.read(p)
	u := c.giveBackLocked(int64(n), s)
	c.mu.Unlock()
	u.send(c)
	return n, nil
}

func (b *body) Close() error {
	if !b.closed {
		b.closed = true
		b.s.finish()
	}
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
		c.reset(s.id, s, code, http2.StreamError{StreamID: s.id, Code: code, Cause: reset})
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
	if s.noBody {
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
		c.reset(s.id, s, code, http2.StreamError{StreamID: s.id, Code: code, Cause: reset})
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
	c.removeLocked(s)
	return nil
}

// unknownStreamLocked judges a frame for a stream not in the map: one that
// ended is fine, frames for it can still be in flight; one never opened is
// a protocol error (RFC 9113 §5.1).
func (c *Conn) unknownStreamLocked(id uint32, frame string) error {
	if id%2 == 0 || id >= c.nextID {
		return protocolError("%s on stream %d, which was never opened", frame, id)
	}
	return nil
}

// sendBody streams the request body, then its trailers, within the peer's
// flow-control windows.
func (s *stream) sendBody() {
	defer close(s.bodyDone)
	req := s.req
	defer req.Body.Close()
	bp := sendBuffers.Get().(*[]byte)
	defer sendBuffers.Put(bp)
	// The buffer has a byte of slack so that, once Content-Length bytes
	// are in, the read that should find EOF can prove the body is not
	// longer.
	buf := (*bp)[:len(*bp)-1]
	var sent int64
	for {
		n, err := req.Body.Read(buf)
		switch {
		case req.ContentLength < 0:
		case sent+int64(n) > req.ContentLength:
			err = errBodyLonger
		case err == io.EOF && sent+int64(n) < req.ContentLength:
			err = errBodyShorter
		}
		if err == nil && req.ContentLength >= 0 && sent+int64(n) == req.ContentLength {
			// Look for the end now, so that END_STREAM goes on the
			// last DATA frame rather than in a frame of its own.
			var m int
			m, err = req.Body.Read((*bp)[n : n+1])
			if m > 0 {
				err = errBodyLonger
			}
		}
		if err != nil && err != io.EOF {
			s.cancel(fmt.Errorf("%w: %w", ErrRequestBody, err))
			return
		}
		sent += int64(n)
		last := err == io.EOF
		withTrailers := last && hasValues(req.Trailer)
		if err := s.writeData(buf[:n], last && !withTrailers); err != nil {
			return
		}
		if last {
			if withTrailers {
				// Their values came with the end of the body, after
				// RoundTrip checked the request.
				if _, err := checkFields(req.Trailer); err != nil {
					s.cancel(fmt.Errorf("%w: %w", ErrRequestBody, err))
					return
				}
				if err := s.writeOpen(func() error { return s.c.writeTrailers(s.id, req.Trailer, s.c.frameSize()) }); err != nil {
					return
				}
			}
			c := s.c
			c.mu.Lock()
			s.sendDone = true
			if s.recvDone {
				c.removeLocked(s)
			}
			c.mu.Unlock()
			return
		}
	}
}

// hasValues reports whether h has a field with a value: announced trailers
// that never came are not sent.
func hasValues(h http.Header) bool {
	for _, values := range h {
		if len(values) > 0 {
			return true
		}
	}
	return false
}

// sendBuffers hold request body bytes on their way out: one frame's worth
// at a time, and one byte of slack.
var sendBuffers = sync.Pool{New: func() any {
	b := make([]byte, 64<<10+1)
	return &b
}}

// writeData sends p in DATA frames as the windows allow, the last one
// ending the stream if end is set.
func (s *stream) writeData(p []byte, end bool) error {
	c := s.c
	for len(p) > 0 || end {
		n, err := s.awaitWindow(len(p))
		if err != nil {
			return err
		}
		chunk := p[:n]
		p = p[n:]
		endNow := end && len(p) == 0
		if err := s.writeOpen(func() error { return c.fr.WriteData(s.id, endNow, chunk) }); err != nil {
			return err
		}
		if endNow {
			return nil
		}
	}
	return nil
}

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

func (c *Conn) frameSize() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peerFrameSize
}

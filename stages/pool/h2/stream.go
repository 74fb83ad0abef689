package h2

import (
	"context"
	"errors"
	"io"
	"net/http"

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
	interim    int  // interim (1xx) responses so far
	peerEnded  bool // the peer ended the stream: END_STREAM or RST_STREAM came
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
		go c.contain(s.sendBody)
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
	s.recvDone, s.peerEnded = true, true
	s.notifyLocked()
	if s.sendDone {
		s.c.removeLocked(s)
	}
}

// cancel resets s for its caller's context.
func (s *stream) cancel(err error) {
	s.c.reset(s, http2.ErrCodeCancel, err)
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
		c.reset(s, http2.ErrCodeCancel, errBodyClosed)
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

// reset fails s with err and, if it is still open, sends RST_STREAM with
// code. The reset is queued before the stream's slot is freed, both
// holding the write side, so that no new stream can reach the peer ahead
// of it while the peer still counts the old one against
// MAX_CONCURRENT_STREAMS.
func (c *Conn) reset(s *stream, code http2.ErrCode, err error) {
	c.lockWrite()
	c.mu.Lock()
	s.failLocked(err)
	send := c.streams[s.id] == s && !c.closed
	c.mu.Unlock()
	if send && c.werr == nil {
		// Written without mu: a write that waits on a full socket must
		// not hold up the read loop or Reserve.
		c.werr = c.fr.WriteRSTStream(s.id, code)
	}
	if send {
		c.mu.Lock()
		c.removeLocked(s)
		c.mu.Unlock()
	}
	c.unlockWrite()
}

// removeLocked forgets s: it no longer counts against the peer's limit and
// frames for it are dropped. A connection going away closes with its last
// stream.
func (c *Conn) removeLocked(s *stream) {
	if c.streams[s.id] != s {
		return
	}
	delete(c.streams, s.id)
	if s.peerEnded {
		c.ended[c.endedN%len(c.ended)] = s.id
		c.endedN++
	}
	c.flow.Broadcast()
	c.idle.Broadcast()
	c.closeIfDoneLocked()
}

// peerEndedLocked reports whether stream id, gone from the map, is one of
// the last streams the peer ended itself. Streams that ended long ago are
// forgotten: frames for them are then dropped, as for a stream this side
// reset.
func (c *Conn) peerEndedLocked(id uint32) bool {
	for i := range min(c.endedN, len(c.ended)) {
		if c.ended[i] == id {
			return true
		}
	}
	return false
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

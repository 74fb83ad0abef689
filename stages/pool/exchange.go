package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"spooky/envelope"
	"spooky/stages"
	"spooky/stages/pool/h2"
	"spooky/upstream"
)

// Errors that end a request at the pool. Their text is what the client reads.
var (
	ErrConnectFailed = errors.New("upstream connect failed")
	ErrProtocol      = errors.New("upstream protocol error")
	ErrUpstreamReset = errors.New("upstream reset")
	ErrNoEndpoint    = errors.New("upstream endpoint not configured")
)

// errPerTryTimeout is the cause logged for a try that ran out of its
// per-try timeout.
var errPerTryTimeout = errors.New("no response head within the per-try timeout")

// bufPool holds the buffers that response bodies are copied through.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, 32<<10)
	return &b
}}

// Handle forwards e's request to e.Endpoint and, once the upstream has
// answered, hands the response to the listener to relay at the client's
// pace (Envelope.Stream), so that the worker is free again; or it finishes
// e with an error; or, when the try failed in a way the route says to
// retry and it is safe to, it sends e back to the balancer for another
// endpoint. Every try ends with one e.EndTry, which feeds the endpoint's
// latency and outlier state; a relayed try ends when its relay does.
func (p *Pool) Handle(e *envelope.Envelope) {
	start := time.Now()
	c, ec := p.lookup(e.Route.Upstream, e.Endpoint.Address)
	if ec == nil {
		// The balancer chose from a config this stage no longer knows:
		// nothing was sent, so it may pick again.
		e.EndTry(start.UnixNano(), 0, false)
		if e.Repick() && p.balancer.TrySend(e) {
			return
		}
		e.Finish(http.StatusServiceUnavailable, ErrNoEndpoint)
		return
	}
	t := p.exchange(e, c, ec)
	if t.answer != nil {
		a := t.answer
		a.latency, a.ec = time.Since(start), ec
		e.Stream(a)
		return
	}
	ec.streamEnded()
	// A client that went away is not the endpoint's fault, whatever the
	// try's error says; a route timeout is (the endpoint was slow).
	failed := t.upstreamFailed() && !errors.Is(e.Ctx.Err(), context.Canceled)
	if failed && !errors.Is(t.cause, ErrConnectFailed) {
		// A failed dial logged its own cause.
		ec.log.failed(t.failure(), t.cause)
	}
	end := time.Now()
	e.EndTry(end.UnixNano(), end.Sub(start), failed)
	if p.retry(e, t) {
		return
	}
	// When the request's context has ended, that is the cause of whatever
	// went wrong after, and it decides the status.
	if t.err != nil && stages.FinishExpired(e) {
		return
	}
	e.Finish(t.status, t.err)
}

// try is how one try ended: the status and error to finish with, and what
// kind of failure it was, for retry decisions.
type try struct {
	status int
	err    error
	// condition names the failure as routes[].retries.on does, or is "".
	condition string
	// answered is the upstream's status when its response was held back
	// for a retry.
	answered int
	// retry, when set, is the group whose retry budget a place was taken
	// in for this try's retry.
	retry *upstream.Group
	// answer, when set, is the upstream's response, to go to the client.
	answer *answer
	// cause is what went wrong, for the log: err is what the client reads.
	cause error
}

// failure names a failed try's kind for the log.
func (t try) failure() string {
	switch {
	case t.answered != 0:
		return "status " + strconv.Itoa(t.answered)
	case t.condition != "":
		return t.condition
	case t.status == http.StatusGatewayTimeout:
		return "timeout"
	}
	return strconv.Itoa(t.status)
}

// upstreamFailed reports whether the endpoint is to blame, for outlier
// detection: a 5xx from it, a refused connection, a reset, a timeout. A
// client that went away (499) is not its fault, nor is a pool that no
// longer has the endpoint.
func (t try) upstreamFailed() bool {
	if t.answered != 0 {
		return t.answered >= 500
	}
	return t.status >= 500 && !errors.Is(t.err, ErrNoEndpoint)
}

// acquireRetry reports whether a try that failed with condition may be
// retried, and if so takes a place in the group's retry budget for it: the
// route allows another try for the condition, nothing of the response went
// to the client, the request can be sent again, the deadline has not
// passed and the budget has room. It returns the group, or nil.
func (p *Pool) acquireRetry(e *envelope.Envelope, condition string) *upstream.Group {
	r := &e.Route.Retries
	if condition == "" || e.Attempt >= r.Attempts || e.ResponseStarted || e.Ctx.Err() != nil ||
		!slices.Contains(r.On, condition) || !replayable(e, condition) {
		return nil
	}
	g := e.Endpoint.Group()
	if g == nil || !g.AcquireRetry() {
		return nil
	}
	return g
}

// retry sends e back to the balancer for another endpoint when t may be
// retried. It reports whether it did; if it did not, e is the caller's to
// finish.
func (p *Pool) retry(e *envelope.Envelope, t try) bool {
	g := t.retry
	if g == nil {
		if g = p.acquireRetry(e, t.condition); g == nil {
			return false
		}
	}
	e.HoldRetry(g)
	e.Tried |= 1 << (uint(e.Endpoint.Index) % 64)
	e.Endpoint = nil
	// Never wait on the balancer: it may be waiting on this stage's
	// mailbox, and a full mailbox means retrying would only add load. The
	// place held in the budget is given back when e is finished.
	return p.balancer.TrySend(e)
}

// replayable reports whether e's request may go to another endpoint after
// failing with condition. A connect failure or a refused stream (RFC 9113
// §8.7) proves the upstream never processed it, so any method may be
// retried; otherwise only idempotent methods (RFC 9110 §9.2.2). Either way
// the body must not have been read, since it is streamed, not buffered.
func replayable(e *envelope.Envelope, condition string) bool {
	if !e.ReplaySafe() {
		return false
	}
	switch condition {
	case "connect-failure", "refused-stream":
		return true
	}
	switch e.Request.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete, http.MethodTrace:
		return true
	}
	return false
}

// exchange does one try: it sends the request and waits for the response
// head (and a small body whole), and returns either a failure or the
// answer to relay.
func (p *Pool) exchange(e *envelope.Envelope, c *connector, ec *endpointConns) (t try) {
	cc, err := ec.get(e.Ctx, c)
	if err != nil {
		return failure(err)
	}
	// The per-try timeout bounds the wait for the response headers only:
	// it cancels the try's context while waiting and is stopped as soon as
	// the headers are in, so a long body is never cut by it. The context
	// lives as long as the response: an answer's relay ends it.
	ctx := e.Ctx
	var perTry *time.Timer
	var cancel context.CancelFunc
	if d := e.Route.Retries.PerTryTimeout; d > 0 {
		ctx, cancel = context.WithCancel(ctx)
		defer func() {
			if t.answer == nil {
				cancel()
			}
		}()
		perTry = time.AfterFunc(d, cancel)
	}
	resp, err := cc.RoundTrip(ctx, outbound(e, c.scheme))
	for resends := 0; errors.Is(err, h2.ErrUnprocessed) && resends < maxResends && e.ReplaySafe() && ctx.Err() == nil; resends++ {
		// The request never reached the upstream: the connection went
		// away (a GOAWAY, an idle close) between being picked and
		// carrying it. That is the connection's doing, not the
		// endpoint's or the route's, so the request goes again on
		// another connection to the same endpoint without counting as a
		// retry, as it would have had it picked that one.
		if cc, err = ec.get(ctx, c); err == nil {
			resp, err = cc.RoundTrip(ctx, outbound(e, c.scheme))
		}
	}
	if perTry != nil && !perTry.Stop() && e.Ctx.Err() == nil {
		if err == nil {
			resp.Body.Close()
		}
		return try{status: http.StatusGatewayTimeout, err: stages.ErrTimeout, condition: "504", cause: errPerTryTimeout}
	}
	if err != nil {
		return failure(err)
	}
	a := &answer{resp: resp, cancel: cancel}
	// Closing the body before e is finished cancels the upstream stream if
	// it is still open and waits until the transport is done with the
	// request, whose body and trailers belong to e. An answer's relay
	// closes it instead.
	defer func() {
		if t.answer == nil {
			a.release()
		}
	}()
	if e.Attempt < e.Route.Retries.Attempts {
		// A status the route retries on: hold the response back, so the
		// next try can still answer, if a retry is possible at all. If
		// it is not, the client gets the upstream's own answer; if the
		// retry cannot be queued after all (the balancer's mailbox is
		// full), a 502 that names the upstream's status.
		cond := strconv.Itoa(resp.StatusCode)
		if g := p.acquireRetry(e, cond); g != nil {
			return try{status: http.StatusBadGateway, err: fmt.Errorf("upstream answered %d", resp.StatusCode),
				condition: cond, answered: resp.StatusCode, retry: g}
		}
	}
	if resp.ContentLength > 0 && resp.ContentLength <= smallBody && e.Request.Method != http.MethodHead &&
		resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified {
		// A small body is read whole before anything goes to the
		// client, so an upstream that dies in the middle of it is a
		// failure before the response, which an idempotent request may
		// retry, rather than a reset the client sees.
		a.buf = bufPool.Get().(*[]byte)
		a.head = (*a.buf)[:resp.ContentLength]
		if _, err := io.ReadFull(resp.Body, a.head); err != nil {
			if errors.Is(err, h2.ErrRequestBody) {
				return failure(err)
			}
			return try{status: http.StatusBadGateway, err: ErrUpstreamReset, condition: "reset-before-response", cause: err}
		}
	}
	return try{answer: a}
}

// smallBody is the largest response body read whole before the response
// starts; it fits the copy buffer.
const smallBody = 32 << 10

// outbound builds the upstream request from e's. The router has already
// normalised the headers, so they are sent as they are.
func outbound(e *envelope.Envelope, scheme string) *h2.Request {
	in := e.Request
	path := in.RequestURI
	if path == "" || path[0] != '/' {
		// quic-go keeps :path as it came; anything else (a request
		// built in this process, "*") is rebuilt from the URL.
		path = in.URL.RequestURI()
	}
	out := &h2.Request{
		Method:        in.Method,
		Scheme:        scheme,
		Authority:     in.Host,
		Path:          path,
		Header:        in.Header,
		ContentLength: in.ContentLength,
	}
	// quic-go reports -1 for every request without Content-Length, GETs
	// included; sending those upstream as "unknown length" would cost an
	// empty DATA frame and a second write per request.
	if in.ContentLength != 0 && in.Body != nil && !(in.ContentLength < 0 && bodiless(in.Method)) {
		// A request with a body may end in trailers, announced or not;
		// the announced ones are named in the request head.
		out.Trailer = maps.Clone(in.Trailer)
		if out.Trailer == nil {
			out.Trailer = http.Header{}
		}
		out.Body = e.UpstreamBody(out.Trailer)
	} else if in.ContentLength < 0 {
		out.ContentLength = 0
	}
	return out
}

// bodiless reports whether a request with this method is forwarded without
// its body when it has no Content-Length: content in a GET or HEAD has no
// defined meaning (RFC 9110 §9.3.1, §9.3.2), and clients do not send it.
func bodiless(method string) bool {
	return method == http.MethodGet || method == http.MethodHead
}

// answer is an upstream response on its way to the client: the pool
// worker hands it to the listener's goroutine (Envelope.Stream), which
// relays it at the client's pace.
type answer struct {
	resp    *http.Response
	head    []byte             // the body, when it was read ahead whole
	buf     *[]byte            // head's buffer, from bufPool
	cancel  context.CancelFunc // ends the try's own context, if it has one
	latency time.Duration      // until the upstream's head (and small body) were in
	ec      *endpointConns     // the endpoint's connections, told when the stream ends
}

var _ envelope.Relayer = (*answer)(nil)

// release gives back what the answer holds: the upstream stream (closing
// the body resets it if it is still open), the try's context and the
// buffer.
func (a *answer) release() {
	a.resp.Body.Close()
	if a.ec != nil {
		a.ec.streamEnded()
	}
	if a.cancel != nil {
		a.cancel()
	}
	if a.buf != nil {
		bufPool.Put(a.buf)
	}
}

// Relay sends the answer to e.Writer, ends the try and returns how the
// request ended. The endpoint is judged by its own part: its status, or a
// body it cut short; its latency is the time to its answer, not the
// client's pace of reading it.
func (a *answer) Relay(e *envelope.Envelope) (int, error) {
	defer a.release()
	status, err := respond(e, a.resp, a.head)
	if err != nil && e.Ctx.Err() != nil {
		// The route timeout or the client's going away ended the
		// relay, whatever the read or write that noticed it says.
		status, err = envelope.StatusClientClosed, stages.ErrClientClosed
		if errors.Is(e.Ctx.Err(), context.DeadlineExceeded) {
			status, err = http.StatusGatewayTimeout, stages.ErrTimeout
		}
	}
	t := try{status: status, err: err}
	failed := t.upstreamFailed() && !errors.Is(e.Ctx.Err(), context.Canceled)
	if failed && err != nil {
		a.ec.log.failed("reset mid-body", err)
	}
	e.EndTry(time.Now().UnixNano(), a.latency, failed)
	return status, err
}

// respond sends resp's header, body (head, what was read of it ahead, then
// the rest) and trailers to e.Writer. The listener bounds each write
// (listen.write_idle_timeout, the route's deadline).
func respond(e *envelope.Envelope, resp *http.Response, head []byte) (int, error) {
	// The client connection has refused responses with connection-specific
	// fields as malformed (RFC 9113 §8.2.2), so the header passes as it is.
	w := e.Writer
	h := w.Header()
	maps.Copy(h, resp.Header)
	e.ResponseStarted = true
	e.Writer.WriteHeader(resp.StatusCode)
	// A response without Content-Length may be a stream (server-sent
	// events, long polls): its header goes out at once and each chunk as
	// it comes. One with a length needs no flushing: quic-go sends what
	// it is given, and the end of the handler sends the rest.
	var rc *http.ResponseController
	if resp.ContentLength < 0 {
		rc = http.NewResponseController(w)
		if err := flush(rc); err != nil {
			return envelope.StatusClientClosed, stages.ErrClientClosed
		}
	}
	if len(head) > 0 {
		if _, err := w.Write(head); err != nil {
			return envelope.StatusClientClosed, stages.ErrClientClosed
		}
	}
	if err := copyBody(w, rc, resp.Body); err != nil {
		if errors.Is(err, stages.ErrClientClosed) {
			return envelope.StatusClientClosed, err
		}
		return http.StatusBadGateway, err
	}
	// quic-go's http3 sends headers named with TrailerPrefix as trailers
	// after the body.
	for name, values := range resp.Trailer {
		h[http.TrailerPrefix+name] = values
	}
	return resp.StatusCode, nil
}

// copyBody streams body to w, flushing after every write through rc, when
// given, so that nothing waits in a buffer for data that may be slow to
// come. It returns stages.ErrClientClosed when the client cannot be written
// to or its request body failed under the exchange, and ErrUpstreamReset
// when the body ends in anything but EOF, a short Content-Length included.
func copyBody(w io.Writer, rc *http.ResponseController, body io.Reader) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return stages.ErrClientClosed
			}
			if rc != nil && flush(rc) != nil {
				return stages.ErrClientClosed
			}
		}
		switch {
		case err == io.EOF:
			return nil
		case errors.Is(err, h2.ErrRequestBody):
			// The client's own body failed under the exchange.
			return stages.ErrClientClosed
		case err != nil:
			return fmt.Errorf("%w: %w", ErrUpstreamReset, err)
		}
	}
}

// flush sends what the response writer holds. A writer that cannot flush
// is not an error: its data goes out when it chooses.
func flush(rc *http.ResponseController) error {
	if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

// maxResends bounds how often one try sends its request again on another
// connection after the one it picked went away unused.
const maxResends = 2

// failure names what failed before any response went to the client. A
// request body that failed is the client's doing. A connect failure
// or a request that provably never reached the upstream may be retried for
// any request (connect-failure, refused-stream); every other failure, for an
// idempotent one (reset-before-response). The end of e.Ctx while waiting is
// left to Handle.
func failure(err error) try {
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.Is(err, h2.ErrRequestBody):
		// The client's body failed (mostly: the client went away), not
		// the upstream.
		return try{status: envelope.StatusClientClosed, err: stages.ErrClientClosed, cause: err}
	case errors.Is(err, ErrNoEndpoint):
		return try{status: http.StatusServiceUnavailable, err: err, cause: err}
	case errors.Is(err, ErrConnectFailed):
		return try{status: http.StatusBadGateway, err: err, condition: "connect-failure", cause: err}
	case errors.As(err, &se) && se.Code == http2.ErrCodeRefusedStream, errors.Is(err, h2.ErrUnprocessed):
		return try{status: http.StatusBadGateway, err: ErrUpstreamReset, condition: "refused-stream", cause: err}
	case errors.As(err, &se) && se.Code == http2.ErrCodeProtocol, errors.As(err, &ce):
		return try{status: http.StatusBadGateway, err: ErrProtocol, condition: "reset-before-response", cause: err}
	default:
		// A reset stream, a GOAWAY that may have come after the request
		// was read, a connection lost or closed under the stream.
		return try{status: http.StatusBadGateway, err: ErrUpstreamReset, condition: "reset-before-response", cause: err}
	}
}

package pool

import (
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"sync"

	"golang.org/x/net/http2"

	"spooky/envelope"
	"spooky/stages"
)

// Errors that end a request at the pool. Their text is what the client reads.
var (
	ErrConnectFailed = errors.New("upstream connect failed")
	ErrProtocol      = errors.New("upstream protocol error")
	ErrUpstreamReset = errors.New("upstream reset")
	ErrNoEndpoint    = errors.New("upstream endpoint not configured")
)

// bufPool holds the buffers that response bodies are copied through.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, 32<<10)
	return &b
}}

// Handle forwards e's request to e.Endpoint, streams the response to
// e.Writer and finishes e.
func (p *Pool) Handle(e *envelope.Envelope) {
	var c *connector
	var ec *endpointConns
	if g := p.current.Load().groups[e.Route.Upstream]; g != nil {
		c, ec = g.connector, g.endpoints[e.Endpoint]
	}
	if ec == nil {
		// The balancer chose from a config this stage has not (or no
		// longer) applied.
		e.Finish(http.StatusServiceUnavailable, ErrNoEndpoint)
		return
	}
	ec.requests.Add(1)
	status, err := forward(e, c, ec)
	// When the request's context has ended, that is the cause of whatever
	// went wrong after, and it decides the status.
	if err != nil && stages.FinishExpired(e) {
		return
	}
	if status == http.StatusBadGateway {
		ec.failures.Add(1)
	}
	e.Finish(status, err)
}

// forward does the exchange and returns the status and error to finish e
// with.
func forward(e *envelope.Envelope, c *connector, ec *endpointConns) (int, error) {
	cc, err := ec.get(e.Ctx, c)
	switch {
	case errors.Is(err, ErrNoEndpoint):
		return http.StatusServiceUnavailable, err
	case err != nil:
		// ErrConnectFailed, or the end of e.Ctx, which Handle sees to.
		return http.StatusBadGateway, err
	}
	resp, err := cc.RoundTrip(outbound(e, c.scheme))
	if err != nil {
		return http.StatusBadGateway, roundTripError(err)
	}
	// Closing the body before e is finished cancels the upstream stream if
	// it is still open and waits until the transport is done with the
	// request, whose body and trailers belong to e.
	defer resp.Body.Close()
	return respond(e, resp)
}

// outbound builds the upstream request from e's. The router has already
// normalised the headers, so they are sent as they are.
func outbound(e *envelope.Envelope, scheme string) *http.Request {
	in := e.Request
	u := *in.URL
	u.Scheme, u.Host = scheme, e.Endpoint
	if _, ok := in.Header["User-Agent"]; !ok {
		// An empty value stops the transport from adding its own.
		in.Header["User-Agent"] = []string{""}
	}
	body := in.Body
	if in.ContentLength == 0 {
		// For a server request 0 means no body, but for a client
		// request with a Body it means "unknown".
		body = http.NoBody
	}
	out := &http.Request{
		Method:        in.Method,
		URL:           &u,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        in.Header,
		Body:          body,
		ContentLength: in.ContentLength,
		Trailer:       in.Trailer,
		Host:          in.Host,
	}
	return out.WithContext(e.Ctx)
}

// respond sends resp's header, body and trailers to e.Writer.
func respond(e *envelope.Envelope, resp *http.Response) (int, error) {
	// x/net's transport already drops the fixed list of connection-specific
	// fields from HTTP/2 responses, Connection with them (so the names it
	// listed cannot be found any more); stripping here keeps the rule from
	// resting on that.
	stages.StripHopByHop(resp.Header)
	h := e.Writer.Header()
	maps.Copy(h, resp.Header)
	e.ResponseStarted = true
	e.Writer.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(e.Writer)
	// Flushing the header at once lets a response that streams (server-sent
	// events, long polls) start before its first byte of body.
	if err := flush(rc); err != nil {
		return stages.StatusClientClosed, stages.ErrClientClosed
	}
	if err := copyBody(e.Writer, rc, resp.Body); err != nil {
		if errors.Is(err, stages.ErrClientClosed) {
			return stages.StatusClientClosed, err
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

// copyBody streams body to w, flushing after every write so that nothing
// waits in a buffer for data that may be slow to come. It returns
// stages.ErrClientClosed when the client cannot be written to and
// ErrUpstreamReset when the body ends in anything but EOF, a short
// Content-Length included.
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
			if ferr := flush(rc); ferr != nil {
				return stages.ErrClientClosed
			}
		}
		switch {
		case err == io.EOF:
			return nil
		case err != nil:
			return ErrUpstreamReset
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

// roundTripError names what failed before any response arrived.
func roundTripError(err error) error {
	var se http2.StreamError
	var ga http2.GoAwayError
	var oe *net.OpError
	switch {
	case errors.As(err, &se):
		if se.Code == http2.ErrCodeProtocol {
			return ErrProtocol
		}
		return ErrUpstreamReset
	case errors.As(err, &ga), errors.As(err, &oe),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return ErrUpstreamReset
	default:
		// http2.ConnectionError, a malformed response, a header the
		// peer's limits refuse.
		return ErrProtocol
	}
}

package listener

import (
	"errors"
	"io"
	"net/http"

	"github.com/quic-go/quic-go"

	"spooky/config"
)

// Errors a request is refused with at the edge. Their text is what the
// client reads.
var (
	ErrHeaderTooLarge = errors.New("request header fields too large")
	ErrTooManyHeaders = errors.New("too many request header fields")
	ErrBodyTooLarge   = errors.New("request body too large")
)

// applyLimits takes a new config's per-request and per-connection limits;
// the write idle timeout and request limits apply to the next request, the
// stream limit to the next connection.
func (l *Listener) applyLimits(cfg *config.Config) {
	limits := cfg.Listen.Limits
	l.limits.Store(&limits)
	l.writeIdle.Store(int64(cfg.Listen.WriteIdleTimeout))
	l.quicConf.Store(quicConfigOf(cfg.Listen.QUIC))
}

// quicConfigOf is the QUIC configuration listen.quic asks for.
func quicConfigOf(q config.QUIC) *quic.Config {
	return &quic.Config{
		Allow0RTT:                      q.Allow0RTT,
		MaxIdleTimeout:                 q.IdleTimeout,
		KeepAlivePeriod:                q.KeepAlive,
		MaxIncomingStreams:             int64(q.MaxStreams),
		InitialStreamReceiveWindow:     uint64(min(q.MaxStreamWindow, quicInitialWindow)),
		MaxStreamReceiveWindow:         uint64(q.MaxStreamWindow),
		InitialConnectionReceiveWindow: uint64(min(q.MaxConnectionWindow, 3*quicInitialWindow/2)),
		MaxConnectionReceiveWindow:     uint64(q.MaxConnectionWindow),
	}
}

// quicInitialWindow is quic-go's own initial stream window, which flow
// control auto-tunes up from.
const quicInitialWindow = 512 << 10

// quicConfig is quic.Config.GetConfigForClient: each new connection gets
// the QUIC settings in force when it arrives. quic-go copies what it is
// given, so the one value serves every connection.
func (l *Listener) quicConfig(*quic.ClientInfo) (*quic.Config, error) {
	return l.quicConf.Load(), nil
}

// ErrTooEarly refuses a request that arrived in early data and is not safe
// to replay (RFC 8470 §5.2).
var ErrTooEarly = errors.New("request sent in early data; repeat it once the handshake is complete")

// checkEarlyData applies RFC 8470 to a request that arrived in TLS early
// data, before its connection's handshake completed: whoever recorded the
// client's first flight can replay it, so only GET, HEAD and OPTIONS go on,
// marked Early-Data: 1 for the upstream (which may answer 425 itself), and
// anything else gets 425 Too Early. A replayed flight never completes its
// handshake, so its requests are always seen as early.
func checkEarlyData(r *http.Request, c *conn) (int, error) {
	if c == nil {
		return 0, nil // over TCP: Go's TLS server takes no early data
	}
	qc := c.quic.Load()
	if qc == nil {
		return 0, nil
	}
	select {
	case <-qc.HandshakeComplete():
		return 0, nil
	default:
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		r.Header.Set("Early-Data", "1")
		return 0, nil
	}
	return http.StatusTooEarly, ErrTooEarly
}

// fieldOverhead is what HPACK and QPACK count for each field beyond its
// name and value (RFC 7541 §4.1, RFC 9204 §3.2.1).
const fieldOverhead = 32

// checkHeader applies the header limits to r and returns the status and
// error to refuse it with, or 0. Pseudo-header fields count too.
func (l *Listener) checkHeader(r *http.Request, limits *config.ClientLimits) (int, error) {
	size := int64(len(":method")+len(r.Method)+len(":path")+len(r.RequestURI)+
		len(":authority")+len(r.Host)+len(":scheme")+len("https")) + 4*fieldOverhead
	count := 0
	for name, values := range r.Header {
		for _, v := range values {
			count++
			size += int64(len(name) + len(v) + fieldOverhead)
		}
	}
	switch {
	case count > limits.RequestHeaders:
		l.refused.add(refusedHeaders)
		return http.StatusRequestHeaderFieldsTooLarge, ErrTooManyHeaders
	case size > limits.RequestHeaderBytes:
		l.refused.add(refusedHeaderBytes)
		return http.StatusRequestHeaderFieldsTooLarge, ErrHeaderTooLarge
	case limits.RequestBodyBytes > 0 && r.ContentLength > limits.RequestBodyBytes:
		l.refused.add(refusedBodyBytes)
		return http.StatusRequestEntityTooLarge, ErrBodyTooLarge
	}
	if limits.RequestBodyBytes > 0 && r.ContentLength < 0 && r.Body != nil &&
		r.Method != http.MethodGet && r.Method != http.MethodHead {
		// A body of unannounced length is cut off at the limit; one with
		// a Content-Length is held to it by quic-go.
		r.Body = &limitedBody{ReadCloser: r.Body, left: limits.RequestBodyBytes, refused: &l.refused}
	}
	return 0, nil
}

// limitedBody fails a request body that grows past the limit, so that the
// request's stream is reset rather than forwarded further.
type limitedBody struct {
	io.ReadCloser
	left    int64
	refused *refusals
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, ErrBodyTooLarge
	}
	// Read one byte past the limit to tell a body that ends right at
	// it from one that goes on.
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.ReadCloser.Read(p)
	if b.left -= int64(n); b.left < 0 {
		b.refused.add(refusedBodyBytes)
		return 0, ErrBodyTooLarge
	}
	return n, err
}

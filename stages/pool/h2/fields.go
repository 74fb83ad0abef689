package h2

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"spooky/headers"
)

// checkRequest validates req's fields before anything of it is encoded,
// since HPACK state cannot be rolled back, and returns the size of its
// header list as SETTINGS_MAX_HEADER_LIST_SIZE counts it.
func checkRequest(req *Request) (uint64, error) {
	if req.Method == "" || !httpguts.ValidHeaderFieldName(req.Method) {
		return 0, fmt.Errorf("h2: invalid method %q", req.Method)
	}
	size := fieldSize(":method", req.Method) + fieldSize(":authority", req.Authority)
	if req.Method != http.MethodConnect {
		if req.Path == "" {
			return 0, errors.New("h2: empty :path")
		}
		size += fieldSize(":scheme", req.Scheme) + fieldSize(":path", req.Path)
	}
	for _, h := range []http.Header{req.Header, req.Trailer} {
		n, err := checkFields(h)
		if err != nil {
			return 0, err
		}
		size += n
	}
	return size, nil
}

// checkFields validates h's names and values (RFC 9113 §8.2.1) and returns
// their size as SETTINGS_MAX_HEADER_LIST_SIZE counts it.
func checkFields(h http.Header) (uint64, error) {
	var size uint64
	for name, values := range h {
		if !httpguts.ValidHeaderFieldName(name) {
			return 0, fmt.Errorf("h2: invalid header field name %q", name)
		}
		for _, v := range values {
			if !httpguts.ValidHeaderFieldValue(v) {
				return 0, fmt.Errorf("h2: invalid value for header field %q", name)
			}
			size += fieldSize(name, v)
		}
	}
	return size, nil
}

func fieldSize(name, value string) uint64 {
	return uint64(len(name) + len(value) + 32)
}

// notSent reports whether a request field, by canonical name, stays out of
// the header block: HTTP/2 forbids connection-specific fields (RFC 9113
// §8.2.2); Host becomes :authority, and Content-Length and Trailer are
// written from the request's own fields.
func notSent(name string) bool {
	switch name {
	case "Host", "Content-Length", "Trailer":
		return true
	}
	return headers.IsHopByHop(name)
}

// writeRequestHeaders encodes req's head and writes it on stream id.
// Called with the write side held.
func (c *Conn) writeRequestHeaders(id uint32, req *Request, frameSize int) error {
	c.hbuf = c.hbuf[:0]
	c.field(":method", req.Method)
	if req.Method != http.MethodConnect {
		c.field(":scheme", req.Scheme)
	}
	c.field(":authority", req.Authority)
	if req.Method != http.MethodConnect {
		c.field(":path", req.Path)
	}
	for name, values := range req.Header {
		if notSent(name) {
			continue
		}
		lower := lowerName(name)
		for _, v := range values {
			if lower == "te" && !strings.EqualFold(v, "trailers") {
				continue
			}
			c.field(lower, v)
		}
	}
	if len(req.Trailer) > 0 {
		names := make([]string, 0, len(req.Trailer))
		for name := range req.Trailer {
			names = append(names, name)
		}
		c.field("trailer", strings.Join(names, ", "))
	}
	if sendsContentLength(req) {
		c.field("content-length", strconv.FormatInt(req.ContentLength, 10))
	}
	return c.writeHeaderBlock(id, req.Body == nil, frameSize)
}

// sendsContentLength reports whether req's length goes in its head: when
// known and not zero, or zero for methods that are expected to carry a body,
// so the upstream need not wait for one.
func sendsContentLength(req *Request) bool {
	switch {
	case req.ContentLength > 0:
		return true
	case req.ContentLength < 0:
		return false
	}
	switch req.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		return true
	}
	return false
}

// writeTrailers encodes trailer and writes it on stream id, ending it.
// Called with the write side held.
func (c *Conn) writeTrailers(id uint32, trailer http.Header, frameSize int) error {
	c.hbuf = c.hbuf[:0]
	for name, values := range trailer {
		if notSent(name) {
			continue
		}
		lower := lowerName(name)
		for _, v := range values {
			c.field(lower, v)
		}
	}
	return c.writeHeaderBlock(id, true, frameSize)
}

func (c *Conn) field(name, value string) {
	// The encoder writes to headerSink, which cannot fail.
	c.henc.WriteField(hpack.HeaderField{Name: name, Value: value})
}

// writeHeaderBlock writes the block in c.hbuf as HEADERS and as many
// CONTINUATION frames as the peer's frame size needs.
func (c *Conn) writeHeaderBlock(id uint32, endStream bool, frameSize int) error {
	block := c.hbuf
	first := true
	for first || len(block) > 0 {
		chunk := block[:min(len(block), frameSize)]
		block = block[len(chunk):]
		var err error
		if first {
			err = c.fr.WriteHeaders(http2.HeadersFrameParam{
				StreamID:      id,
				BlockFragment: chunk,
				EndStream:     endStream,
				EndHeaders:    len(block) == 0,
			})
			first = false
		} else {
			err = c.fr.WriteContinuation(id, len(block) == 0, chunk)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// commonNames maps the canonical form of common field names to their
// lower case, which HTTP/2 requires, so that they cost no allocation.
var commonNames = func() map[string]string {
	m := make(map[string]string)
	for _, name := range []string{
		"accept", "accept-charset", "accept-encoding", "accept-language", "accept-ranges",
		"authorization", "cache-control", "content-encoding", "content-language",
		"content-type", "cookie", "date", "etag", "expect", "forwarded", "from",
		"if-match", "if-modified-since", "if-none-match", "if-range", "if-unmodified-since",
		"last-modified", "origin", "pragma", "range", "referer", "te", "user-agent",
		"via", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id",
		"grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "traceparent", "tracestate",
		"priority",
	} {
		m[http.CanonicalHeaderKey(name)] = name
	}
	return m
}()

func lowerName(name string) string {
	if lower, ok := commonNames[name]; ok {
		return lower
	}
	return strings.ToLower(name)
}

// header builds a response's header or trailer from decoded fields; one
// backing array holds all the values. Connection-specific fields make the
// message malformed (RFC 9113 §8.2.2): passed on, Transfer-Encoding or
// Connection would mislead an HTTP/1 hop further on.
func header(fields []hpack.HeaderField) (http.Header, error) {
	h := make(http.Header, len(fields))
	values := make([]string, len(fields))
	for _, f := range fields {
		key := http.CanonicalHeaderKey(f.Name)
		if headers.IsHopByHop(key) || key == "Te" {
			return nil, fmt.Errorf("connection-specific field %q", f.Name)
		}
		if vv, ok := h[key]; ok {
			h[key] = append(vv, f.Value)
			continue
		}
		values[0] = f.Value
		h[key] = values[:1:1]
		values = values[1:]
	}
	return h, nil
}

package h2

import (
	"fmt"
	"io"
	"net/http"
	"sync"
)

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

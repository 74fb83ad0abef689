package pool

import (
	"context"
	"io"
	"net/http"
)

// Probe sends one active health check: GET path to the endpoint at address
// in group, over the same connections requests use, so that a check fails
// when traffic would. It returns the response status.
func (p *Pool) Probe(ctx context.Context, group, address, path string) (int, error) {
	c, ec := p.lookup(group, address)
	if ec == nil {
		return 0, ErrNoEndpoint
	}
	// The request is built before a stream is reserved: a reservation must
	// be followed by a RoundTrip, or it is never given back.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.scheme+"://"+address+path, nil)
	if err != nil {
		return 0, err
	}
	cc, err := ec.get(ctx, c)
	if err != nil {
		return 0, err
	}
	req.Header.Set("User-Agent", "spooky-health-check")
	resp, err := cc.RoundTrip(req)
	if err != nil {
		return 0, err
	}
	// Reading a little of the body lets the stream end cleanly rather
	// than be reset; a check is judged by its status alone.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}

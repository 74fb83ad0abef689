package pool

import (
	"context"
	"io"
	"net/http"

	"spooky/stages/pool/h2"
)

// Probe sends one active health check: GET path to the endpoint at address
// in group, over the same connections requests use, so that a check fails
// when traffic would. It returns the response status.
func (p *Pool) Probe(ctx context.Context, group, address, path string) (int, error) {
	c, ec := p.lookup(group, address)
	if ec == nil {
		return 0, ErrNoEndpoint
	}
	cc, err := ec.get(ctx, c)
	if err != nil {
		return 0, err
	}
	resp, err := cc.RoundTrip(ctx, &h2.Request{
		Method:    http.MethodGet,
		Scheme:    c.scheme,
		Authority: address,
		Path:      path,
		Header:    http.Header{"User-Agent": {"spooky-health-check"}},
	})
	if err != nil {
		return 0, err
	}
	// Reading a little of the body lets the stream end cleanly rather
	// than be reset; a check is judged by its status alone.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}

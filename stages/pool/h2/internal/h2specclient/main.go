// Command h2specclient makes one HTTP/2 request with package h2, for
// h2specd, the client half of h2spec, which runs it once per test case
// with the case's URL as its last argument: h2c with prior knowledge, a
// GET of that URL, its body read to the end. It exits 0 when the response
// came whole, 1 otherwise; h2specd judges the client by the frames it sent,
// not by its exit code. It exists only for the conformance test in
// package h2 (h2spec_test.go).
//
// Like a pooled connection, it keeps the connection open after the
// response, until the peer closes it or sends GOAWAY, because some cases
// send a frame after the response and wait for the client's reaction
// (a PING to be answered, say). Then it shuts down, which flushes what is
// still queued (a RST_STREAM, say) before it closes.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"spooky/stages/pool/h2"
)

// timeout bounds the whole exchange, lingering included. h2specd gives a
// case 3 seconds from starting the client to the end of the case, and its
// verdict waits up to 2 seconds (-o) for the client's reaction, then
// sends GOAWAY, which ends the client. A client that closed the
// connection sooner of its own accord would pass a case that expects a
// connection error whatever it did.
const timeout = 2500 * time.Millisecond

// shutdownTimeout bounds the flush of what is queued once the client is
// done.
const shutdownTimeout = 500 * time.Millisecond

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: h2specclient URL")
		os.Exit(2)
	}
	if err := get(os.Args[len(os.Args)-1]); err != nil {
		fmt.Fprintln(os.Stderr, "h2specclient:", err)
		os.Exit(1)
	}
}

func get(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return err
	}
	// h2specd ignores the client's SETTINGS and takes a frame of 16 KiB
	// + 1 to be too large (cases 4.2/2 and 4.2/3): advertise the
	// protocol's default rather than the package's 1 MiB.
	c, err := h2.Handshake(ctx, nc, h2.Config{MaxReadFrameSize: 16 << 10})
	if err != nil {
		return err
	}
	defer func() {
		// Linger until the peer is done with the connection.
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for !c.Closed() && ctx.Err() == nil {
			select {
			case <-tick.C:
			case <-ctx.Done():
			}
		}
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		if c.Shutdown(sctx) != nil {
			c.Close()
		}
	}()
	if !c.Reserve() {
		return fmt.Errorf("no stream available on the connection")
	}
	resp, err := c.RoundTrip(ctx, &h2.Request{
		Method:        http.MethodGet,
		Scheme:        u.Scheme,
		Authority:     u.Host,
		Path:          u.RequestURI(),
		Header:        http.Header{},
		ContentLength: -1,
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	return nil
}

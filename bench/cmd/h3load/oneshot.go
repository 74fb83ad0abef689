package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"

	"spooky/bench/load"
)

// oneShotRequest is what the flags say about the single request to send.
type oneShotRequest struct {
	url, method    string
	header         http.Header
	data, dataFile string
	tlsConfig      *tls.Config
	proto          string // load.ProtocolH3 or load.ProtocolH2
}

// oneShot sends one request, prints the response, and returns an error only
// if no complete response arrived.
func oneShot(ctx context.Context, o oneShotRequest) error {
	body, size, err := o.body()
	if err != nil {
		return err
	}
	defer body.Close()
	req, err := http.NewRequestWithContext(ctx, o.method, o.url, body)
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header = o.header
	if host := o.header.Get("Host"); host != "" {
		req.Host = host
	}

	// A load.Conn rather than an http3.Transport, which would leave the
	// connection open behind a failed request (a load.H2Conn with -proto
	// h2); and no http.Client, so redirects are shown rather than followed.
	var conn interface {
		http.RoundTripper
		Close() error
	}
	if o.proto == load.ProtocolH2 {
		conn = load.NewH2Conn(o.tlsConfig)
	} else {
		conn = load.NewConn(req.URL.Host, o.tlsConfig)
	}
	defer conn.Close()
	resp, err := conn.RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()

	fmt.Fprintf(os.Stderr, "%s %s\n", resp.Proto, resp.Status)
	printFields(os.Stderr, "", resp.Header)
	fmt.Fprintln(os.Stderr)
	if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
		return fmt.Errorf("reading body: %w", err)
	}
	if len(resp.Trailer) > 0 {
		// The body need not end in a newline; keep the trailers off its last line.
		fmt.Fprintln(os.Stderr)
		printFields(os.Stderr, "trailer ", resp.Trailer)
	}
	return nil
}

// body opens the request body the flags ask for and returns its length, -1
// when unknown.
func (o oneShotRequest) body() (io.ReadCloser, int64, error) {
	switch {
	case o.data != "" && o.dataFile != "":
		return nil, 0, errors.New("-data and -data-file are mutually exclusive")
	case o.dataFile != "":
		f, err := os.Open(o.dataFile)
		if err != nil {
			return nil, 0, err
		}
		info, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, 0, err
		}
		if !info.Mode().IsRegular() {
			return f, -1, nil // a pipe or device: stream it until EOF
		}
		return f, info.Size(), nil
	case o.data != "":
		return io.NopCloser(strings.NewReader(o.data)), int64(len(o.data)), nil
	default:
		return http.NoBody, 0, nil
	}
}

// printFields writes header fields sorted by name, one line per value.
func printFields(w io.Writer, prefix string, h http.Header) {
	for _, name := range slices.Sorted(maps.Keys(h)) {
		for _, v := range h[name] {
			fmt.Fprintf(w, "%s%s: %s\n", prefix, name, v)
		}
	}
}

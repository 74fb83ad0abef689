// Command h3load is the HTTP/3 client of spooky's demos and benchmarks;
// with -proto h2 it speaks HTTP/2 over TLS instead, one TCP connection per
// -c, for spooky's TCP listener and the servers it is compared with.
//
// Without -d it sends one request and shows the response, curl -v style:
// the status line, headers and trailers go to stderr and the body to
// stdout, so the body can be piped. It exits 0 on any HTTP response and 1
// on a transport error.
//
//	h3load -X POST -data hello -H "X-Test: 1" https://127.0.0.1:8443/echo
//
// With -d it runs a closed-loop load test (package spooky/bench/load) and
// prints throughput, latency percentiles, errors and which backends
// answered:
//
//	h3load -d 10s -c 4 -s 16 -pid 1234 https://127.0.0.1:8443/
//	h3load -proto h2 -d 10s -c 4 -s 16 https://127.0.0.1:8443/
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"spooky/bench/load"
)

func main() {
	var (
		method   = flag.String("X", "", "request method (default GET, or POST when a body is given)")
		data     = flag.String("data", "", "request body (one-shot mode)")
		dataFile = flag.String("data-file", "", "file to send as the request body (one-shot mode)")
		insecure = flag.Bool("insecure", true, "skip verifying the server certificate (ignored with -ca)")
		caFile   = flag.String("ca", "", "PEM file of the certificates to verify the server against")

		duration = flag.Duration("d", 0, "load test duration, not counting -warmup (0: send one request)")
		timeout  = flag.Duration("timeout", 0, "one-shot: give up after this long (0: no limit)")
		proto    = flag.String("proto", load.ProtocolH3, `"h3" (HTTP/3 over QUIC) or "h2" (HTTP/2 over TLS over TCP, nothing else accepted by ALPN)`)
		conns    = flag.Int("c", load.DefaultConnections, "load: connections (QUIC, or TCP with -proto h2)")
		streams  = flag.Int("s", load.DefaultStreams, "load: requests in flight per connection")
		warmup   = flag.Duration("warmup", time.Second, "load: time to send load before measuring")
		bodySize = flag.Int("body-size", 0, "load: bytes of request body to send with each request")
		asJSON   = flag.Bool("json", false, "load: print the summary as JSON")
		stall    = flag.Bool("stall", false, "load: read each response's head and never its body, on 64 KiB stream windows (a slow-reader attack); the memory it costs the server is the figure")
	)
	header := http.Header{}
	flag.Func("H", `request header "Name: value" (repeatable)`, func(s string) error {
		name, value, ok := strings.Cut(s, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return errors.New(`want "Name: value"`)
		}
		header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
		return nil
	})
	var pids []int
	flag.Func("pid", "load: comma-separated process IDs whose CPU and memory use to report (Linux)", func(s string) error {
		for f := range strings.SplitSeq(s, ",") {
			pid, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				return err
			}
			pids = append(pids, pid)
		}
		return nil
	})
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: h3load [flags] https://host:port/path\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	target := flag.Arg(0)
	if *duration != 0 && (*data != "" || *dataFile != "") {
		fatal(errors.New("-data and -data-file are for one request; load mode sends -body-size bytes"))
	}
	if *proto != load.ProtocolH3 && *proto != load.ProtocolH2 {
		fatal(fmt.Errorf("-proto %q: want h3 or h2", *proto))
	}
	if *method == "" && (*data != "" || *dataFile != "" || *bodySize > 0) {
		*method = http.MethodPost
	}

	tlsConfig, err := clientTLS(*insecure, *caFile)
	if err != nil {
		fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *duration == 0 {
		if *timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, *timeout)
			defer cancel()
		}
		err = oneShot(ctx, oneShotRequest{
			url: target, method: *method, header: header,
			data: *data, dataFile: *dataFile, tlsConfig: tlsConfig, proto: *proto,
		})
	} else {
		err = loadTest(ctx, load.Options{
			URL: target, Protocol: *proto, Method: *method, Header: header, BodySize: *bodySize,
			Connections: *conns, Streams: *streams, Warmup: *warmup, Duration: *duration,
			TLSConfig: tlsConfig, PIDs: pids, Stall: *stall,
		}, *asJSON)
	}
	if err != nil {
		fatal(err)
	}
}

// clientTLS verifies against caFile when given; otherwise it trusts any
// certificate if insecure, since the bench servers use throwaway ones.
func clientTLS(insecure bool, caFile string) (*tls.Config, error) {
	if caFile == "" {
		return &tls.Config{InsecureSkipVerify: insecure}, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificates", caFile)
	}
	return &tls.Config{RootCAs: roots}, nil
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "h3load:", err)
	os.Exit(1)
}

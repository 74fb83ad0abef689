package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// startGRPC serves grpc-go's health service on loopback, over HTTP/2 with
// prior knowledge as grpc-go serves plain TCP, until the test ends.
func startGRPC(t *testing.T) (addr string, hs *health.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs = health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String(), hs
}

// grpcFrame is a gRPC length-prefixed message (gRPC over HTTP/2, "Length-
// Prefixed-Message"): no compression flag, a 4-byte length, the bytes.
func grpcFrame(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, 5, 5+len(b))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(b)))
	return append(frame, b...)
}

// readGRPCFrame reads one length-prefixed message into m; io.EOF at the
// end of the stream.
func readGRPCFrame(r io.Reader, m proto.Message) error {
	var head [5]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return err
	}
	b := make([]byte, binary.BigEndian.Uint32(head[1:]))
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	return proto.Unmarshal(b, m)
}

// grpcCall sends one gRPC request over HTTP/3 through spooky, as a gRPC
// client does: POST, application/grpc, te: trailers, an optional deadline.
func grpcCall(t *testing.T, c *http.Client, url, method string, msg proto.Message, timeout time.Duration) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+method, bytes.NewReader(grpcFrame(t, msg)))
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	if timeout > 0 {
		req.Header.Set("Grpc-Timeout", strconv.FormatInt(timeout.Milliseconds(), 10)+"m")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	return resp
}

// TestGRPCThroughSpookyOverHTTP3: grpc-go's server behind spooky answers an
// HTTP/3 client speaking gRPC's framing: a unary call, a server-streaming
// call whose messages arrive as the server sends them, grpc-status in the
// trailers, and a deadline (grpc-timeout) that reaches the server.
func TestGRPCThroughSpookyOverHTTP3(t *testing.T) {
	addr, hs := startGRPC(t)
	hs.SetServingStatus("app", healthpb.HealthCheckResponse_SERVING)
	url, _ := startSpooky(t, spookyConfig(allRoute, map[string][]string{"app": {addr}}))
	c := h3Client(t)

	// Unary.
	resp := grpcCall(t, c, url, "/grpc.health.v1.Health/Check", &healthpb.HealthCheckRequest{Service: "app"}, 0)
	var got healthpb.HealthCheckResponse
	if err := readGRPCFrame(resp.Body, &got); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got.Status != healthpb.HealthCheckResponse_SERVING || resp.Trailer.Get("Grpc-Status") != "0" {
		t.Fatalf("Check: %v, grpc-status %q", got.Status, resp.Trailer.Get("Grpc-Status"))
	}

	// An error status comes in the trailers (or a trailers-only answer).
	resp = grpcCall(t, c, url, "/grpc.health.v1.Health/Check", &healthpb.HealthCheckRequest{Service: "unknown"}, 0)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	status := resp.Trailer.Get("Grpc-Status")
	if status == "" {
		status = resp.Header.Get("Grpc-Status")
	}
	if status != strconv.Itoa(int(codes.NotFound)) {
		t.Fatalf("Check of an unknown service: grpc-status %q, want %d", status, codes.NotFound)
	}

	// Server streaming: Watch sends the status now and on every change.
	resp = grpcCall(t, c, url, "/grpc.health.v1.Health/Watch", &healthpb.HealthCheckRequest{Service: "app"}, 0)
	defer resp.Body.Close()
	if err := readGRPCFrame(resp.Body, &got); err != nil || got.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch, first message: %v, %v", got.Status, err)
	}
	hs.SetServingStatus("app", healthpb.HealthCheckResponse_NOT_SERVING)
	if err := readGRPCFrame(resp.Body, &got); err != nil || got.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch, after the change: %v, %v", got.Status, err)
	}

	// A deadline reaches the server: a Watch, which otherwise runs for as
	// long as the client stays, ends when its 200ms are up (the client
	// itself would wait 20 s). grpc-go's server ends it with CANCELLED in
	// the trailers, or, when its deadline timer wins the race, with
	// RST_STREAM CANCEL, which spooky passes on as a reset.
	resp = grpcCall(t, c, url, "/grpc.health.v1.Health/Watch", &healthpb.HealthCheckRequest{Service: "app"}, 200*time.Millisecond)
	var err error
	for err == nil {
		err = readGRPCFrame(resp.Body, &got)
	}
	resp.Body.Close()
	if errors.Is(err, io.EOF) {
		if s := resp.Trailer.Get("Grpc-Status"); s != strconv.Itoa(int(codes.Canceled)) {
			t.Fatalf("Watch with a deadline: grpc-status %q, want %d from the server's ended context", s, codes.Canceled)
		}
	} else if !isStreamReset(err) {
		t.Fatalf("Watch with a deadline ended with %v; want its end from the server", err)
	}
}

// isStreamReset reports whether err is an HTTP/3 stream reset.
func isStreamReset(err error) bool {
	var streamErr *quic.StreamError
	var h3Err *http3.Error
	return errors.As(err, &streamErr) || errors.As(err, &h3Err)
}

// TestGRPCThroughSpookyOverTCP: grpc-go's own client, over spooky's TCP
// listener (HTTP/2 over TLS), calls grpc-go's server behind spooky: unary,
// server streaming, and a deadline that ends the call at the server.
func TestGRPCThroughSpookyOverTCP(t *testing.T) {
	addr, hs := startGRPC(t)
	hs.SetServingStatus("app", healthpb.HealthCheckResponse_SERVING)
	url, _ := startSpooky(t, spookyConfig(allRoute, map[string][]string{"app": {addr}}))
	cc, err := grpc.NewClient(strings.TrimPrefix(url, "https://"),
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	got, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "app"})
	if err != nil || got.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Check: %v, %v", got, err)
	}
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "unknown"}); status.Code(err) != codes.NotFound {
		t.Fatalf("Check of an unknown service: %v; want NotFound", err)
	}

	watch, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "app"})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := watch.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch, first message: %v, %v", m, err)
	}
	hs.SetServingStatus("app", healthpb.HealthCheckResponse_NOT_SERVING)
	if m, err := watch.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch, after the change: %v, %v", m, err)
	}

	short, stop := context.WithTimeout(ctx, 200*time.Millisecond)
	defer stop()
	watch, err = client.Watch(short, &healthpb.HealthCheckRequest{Service: "app"})
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = watch.Recv()
	}
	if c := status.Code(err); c != codes.DeadlineExceeded && c != codes.Canceled {
		t.Fatalf("Watch past its deadline ended with %v; want DeadlineExceeded or Canceled", err)
	}
}

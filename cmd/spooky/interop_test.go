package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestNgtcp2ClientInterop sends requests through spooky with an HTTP/3
// client that shares no code with quic-go: ngtcp2/nghttp3's example client
// from Debian's ngtcp2-client, which .ci/run installs.
func TestNgtcp2ClientInterop(t *testing.T) {
	bin, err := exec.LookPath("gtlsclient")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("gtlsclient is not installed; .ci/run should have installed ngtcp2-client")
		}
		t.Skip("gtlsclient is not installed (apt-get install ngtcp2-client)")
	}
	b := startBackend(t, "b1")
	url, _ := startSpooky(t, spookyConfig(allRoute, map[string][]string{"app": {b.addr}}))
	host, port, _ := strings.Cut(strings.TrimPrefix(url, "https://"), ":")
	for _, tc := range []struct {
		path string
		want []string
	}{
		{"/", []string{"[:status: 200]", "[x-backend: b1]", "body 14 bytes"}},
		{"/status/503", []string{"[:status: 503]"}},
		{"/trailers", []string{"[:status: 200]", "[grpc-status: 0]"}},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, bin, "--exit-on-all-streams-close", host, port, url+tc.path).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("%s: %v\n%s", tc.path, err, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(string(out), w) {
				t.Errorf("%s: output lacks %q", tc.path, w)
			}
		}
	}
}

package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// independentTool finds name, a program from Debian's package pkg that the
// interop tests run against spooky, and returns its path. .ci/run installs
// the package, so in CI a missing tool fails the test; on a developer
// machine it can only be skipped.
func independentTool(t *testing.T, name, pkg string) string {
	t.Helper()
	if bin, err := exec.LookPath(name); err == nil {
		return bin
	}
	// Debian puts daemons in /usr/sbin, which a user's PATH may lack.
	if bin := "/usr/sbin/" + name; fileExists(bin) {
		return bin
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed; .ci/run should have installed %s", name, pkg)
	}
	t.Skipf("%s is not installed (apt-get install %s)", name, pkg)
	return ""
}

func fileExists(name string) bool {
	_, err := os.Stat(name)
	return err == nil
}

// TestNgtcp2ClientInterop sends requests through spooky with an HTTP/3
// client that shares no code with quic-go: ngtcp2/nghttp3's example client
// from Debian's ngtcp2-client, which .ci/run installs.
func TestNgtcp2ClientInterop(t *testing.T) {
	bin := independentTool(t, "gtlsclient", "ngtcp2-client")
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

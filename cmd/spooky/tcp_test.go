package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCurlOverTCP reaches spooky's HTTPS side over TCP with Debian's curl,
// a client that shares no code with Go's: HTTP/2 and HTTP/1.1 (ALPN) each
// get an answer from the backend, a 10 MiB chunked upload comes back byte
// exact from the demo backend's /echo, and every response names the
// configured HTTP/3 port in Alt-Svc.
func TestCurlOverTCP(t *testing.T) {
	bin := independentTool(t, "curl", "curl")
	b := startBackend(t, "b1")
	doc := strings.Replace(spookyConfig(allRoute, map[string][]string{"app": {b.addr}}),
		`listen: { address: "127.0.0.1:0" }`,
		`listen: { address: "127.0.0.1:0", alt_svc: { port: 8443, max_age: 1h } }`, 1)
	_, d := startSpooky(t, doc)
	tcp := d.listener.TCPAddr()
	if tcp == nil {
		t.Fatal("no TCP listener with listen.tcp left at its defaults")
	}
	base := "https://" + tcp.String()

	const size = 10 << 20
	upload := filepath.Join(t.TempDir(), "upload")
	data := make([]byte, size)
	rand.Read(data)
	if err := os.WriteFile(upload, data, 0o600); err != nil {
		t.Fatal(err)
	}
	sent := sha256.Sum256(data)

	curl := func(t *testing.T, stdin string, args ...string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append([]string{"-sS", "-k", "--fail-with-body"}, args...)...)
		if stdin != "" {
			f, err := os.Open(stdin)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			cmd.Stdin = f
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("curl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return out
	}

	for _, p := range []struct{ flag, version string }{{"--http2", "2"}, {"--http1.1", "1.1"}} {
		t.Run(p.flag, func(t *testing.T) {
			out := string(curl(t, "", p.flag, "-w", "\n%{http_version} %{http_code}", base+"/"))
			if want := "hello from b1\n\n" + p.version + " 200"; out != want {
				t.Errorf("GET: %q, want %q", out, want)
			}

			// -T - streams stdin: chunked over HTTP/1.1, no length
			// over HTTP/2.
			echoed := curl(t, upload, p.flag, "-T", "-", "-H", "Content-Type: application/octet-stream", base+"/echo")
			if got := sha256.Sum256(echoed); len(echoed) != size || got != sent {
				t.Errorf("upload: %d bytes back of %d, sha256 %s, want %s", len(echoed), size, hex.EncodeToString(got[:]), hex.EncodeToString(sent[:]))
			}

			head := strings.ToLower(string(curl(t, "", p.flag, "-I", base+"/")))
			if !strings.Contains(head, "alt-svc: h3=\":8443\"; ma=3600\r\n") {
				t.Errorf("no Alt-Svc naming port 8443 in:\n%s", head)
			}
		})
	}
}

package main

import (
	"bytes"
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"spooky/internal/testkit"
)

// TestThroughSpookyToNghttpd uses nghttp2's own server (Debian's
// nghttp2-server) as the upstream: an HTTP/2 implementation that shares no
// code with Go's or nginx's. It is started with small flow-control windows
// (16 KiB per stream, 64 KiB per connection) and at most 4 concurrent
// streams, so that uploads must follow its WINDOW_UPDATEs and a burst of
// requests must spread over more connections.
func TestThroughSpookyToNghttpd(t *testing.T) {
	bin := independentTool(t, "nghttpd", "nghttp2-server")
	root := t.TempDir()
	blob := make([]byte, 3<<20+17)
	rand.Read(blob)
	if err := os.WriteFile(filepath.Join(root, "blob.bin"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "small.txt"), []byte("small\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := testkit.FreeAddr(t, "tcp")
	_, port, _ := strings.Cut(addr, ":")
	serveUntilCleanup(t, exec.Command(bin, "--no-tls", "-a", "127.0.0.1", "-d", root, "--echo-upload",
		"--window-bits=14", "--connection-window-bits=16", "--max-concurrent-streams=4", port), addr)
	url, _ := startSpooky(t, spookyConfig(allRoute, map[string][]string{"app": {addr}}))
	c := h3Client(t)

	resp, body := get(t, c, url+"/blob.bin")
	if resp.StatusCode != 200 || !bytes.Equal([]byte(body), blob) {
		t.Fatalf("blob: status %d, %d bytes of %d", resp.StatusCode, len(body), len(blob))
	}
	if resp, _ := get(t, c, url+"/missing"); resp.StatusCode != 404 {
		t.Fatalf("nghttpd's 404 came back as %d", resp.StatusCode)
	}

	upload := blob[:1<<20+5]
	resp, err := c.Post(url+"/small.txt", "application/octet-stream", bytes.NewReader(upload))
	if err != nil {
		t.Fatal(err)
	}
	echoed, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(echoed, upload) {
		t.Fatalf("upload echo: status %d, %d bytes of %d, %v", resp.StatusCode, len(echoed), len(upload), err)
	}

	// Twenty at once against a limit of four streams per connection.
	var wg sync.WaitGroup
	errs := make(chan string, 20)
	for range 20 {
		wg.Go(func() {
			resp, err := c.Get(url + "/small.txt")
			if err != nil {
				errs <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "small\n" {
				errs <- resp.Status + " " + string(b)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

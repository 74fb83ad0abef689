package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"spooky/internal/testkit"
)

// startNginx runs Debian's nginx as an independent h2c upstream (HTTP/2
// with prior knowledge on a cleartext port) serving root, passing /upload
// on to the HTTP/1 server at uploads, and returns its address.
func startNginx(t *testing.T, root, uploads string) string {
	t.Helper()
	bin := independentTool(t, "nginx", "nginx-light")
	dir := t.TempDir()
	addr := testkit.FreeAddr(t, "tcp")
	conf := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    server {
        listen %[2]s http2;
        root %[3]s;
        location = /hello {
            add_header X-Backend nginx;
            return 200 "hello from nginx\n";
        }
        location = /upload {
            client_max_body_size 64m;
            proxy_pass http://%[4]s;
        }
    }
}
`, dir, addr, root, uploads)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	serveUntilCleanup(t, exec.Command(bin, "-p", dir, "-c", confPath), addr)
	return addr
}

// serveUntilCleanup starts cmd, a server that listens on addr, waits until
// it accepts connections, and kills it when the test ends.
func serveUntilCleanup(t *testing.T, cmd *exec.Cmd, addr string) {
	t.Helper()
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	if !testkit.Eventually(func() bool { return tcpOpen(addr) }) {
		t.Fatalf("%s did not start:\n%s", filepath.Base(cmd.Path), &out)
	}
}

func TestThroughSpookyToNginx(t *testing.T) {
	root := t.TempDir()
	blob := make([]byte, 3<<20+17)
	rand.Read(blob)
	if err := os.WriteFile(filepath.Join(root, "blob.bin"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	uploads := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
	}))
	t.Cleanup(uploads.Close)
	addr := startNginx(t, root, uploads.Listener.Addr().String())
	url, _ := startSpooky(t, spookyConfig(allRoute, map[string][]string{"app": {addr}}))
	c := h3Client(t)

	resp, body := get(t, c, url+"/hello")
	if resp.StatusCode != 200 || body != "hello from nginx\n" || resp.Header.Get("X-Backend") != "nginx" {
		t.Fatalf("got %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp, body = get(t, c, url+"/blob.bin")
	if resp.StatusCode != 200 || !bytes.Equal([]byte(body), blob) {
		t.Fatalf("blob: status %d, %d bytes of %d, equal %v", resp.StatusCode, len(body), len(blob), bytes.Equal([]byte(body), blob))
	}
	resp, _ = get(t, c, url+"/missing")
	if resp.StatusCode != 404 {
		t.Fatalf("nginx's 404 came back as %d", resp.StatusCode)
	}
	// nginx reads a request body through its own HTTP/2 flow control
	// (a small initial window, then WINDOW_UPDATEs as it buffers), which
	// spooky's body sender must follow to the byte.
	for _, size := range []int{0, 1, 70 << 10, len(blob)} {
		resp, err := c.Post(url+"/upload", "application/octet-stream", bytes.NewReader(blob[:size]))
		if err != nil {
			t.Fatalf("upload of %d bytes: %v", size, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("%d %x", size, sha256.Sum256(blob[:size])); resp.StatusCode != 200 || string(got) != want {
			t.Fatalf("upload of %d bytes: %d %q, want %q", size, resp.StatusCode, got, want)
		}
	}

	r, err := c.Head(url + "/blob.bin")
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, r.Body)
	r.Body.Close()
	if r.StatusCode != 200 || n != 0 || r.ContentLength != int64(len(blob)) {
		t.Fatalf("HEAD: %d, %d body bytes, Content-Length %d", r.StatusCode, n, r.ContentLength)
	}
}

func tcpOpen(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

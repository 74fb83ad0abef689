package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// startNginx runs Debian's nginx as an independent h2c upstream (HTTP/2
// with prior knowledge on a cleartext port) serving root, and returns its
// address. .ci/run installs nginx; without it the test can only be skipped
// on a developer machine, never in CI.
func startNginx(t *testing.T, root string) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		bin = "/usr/sbin/nginx"
		if _, serr := os.Stat(bin); serr != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("nginx is not installed; .ci/run should have installed it")
			}
			t.Skip("nginx is not installed (apt-get install nginx-light)")
		}
	}
	dir := t.TempDir()
	addr := freePort(t, "tcp")
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
    }
}
`, dir, addr, root)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", confPath)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	deadline := time.Now().Add(5 * time.Second)
	for !tcpOpen(addr) {
		if time.Now().After(deadline) {
			t.Fatalf("nginx did not start:\n%s", &out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return addr
}

func TestThroughSpookyToNginx(t *testing.T) {
	root := t.TempDir()
	blob := make([]byte, 3<<20+17)
	rand.Read(blob)
	if err := os.WriteFile(filepath.Join(root, "blob.bin"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	addr := startNginx(t, root)
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

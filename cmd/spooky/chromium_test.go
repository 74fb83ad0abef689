package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"html"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"spooky/bench/backend"
	"spooky/internal/testkit"
)

// TestChromiumOverTCPAndHTTP3 loads the demo backend's /headers through
// spooky with Debian's headless Chromium, a browser that shares no code
// with Go's, trusting spooky's self-signed certificate by its public key:
// first over TCP, where Chromium records and then finds the Alt-Svc spooky
// sends, then over HTTP/3 with QUIC forced for the origin. The Via the
// backend received tells which protocol reached spooky; Chromium's net log
// tells what Chromium did.
func TestChromiumOverTCPAndHTTP3(t *testing.T) {
	bin := independentTool(t, "chromium", "chromium")
	cert, key := testkit.SelfSigned(t, "localhost", false)
	b := startBackend(t, "b1")
	doc := strings.Replace(spookyConfig(allRoute, map[string][]string{"app": {b.addr}}),
		`listen: { address: "127.0.0.1:0" }`,
		fmt.Sprintf(`listen: { address: "127.0.0.1:0", tls: { cert: %q, key: %q } }`, cert, key), 1)
	_, d := startSpooky(t, doc)
	tcp := d.listener.TCPAddr()
	if tcp == nil {
		t.Fatal("no TCP listener with listen.tcp left at its defaults")
	}
	origin, port := tcp.String(), tcp.(*net.TCPAddr).Port
	spki := "--ignore-certificate-errors-spki-list=" + spkiHash(t, cert)

	// Over TCP, twice with one profile: the first visit records spooky's
	// Alt-Svc, which the second finds before it sends its request. Both
	// pages still come over TCP: Chromium tries the alternative service
	// (for /favicon.ico on the first visit, beside the request on the
	// second), but its QUIC handshake fails certificate verification, as
	// Chromium takes QUIC to an alternative service only with a
	// certificate from a publicly trusted root.
	t.Run("TCP", func(t *testing.T) {
		profile := t.TempDir()
		got, log := chromium(t, bin, profile, "https://"+origin+"/headers", spki)
		if via := got.Header.Get("Via"); via != "2 spooky" {
			t.Errorf("first visit: the backend saw Via %q, want %q (HTTP/2 over TCP)", via, "2 spooky")
		}
		if log.count("HTTP2_SESSION_SEND_HEADERS") == 0 {
			t.Error("first visit: no HTTP2_SESSION_SEND_HEADERS in Chromium's net log")
		}
		// Chromium writes what it learnt of the server, Alt-Svc
		// included, to the profile as it shuts down.
		want := fmt.Sprintf("quic:%d/h3", port)
		if alt := log.altSvc(t, "https://"+origin); !slices.Contains(alt, want) {
			t.Errorf("first visit: Chromium recorded alternative services %q for https://%s, want %q", alt, origin, want)
		}

		got, log = chromium(t, bin, profile, "https://"+origin+"/headers", spki)
		if via := got.Header.Get("Via"); via != "2 spooky" {
			t.Errorf("second visit: the backend saw Via %q, want %q (HTTP/2 over TCP)", via, "2 spooky")
		}
		found := log.params(t, "HTTP_STREAM_JOB_CONTROLLER_ALT_SVC_FOUND", "alt_svc")
		prefix := fmt.Sprintf("quic 127.0.0.1:%d,", port)
		if !slices.ContainsFunc(found, func(s string) bool { return strings.HasPrefix(s, prefix) }) {
			t.Errorf("second visit: Chromium found alternative services %q, want one starting %q", found, prefix)
		}
	})

	// Over HTTP/3 from the first request: with QUIC forced for the
	// origin, the certificate allowed by its public key is enough.
	t.Run("HTTP3", func(t *testing.T) {
		got, log := chromium(t, bin, t.TempDir(), "https://"+origin+"/headers", spki,
			"--enable-quic", "--origin-to-force-quic-on="+origin)
		if via := got.Header.Get("Via"); via != "3 spooky" {
			t.Errorf("the backend saw Via %q, want %q (HTTP/3)", via, "3 spooky")
		}
		for _, e := range []string{"QUIC_SESSION_CRYPTO_HANDSHAKE_COMPLETE", "HTTP3_HEADERS_SENT", "HTTP3_HEADERS_DECODED"} {
			if log.count(e) == 0 {
				t.Errorf("no %s in Chromium's net log", e)
			}
		}
		if n := log.count("HTTP2_SESSION"); n != 0 {
			t.Errorf("%d HTTP2_SESSION events in Chromium's net log, want none with QUIC forced", n)
		}
	})
}

// spkiHash is the base64 SHA-256 of the public key of the PEM certificate
// in file, as Chromium's --ignore-certificate-errors-spki-list takes it.
func spkiHash(t *testing.T, file string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("no PEM block in %s", file)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// netLog is Chromium's net log, each event named by its type.
type netLog []netLogEvent

type netLogEvent struct {
	Type   string
	Params json.RawMessage
}

// count is how many events of type event the log holds.
func (l netLog) count(event string) int {
	n := 0
	for _, e := range l {
		if e.Type == event {
			n++
		}
	}
	return n
}

// params is the string parameter named param of every event of type
// event, in order.
func (l netLog) params(t *testing.T, event, param string) []string {
	t.Helper()
	var found []string
	for _, e := range l {
		if e.Type != event {
			continue
		}
		var p map[string]any
		if err := json.Unmarshal(e.Params, &p); err != nil {
			t.Fatalf("%s: %v", e.Type, err)
		}
		if s, ok := p[param].(string); ok {
			found = append(found, s)
		}
	}
	return found
}

// altSvc is the alternative services Chromium last recorded for server
// (scheme://host:port) in its HTTP server properties, as
// "protocol:port/alpn,alpn" strings.
func (l netLog) altSvc(t *testing.T, server string) []string {
	t.Helper()
	var found []string
	for _, e := range l {
		if e.Type != "HTTP_SERVER_PROPERTIES_UPDATE_PREFS" {
			continue
		}
		var p struct {
			Servers []struct {
				Server      string `json:"server"`
				Alternative []struct {
					Protocol string   `json:"protocol_str"`
					Port     int      `json:"port"`
					ALPNs    []string `json:"advertised_alpns"`
				} `json:"alternative_service"`
			} `json:"servers"`
		}
		if err := json.Unmarshal(e.Params, &p); err != nil {
			t.Fatalf("%s: %v", e.Type, err)
		}
		found = found[:0]
		for _, s := range p.Servers {
			if s.Server != server {
				continue
			}
			for _, a := range s.Alternative {
				found = append(found, fmt.Sprintf("%s:%d/%s", a.Protocol, a.Port, strings.Join(a.ALPNs, ",")))
			}
		}
	}
	return found
}

// chromium loads url in headless Chromium with the profile in directory
// profile (a new one when it is empty) and extra flags added, and returns the /headers JSON it shows and its net
// log. Chromium runs in its own process group, killed whole when it is
// done or after a minute.
func chromium(t *testing.T, bin, profile, url string, extra ...string) (backend.Received, netLog) {
	t.Helper()
	dir := t.TempDir()
	logFile := filepath.Join(dir, "netlog.json")
	args := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + profile,
		"--log-net-log=" + logFile,
	}, extra...)
	args = append(args, "--dump-dom", url)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Start()
	if err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	// Its helpers (zygote, network service) may outlive the browser.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if err != nil {
		t.Fatalf("chromium: %v (%v)\n%s", err, ctx.Err(), &stderr)
	}

	dom := stdout.String()
	var got backend.Received
	i, j := strings.Index(dom, "{"), strings.LastIndex(dom, "}")
	if i < 0 || j < i {
		t.Fatalf("no JSON in the page Chromium loaded:\n%s\n%s", dom, &stderr)
	}
	if err := json.Unmarshal([]byte(html.UnescapeString(dom[i:j+1])), &got); err != nil {
		t.Fatalf("the page Chromium loaded: %v\n%s", err, dom)
	}
	return got, readNetLog(t, logFile)
}

// readNetLog reads the net log Chromium wrote to file, naming its events'
// types from the log's own constants.
func readNetLog(t *testing.T, file string) netLog {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Constants struct {
			LogEventTypes map[string]int `json:"logEventTypes"`
		} `json:"constants"`
		Events []struct {
			Type   int             `json:"type"`
			Params json.RawMessage `json:"params"`
		} `json:"events"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatalf("Chromium's net log: %v", err)
	}
	names := make(map[int]string, len(raw.Constants.LogEventTypes))
	for name, n := range raw.Constants.LogEventTypes {
		names[n] = name
	}
	l := make(netLog, 0, len(raw.Events))
	for _, e := range raw.Events {
		l = append(l, netLogEvent{Type: names[e.Type], Params: e.Params})
	}
	return l
}

package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// installTimeout bounds each apt-get the bench runs to install Caddy.
const installTimeout = 5 * time.Minute

// caddyFinder finds the caddy binary, installing Debian's caddy package
// when it is missing and the bench runs as root. Its fields are the
// outside world, so that a test can stand in for it.
type caddyFinder struct {
	lookPath func(string) (string, error)
	euid     int
	// run runs a command to its end and returns its combined output.
	run func(ctx context.Context, name string, args ...string) ([]byte, error)
}

// systemCaddyFinder is the finder on this machine.
func systemCaddyFinder() caddyFinder {
	return caddyFinder{
		lookPath: exec.LookPath,
		euid:     os.Geteuid(),
		run: func(ctx context.Context, name string, args ...string) ([]byte, error) {
			ctx, cancel := context.WithTimeout(ctx, installTimeout)
			defer cancel()
			cmd := exec.CommandContext(ctx, name, args...)
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			cmd.SysProcAttr = childSysProcAttr()
			// Interrupted, apt-get gets to release its locks before it is
			// killed.
			cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
			cmd.WaitDelay = 30 * time.Second
			return cmd.CombinedOutput()
		},
	}
}

// find returns the path of name ("caddy", or a path given with -caddy).
// If the plain name is not on PATH and the bench runs as root, it installs
// Debian's caddy package with apt-get, saying so on out, and updates the
// package lists and tries once more if the first install fails. The error
// says why there is no Caddy to run.
func (f caddyFinder) find(ctx context.Context, name string, out io.Writer) (string, error) {
	path, err := f.lookPath(name)
	if err == nil {
		return path, nil
	}
	if name != "caddy" {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	if f.euid != 0 {
		return "", errors.New("caddy is not installed, and the bench is not running as root to apt-get install it")
	}
	if _, err := f.lookPath("apt-get"); err != nil {
		return "", errors.New("caddy is not installed, and there is no apt-get to install it with")
	}
	fmt.Fprintln(out, "caddy is not installed: installing Debian's caddy package (apt-get install -y caddy)")
	msg, err := f.run(ctx, "apt-get", "install", "-y", "caddy")
	if err != nil && ctx.Err() == nil {
		fmt.Fprintf(out, "apt-get install -y caddy failed (%v); updating the package lists (apt-get update) and trying once more\n", err)
		if msg, err = f.run(ctx, "apt-get", "update"); err == nil {
			msg, err = f.run(ctx, "apt-get", "install", "-y", "caddy")
		}
	}
	if err != nil {
		return "", fmt.Errorf("installing caddy: %v: %s", err, lastLines(msg, 5))
	}
	if path, err = f.lookPath(name); err != nil {
		return "", fmt.Errorf("apt-get installed caddy, but it is not on PATH: %w", err)
	}
	fmt.Fprintf(out, "installed %s\n", path)
	return path, nil
}

// caddyVersion returns the first line of `caddy version`.
func caddyVersion(ctx context.Context, path string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "version").Output()
	if err != nil {
		return "", fmt.Errorf("%s version: %w", path, err)
	}
	version, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if version == "" {
		return "", fmt.Errorf("%s version printed nothing", path)
	}
	return version, nil
}

// lastLines returns the last n lines of b, joined by " / ", to quote a
// failed command in one line.
func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " / ")
}

// caddyConfig is what the bench's Caddy runs on: the same shape of proxy
// as spooky's bench config, so that the two do the same work.
type caddyConfig struct {
	// listen is the loopback host:port of both its TLS listener (TCP) and
	// its HTTP/3 one (UDP); the load generator only ever uses the latter.
	listen string
	// upstream is the backend's h2c host:port.
	upstream string
	// certFile and keyFile are the PEM certificate and key it serves.
	certFile, keyFile string
	// dataDir holds what Caddy stores of its own (locks, certificates it
	// would manage); nothing outside the bench's temporary directory.
	dataDir string
}

// json renders the config: one HTTPS server with HTTP/3 on, serving the
// given certificate to every client (default_sni, since a client that
// dials an IP address sends no server name), proxying everything to the
// backend over h2c (prior-knowledge HTTP/2 in clear). Automatic HTTPS is
// off, so there is no certificate management and no HTTP→HTTPS redirect
// listener on :80; the admin API is off; no access log is configured;
// Caddy's own log is at WARN. On SIGTERM Caddy lets requests run for 2s.
func (c caddyConfig) json() []byte {
	type obj = map[string]any
	cfg := obj{
		"admin":   obj{"disabled": true, "config": obj{"persist": false}},
		"logging": obj{"logs": obj{"default": obj{"level": "WARN"}}},
		"storage": obj{"module": "file_system", "root": c.dataDir},
		"apps": obj{
			"tls": obj{"certificates": obj{"load_files": []obj{{"certificate": c.certFile, "key": c.keyFile}}}},
			"http": obj{
				"grace_period": "2s",
				"servers": obj{"bench": obj{
					"listen":                  []string{c.listen},
					"protocols":               []string{"h1", "h2", "h3"},
					"automatic_https":         obj{"disable": true},
					"tls_connection_policies": []obj{{"default_sni": "localhost"}},
					"routes": []obj{{"handle": []obj{{
						"handler":   "reverse_proxy",
						"upstreams": []obj{{"dial": c.upstream}},
						"transport": obj{"protocol": "http", "versions": []string{"h2c"}},
					}}}},
				}},
			},
		},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		panic(err) // maps of strings and slices always marshal
	}
	return append(b, '\n')
}

// caddyEnv is environ with HOME and the XDG directories moved into dir,
// so that Caddy writes nothing of its own outside the bench's temporary
// directory.
func caddyEnv(environ []string, dir string) []string {
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME":
		default:
			out = append(out, kv)
		}
	}
	return append(out, "HOME="+dir, "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "XDG_DATA_HOME="+filepath.Join(dir, "data"))
}

// writeCertPEM writes cert's chain and private key as PEM files, for a
// server that reads its certificate from files.
func writeCertPEM(cert tls.Certificate, certFile, keyFile string) error {
	var chain bytes.Buffer
	for _, der := range cert.Certificate {
		if err := pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: der}); err != nil {
			return err
		}
	}
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(certFile, chain.Bytes(), 0o644); err != nil {
		return err
	}
	return os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600)
}

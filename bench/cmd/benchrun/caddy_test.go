package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"spooky/certs"
)

// fakeSystem stands in for PATH and apt-get: installed lists what is on
// PATH, and each apt-get command line in fails fails, installing caddy
// when "apt-get install -y caddy" succeeds.
type fakeSystem struct {
	installed map[string]bool
	fails     map[string]bool
	ran       []string
}

func (f *fakeSystem) finder(euid int) caddyFinder {
	return caddyFinder{
		lookPath: func(name string) (string, error) {
			if f.installed[name] {
				return "/usr/bin/" + name, nil
			}
			return "", exec.ErrNotFound
		},
		euid: euid,
		run: func(_ context.Context, name string, args ...string) ([]byte, error) {
			line := strings.Join(append([]string{name}, args...), " ")
			f.ran = append(f.ran, line)
			if f.fails[line] {
				return []byte("Reading package lists...\nE: Unable to locate package caddy\n"), errors.New("exit status 100")
			}
			if line == "apt-get install -y caddy" {
				f.installed["caddy"] = true
			}
			return []byte("Setting up caddy (2.6.2-5) ...\n"), nil
		},
	}
}

func TestCaddyFinder(t *testing.T) {
	install, update := "apt-get install -y caddy", "apt-get update"
	tests := []struct {
		name      string
		caddy     string // what -caddy says
		euid      int
		installed []string
		fails     []string
		wantPath  string
		wantErr   string
		wantRan   []string
		wantSaid  []string
	}{
		{name: "on PATH", caddy: "caddy", installed: []string{"caddy", "apt-get"}, wantPath: "/usr/bin/caddy"},
		{name: "a given path is never installed", caddy: "/opt/caddy", installed: []string{"apt-get"},
			wantErr: "/opt/caddy: executable file not found"},
		{name: "not root", caddy: "caddy", euid: 1000, installed: []string{"apt-get"},
			wantErr: "not running as root"},
		{name: "no apt-get", caddy: "caddy", wantErr: "no apt-get"},
		{name: "installed", caddy: "caddy", installed: []string{"apt-get"}, wantPath: "/usr/bin/caddy",
			wantRan:  []string{install},
			wantSaid: []string{"installing Debian's caddy package (apt-get install -y caddy)", "installed /usr/bin/caddy"}},
		{name: "install fails after updating the lists too", caddy: "caddy", installed: []string{"apt-get"}, fails: []string{install},
			// The second install fails too in this fake, since the same
			// command line fails every time: see the next case for success.
			wantErr:  "installing caddy: exit status 100: Reading package lists... / E: Unable to locate package caddy",
			wantRan:  []string{install, update, install},
			wantSaid: []string{"apt-get install -y caddy failed (exit status 100); updating the package lists (apt-get update) and trying once more"}},
		{name: "update fails", caddy: "caddy", installed: []string{"apt-get"}, fails: []string{install, update},
			wantErr: "installing caddy: exit status 100", wantRan: []string{install, update}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sys := &fakeSystem{installed: map[string]bool{}, fails: map[string]bool{}}
			for _, n := range tt.installed {
				sys.installed[n] = true
			}
			for _, c := range tt.fails {
				sys.fails[c] = true
			}
			var out bytes.Buffer
			path, err := sys.finder(tt.euid).find(t.Context(), tt.caddy, &out)
			if path != tt.wantPath {
				t.Errorf("path = %q, want %q", path, tt.wantPath)
			}
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("err = %v, want one saying %q", err, tt.wantErr)
			}
			if !slices.Equal(sys.ran, tt.wantRan) {
				t.Errorf("ran %q, want %q", sys.ran, tt.wantRan)
			}
			for _, said := range tt.wantSaid {
				if !strings.Contains(out.String(), said) {
					t.Errorf("output lacks %q:\n%s", said, out.String())
				}
			}
		})
	}
}

func TestCaddyFinderInstallsOnSecondTry(t *testing.T) {
	sys := &fakeSystem{installed: map[string]bool{"apt-get": true}, fails: map[string]bool{}}
	f := sys.finder(0)
	tries := 0
	run := f.run
	f.run = func(ctx context.Context, name string, args ...string) ([]byte, error) {
		if strings.Join(args, " ") == "install -y caddy" {
			if tries++; tries == 1 {
				return []byte("E: Unable to locate package caddy"), errors.New("exit status 100")
			}
		}
		return run(ctx, name, args...)
	}
	path, err := f.find(t.Context(), "caddy", &bytes.Buffer{})
	if err != nil || path != "/usr/bin/caddy" {
		t.Errorf("find = %q, %v; want /usr/bin/caddy", path, err)
	}
	if want := []string{"apt-get update", "apt-get install -y caddy"}; !slices.Equal(sys.ran, want) {
		t.Errorf("ran %q after the failed install, want %q", sys.ran, want)
	}
}

func testCaddyConfig(dir string) caddyConfig {
	return caddyConfig{listen: "127.0.0.1:4443", upstream: "127.0.0.1:9001",
		certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem"), dataDir: filepath.Join(dir, "data")}
}

// TestCaddyConfigJSON checks the parts of Caddy's config that decide what
// is measured.
func TestCaddyConfigJSON(t *testing.T) {
	c := testCaddyConfig("/tmp/b")
	var cfg struct {
		Admin struct {
			Disabled bool `json:"disabled"`
		} `json:"admin"`
		Apps struct {
			TLS struct {
				Certificates struct {
					LoadFiles []struct {
						Certificate, Key string
					} `json:"load_files"`
				} `json:"certificates"`
			} `json:"tls"`
			HTTP struct {
				Servers map[string]struct {
					Listen         []string `json:"listen"`
					Protocols      []string `json:"protocols"`
					AutomaticHTTPS struct {
						Disable bool `json:"disable"`
					} `json:"automatic_https"`
					Logs   any `json:"logs"`
					Routes []struct {
						Handle []struct {
							Handler   string `json:"handler"`
							Upstreams []struct {
								Dial string `json:"dial"`
							} `json:"upstreams"`
							Transport struct {
								Protocol string   `json:"protocol"`
								Versions []string `json:"versions"`
							} `json:"transport"`
						} `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(c.json(), &cfg); err != nil {
		t.Fatalf("%v\n%s", err, c.json())
	}
	if !cfg.Admin.Disabled {
		t.Error("admin API on")
	}
	files := cfg.Apps.TLS.Certificates.LoadFiles
	if len(files) != 1 || files[0].Certificate != c.certFile || files[0].Key != c.keyFile {
		t.Errorf("certificates = %+v", files)
	}
	srv, ok := cfg.Apps.HTTP.Servers["bench"]
	if !ok || len(cfg.Apps.HTTP.Servers) != 1 {
		t.Fatalf("servers = %+v, want bench only", cfg.Apps.HTTP.Servers)
	}
	if !slices.Equal(srv.Listen, []string{c.listen}) || !slices.Contains(srv.Protocols, "h3") ||
		!srv.AutomaticHTTPS.Disable || srv.Logs != nil {
		t.Errorf("server: listen %v, protocols %v, automatic HTTPS disabled %v, access logs %v",
			srv.Listen, srv.Protocols, srv.AutomaticHTTPS.Disable, srv.Logs)
	}
	if len(srv.Routes) != 1 || len(srv.Routes[0].Handle) != 1 {
		t.Fatalf("routes = %+v", srv.Routes)
	}
	h := srv.Routes[0].Handle[0]
	if h.Handler != "reverse_proxy" || len(h.Upstreams) != 1 || h.Upstreams[0].Dial != c.upstream ||
		h.Transport.Protocol != "http" || !slices.Equal(h.Transport.Versions, []string{"h2c"}) {
		t.Errorf("handler = %+v", h)
	}
}

// TestCaddyValidates has the installed Caddy, if any, load the config the
// bench writes, certificate included.
func TestCaddyValidates(t *testing.T) {
	bin, err := exec.LookPath("caddy")
	if err != nil {
		t.Skip("caddy is not installed (benchrun installs it when run as root)")
	}
	dir := t.TempDir()
	c := testCaddyConfig(dir)
	cert, err := certs.Dev()
	if err != nil {
		t.Fatal(err)
	}
	if err := writeCertPEM(cert, c.certFile, c.keyFile); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "caddy.json")
	if err := os.WriteFile(path, c.json(), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "validate", "--config", path)
	cmd.Env = caddyEnv(os.Environ(), dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("caddy validate: %v\n%s", err, out)
	}
}

func TestWriteCertPEM(t *testing.T) {
	cert, err := certs.Dev()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := writeCertPEM(cert, certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	back, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.Certificate[0], cert.Certificate[0]) {
		t.Error("the certificate read back differs")
	}
	if info, err := os.Stat(keyFile); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, %v; want 0600", info.Mode(), err)
	}
}

func TestCaddyEnv(t *testing.T) {
	got := caddyEnv([]string{"PATH=/bin", "HOME=/root", "XDG_DATA_HOME=/x", "GOGC=100"}, "/tmp/c")
	want := []string{"PATH=/bin", "GOGC=100", "HOME=/tmp/c", "XDG_CONFIG_HOME=/tmp/c/config", "XDG_DATA_HOME=/tmp/c/data"}
	if !slices.Equal(got, want) {
		t.Errorf("caddyEnv = %q, want %q", got, want)
	}
}

func TestLastLines(t *testing.T) {
	if got := lastLines([]byte("a\nb\nc\nd\n"), 2); got != "c / d" {
		t.Errorf("lastLines = %q, want %q", got, "c / d")
	}
}

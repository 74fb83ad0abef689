package config_test

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"spooky/config"
	"spooky/internal/testkit"
)

// minimal is the smallest valid configuration: everything else defaults.
const minimal = `
routes:
  - upstream: app
upstreams:
  app:
    endpoints:
      - address: 127.0.0.1:9001
`

// writeFile writes body to name in dir and returns its path.
func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func load(t *testing.T, doc string) (*config.Config, error) {
	t.Helper()
	return config.Load(writeFile(t, t.TempDir(), "spooky.yaml", doc))
}

// problems splits the error Load returned into the problems it joins.
func problems(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err == nil {
		return nil
	}
	return []error{err}
}

func TestMinimalConfigGetsDefaults(t *testing.T) {
	c, err := load(t, minimal)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	// Field by field rather than one DeepEqual, so that a field added to
	// the schema does not break this test; give it a line here instead.
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen.address", c.Listen.Address, "127.0.0.1:8443"},
		{"listen.tls", c.Listen.TLS, []config.TLS(nil)},
		{"listen.admission_wait", c.Listen.AdmissionWait, 100 * time.Millisecond},
		{"listen.drain_timeout", c.Listen.DrainTimeout, 15 * time.Second},
		{"listen.write_idle_timeout", c.Listen.WriteIdleTimeout, 30 * time.Second},
		{"listen.tcp", c.Listen.TCP, config.TCP{Enabled: true, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second}},
		{"listen.alt_svc", c.Listen.AltSvc, config.AltSvc{Enabled: true, MaxAge: 24 * time.Hour}},
		{"TCPAddress", c.Listen.TCPAddress(0), "127.0.0.1:8443"},
		{"admin.address", c.Admin.Address, "127.0.0.1:9901"},
		{"log.level", c.Log.Level, "info"},
		{"trusted_proxies", c.TrustedProxies, []netip.Prefix(nil)},
		{"stages.router", c.Stages.Router, config.Stage{Workers: 2, Queue: 1024}},
		{"stages.balancer", c.Stages.Balancer, config.Stage{Workers: 2, Queue: 1024}},
		{"stages.pool", c.Stages.Pool, config.Stage{Workers: 1024, Queue: 4096}},
		{"stages.telemetry", c.Stages.Telemetry, config.Stage{Workers: 1, Queue: 4096}},
		{"len(routes)", len(c.Routes), 1},
		{"upstream names", c.UpstreamNames, []string{"app"}},
		{"len(upstreams)", len(c.Upstreams), 1},
	}
	if len(c.Routes) == 1 {
		r := c.Routes[0]
		checks = append(checks, []struct {
			name      string
			got, want any
		}{
			{"routes[0].match", r.Match, config.Match{Host: "*", PathPrefix: "/"}},
			{"routes[0].upstream", r.Upstream, "app"},
			{"routes[0].timeout", r.Timeout, 30 * time.Second},
			{"routes[0].name", r.Name, "*/"},
		}...)
	}
	if u := c.Upstreams["app"]; u != nil {
		checks = append(checks, []struct {
			name      string
			got, want any
		}{
			{"upstreams.app.name", u.Name, "app"},
			{"upstreams.app.policy", u.Policy, "round_robin"},
			{"upstreams.app.protocol", u.Protocol, "h2c"},
			{"upstreams.app.connect_timeout", u.ConnectTimeout, 2 * time.Second},
			{"upstreams.app.tls", u.TLS, config.UpstreamTLS{}},
			{"upstreams.app.endpoints", u.Endpoints, []config.Endpoint{{Address: "127.0.0.1:9001", Weight: 1}}},
		}...)
	} else {
		t.Errorf("upstreams = %v, want group app", c.Upstreams)
	}
	for _, ck := range checks {
		if !reflect.DeepEqual(ck.got, ck.want) {
			t.Errorf("%s = %#v, want %#v", ck.name, ck.got, ck.want)
		}
	}
}

func TestFullConfig(t *testing.T) {
	cert, key := testkit.SelfSigned(t, "localhost", false)
	doc := `
listen:
  address: "0.0.0.0:8443"
  admission_wait: 250ms
  tls: { cert: ` + cert + `, key: ` + key + ` }
admin: { address: ":9902" }
log: { level: debug }
stages:
  router:    { workers: 4, queue: 64 }
  pool:      { workers: "16", queue: 128.0 }
routes:
  - match: { host: "*.Example.com", path_prefix: /api }
    upstream: api
    timeout: 5s
  - upstream: web
upstreams:
  web:
    endpoints:
      - { address: "127.0.0.1:9001" }
  api:
    policy: round_robin
    protocol: h2
    connect_timeout: 500ms
    tls: { ca: ` + cert + `, server_name: api.internal, insecure_skip_verify: "true" }
    endpoints:
      - { address: "[::1]:9443", weight: 3 }
      - { address: "backend.internal:9443" }
`
	c, err := config.Load(writeFile(t, t.TempDir(), "spooky.yaml", doc))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if len(c.Listen.TLS) != 1 || c.Listen.TLS[0].Cert != cert || c.Listen.TLS[0].Key != key {
		t.Errorf("Listen.TLS = %+v, want cert %s key %s", c.Listen.TLS, cert, key)
	}
	if _, err := c.Listen.TLS[0].Load(); err != nil {
		t.Errorf("TLS.Load: %v", err)
	}
	if c.Listen.Address != "0.0.0.0:8443" || c.Listen.AdmissionWait != 250*time.Millisecond {
		t.Errorf("Listen = %+v", c.Listen)
	}
	if c.Admin.Address != ":9902" || c.Log.Level != "debug" {
		t.Errorf("Admin, Log = %+v, %+v", c.Admin, c.Log)
	}
	wantStages := config.Stages{
		Router:    config.Stage{Workers: 4, Queue: 64},
		Balancer:  config.Stage{Workers: 2, Queue: 1024},
		Pool:      config.Stage{Workers: 16, Queue: 128},
		Telemetry: config.Stage{Workers: 1, Queue: 4096},
	}
	if c.Stages != wantStages {
		t.Errorf("Stages = %+v, want %+v", c.Stages, wantStages)
	}
	if r := c.Routes[0]; r.Match.Host != "*.example.com" || r.Match.PathPrefix != "/api" || r.Timeout != 5*time.Second || r.Upstream != "api" {
		t.Errorf("Routes[0] = %+v", r)
	}
	if !slices.Equal(c.UpstreamNames, []string{"api", "web"}) {
		t.Errorf("UpstreamNames = %v, want sorted [api web]", c.UpstreamNames)
	}
	api := c.Upstreams["api"]
	if api.Protocol != "h2" || api.ConnectTimeout != 500*time.Millisecond || !api.TLS.InsecureSkipVerify || api.TLS.ServerName != "api.internal" {
		t.Errorf("api = %+v", api)
	}
	if want := []config.Endpoint{{Address: "[::1]:9443", Weight: 3}, {Address: "backend.internal:9443", Weight: 1}}; !slices.Equal(api.Endpoints, want) {
		t.Errorf("api endpoints = %+v, want %+v", api.Endpoints, want)
	}
	if pool, err := api.TLS.RootCAs(); err != nil || pool == nil {
		t.Errorf("RootCAs = %v, %v; want a pool", pool, err)
	}
}

func TestInvalidConfigs(t *testing.T) {
	dir := t.TempDir()
	cert, key := testkit.SelfSigned(t, "localhost", false)
	_, otherKey := testkit.SelfSigned(t, "other", false)
	notPEM := writeFile(t, dir, "not.pem", "hello")
	missing := filepath.Join(dir, "missing.pem")

	// with returns minimal with extra top-level YAML added.
	with := func(extra string) string { return minimal + extra }
	upstream := func(body string) string {
		return "routes:\n  - upstream: app\nupstreams:\n  app:\n" + body
	}

	tests := []struct {
		name string
		doc  string
		want []string // every one must appear in the error text
	}{
		{"unknown top-level key", with("tcp: { enabled: true }\n"),
			[]string{"tcp:", "unknown key", "want one of ", "listen", "upstreams"}},
		{"unknown nested key", with("admin: { adress: 127.0.0.1:1 }\n"),
			[]string{"admin.adress", "unknown key", "want one of address"}},
		{"listen.address without port", with("listen: { address: localhost }\n"),
			[]string{"listen.address", `"localhost"`, "want host:port"}},
		{"listen.address port out of range", with("listen: { address: \"127.0.0.1:70000\" }\n"),
			[]string{"listen.address", `"127.0.0.1:70000"`, "want host:port"}},
		{"listen.tcp.address without port", with("listen: { tcp: { address: localhost } }\n"),
			[]string{"listen.tcp.address", `"localhost"`, "want host:port"}},
		{"listen.tcp.idle_timeout zero", with("listen: { tcp: { idle_timeout: 0s } }\n"),
			[]string{"listen.tcp.idle_timeout", "want a positive duration"}},
		{"listen.alt_svc.port out of range", with("listen: { alt_svc: { port: 70000 } }\n"),
			[]string{"listen.alt_svc.port", "70000", "want a port from 1 to 65535"}},
		{"listen.alt_svc.max_age under a second", with("listen: { alt_svc: { max_age: 500ms } }\n"),
			[]string{"listen.alt_svc.max_age", "500ms", "want at least 1s"}},
		{"admin.address not a string", with("admin: { address: [1] }\n"),
			[]string{"admin.address", "[1]", "want a string"}},
		{"listen.admission_wait zero", with("listen: { admission_wait: 0s }\n"),
			[]string{"listen.admission_wait", `"0s"`, "want a positive duration"}},
		{"negative workers", with("stages: { pool: { workers: -3 } }\n"),
			[]string{"stages.pool.workers", `"-3"`, "want a whole number of at least 1"}},
		{"non-number workers", with("stages: { pool: { workers: many } }\n"),
			[]string{"stages.pool.workers", `"many"`, "want a whole number of at least 1"}},
		{"fractional queue", with("stages: { router: { queue: 1.5 } }\n"),
			[]string{"stages.router.queue", `"1.5"`, "want a whole number of at least 1"}},
		{"bad hash_on", upstream("    policy: ring_hash\n    hash_on: \"header:\"\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n"),
			[]string{"upstreams.app.hash_on", `"header:"`, "want header:NAME, cookie:NAME"}},
		{"health path without slash", upstream("    health: { path: healthz }\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n"),
			[]string{"upstreams.app.health.path", `"healthz"`, "want a path starting with /"}},
		{"health path not a path", upstream("    health: { path: \"/%zz\" }\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n"),
			[]string{"upstreams.app.health.path", `"/%zz"`, "want a path starting with /"}},
		{"health expected_status reversed", upstream("    health: { path: /h, expected_status: 399-200 }\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n"),
			[]string{"upstreams.app.health.expected_status", `"399-200"`, "want a status or range"}},
		{"max_ejection_percent over 100", upstream("    outlier: { max_ejection_percent: 150 }\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n"),
			[]string{"upstreams.app.outlier.max_ejection_percent", `"150"`, "want a percentage"}},
		{"negative max_requests", upstream("    limits: { max_requests: -1 }\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n"),
			[]string{"upstreams.app.limits.max_requests", `"-1"`, "want a whole number of at least 0"}},
		{"fallback without groups", upstream("    policy: fallback\n"),
			[]string{"upstreams.app.groups", "want a list of priority groups"}},
		{"groups without fallback", upstream("    groups: [[{address: \"127.0.0.1:9001\"}]]\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n"),
			[]string{"upstreams.app.groups", "want groups only with policy fallback"}},
		{"unknown retry condition", "routes:\n  - upstream: app\n    retries: { attempts: 2, on: [connect-failure, 500] }\nupstreams:\n  app:\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n",
			[]string{"routes[0].retries.on[1]", `"500"`, "want one of connect-failure"}},
		{"zero retry attempts", "routes:\n  - upstream: app\n    retries: { attempts: 0 }\nupstreams:\n  app:\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n",
			[]string{"routes[0].retries.attempts", `"0"`, "want a whole number of at least 1"}},
		{"unknown stage", with("stages: { cache: { workers: 1 } }\n"),
			[]string{"stages.cache", "unknown key", "want one of router, balancer, pool, telemetry"}},
		{"trusted_proxies not a list", with("trusted_proxies: { a: 1 }\n"),
			[]string{"trusted_proxies:", "want a list of CIDRs such as 10.0.0.0/8 or bare IPs"}},
		{"trusted_proxies not an address", with("trusted_proxies: [10.0.0.0/8, proxy.internal]\n"),
			[]string{"trusted_proxies[1]", `"proxy.internal"`, "want a CIDR such as 10.0.0.0/8 or 2001:db8::/32, or a bare IP"}},
		{"trusted_proxies prefix too long", with("trusted_proxies: [10.0.0.0/33]\n"),
			[]string{"trusted_proxies[0]", `"10.0.0.0/33"`, "want a CIDR such as 10.0.0.0/8"}},
		{"trusted_proxies host bits set", with("trusted_proxies: [10.1.2.3/8]\n"),
			[]string{"trusted_proxies[0]", `"10.1.2.3/8"`, "want a CIDR with no address bits set past its length, such as 10.0.0.0/8"}},
		{"trusted_proxies IPv4-mapped range", with("trusted_proxies: [\"::ffff:10.0.0.0/104\"]\n"),
			[]string{"trusted_proxies[0]", `"::ffff:10.0.0.0/104"`, "want an IPv4 range written as IPv4"}},
		{"trusted_proxies zone", with("trusted_proxies: [\"fe80::1%eth0\"]\n"),
			[]string{"trusted_proxies[0]", `"fe80::1%eth0"`, "or a bare IP (without a zone)"}},
		{"trusted_proxies number", with("trusted_proxies: [10]\n"),
			[]string{"trusted_proxies[0]", `"10"`, "want a CIDR"}},
		{"log level", with("log: { level: verbose }\n"),
			[]string{"log.level", `"verbose"`, "want one of debug, info, warn, error"}},
		{"route to unknown group", "routes:\n  - upstream: nope\nupstreams:\n  app:\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n",
			[]string{"routes[0].upstream", `"nope"`, "want one of the groups under upstreams: app"}},
		{"route without upstream", "routes:\n  - timeout: 1s\nupstreams:\n  app:\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n",
			[]string{"routes[0].upstream", "missing", "want the name of an upstream group"}},
		{"bad route timeout", "routes:\n  - { upstream: app, timeout: 3x }\nupstreams:\n  app:\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n",
			[]string{"routes[0].timeout", `"3x"`, "want a positive duration such as 500ms or 30s"}},
		{"route timeout without unit", "routes:\n  - { upstream: app, timeout: 30 }\nupstreams:\n  app:\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n",
			[]string{"routes[0].timeout", `"30"`, "want a positive duration"}},
		{"path_prefix without slash", "routes:\n  - { upstream: app, match: { path_prefix: api } }\nupstreams:\n  app:\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n",
			[]string{"routes[0].match.path_prefix", `"api"`, "want a path starting with /"}},
		{"host with inner wildcard", "routes:\n  - { upstream: app, match: { host: \"a.*.com\" } }\nupstreams:\n  app:\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n",
			[]string{"routes[0].match.host", `"a.*.com"`, `want "*", an exact host, or "*.suffix"`}},
		{"empty routes", "routes: []\nupstreams:\n  app:\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n",
			[]string{"routes:", `"[]"`, "want a list of at least one route"}},
		{"missing routes", "upstreams:\n  app:\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n",
			[]string{"routes: missing", "want a list of at least one route"}},
		{"missing upstreams", "routes:\n  - upstream: app\n",
			[]string{"upstreams: missing", "want at least one upstream group"}},
		{"unknown policy", upstream("    policy: least_loaded\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n"),
			[]string{"upstreams.app.policy", `"least_loaded"`, "want one of round_robin"}},
		{"unknown protocol", upstream("    protocol: h3\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n"),
			[]string{"upstreams.app.protocol", `"h3"`, "want one of h2c, h2"}},
		{"bad connect_timeout", upstream("    connect_timeout: -1s\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n"),
			[]string{"upstreams.app.connect_timeout", `"-1s"`, "want a positive duration"}},
		{"bad insecure_skip_verify", upstream("    tls: { insecure_skip_verify: maybe }\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n"),
			[]string{"upstreams.app.tls.insecure_skip_verify", `"maybe"`, "want true or false"}},
		{"missing upstream CA file", upstream("    tls: { ca: " + missing + " }\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n"),
			[]string{"upstreams.app.tls.ca", missing, "want a readable PEM file of CA certificates", "no such file"}},
		{"upstream CA not PEM", upstream("    tls: { ca: " + notPEM + " }\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n"),
			[]string{"upstreams.app.tls.ca", notPEM, "no PEM certificate"}},
		{"endpoint without port", upstream("    endpoints: [{address: \"10.0.0.1\"}]\n"),
			[]string{"upstreams.app.endpoints[0].address", `"10.0.0.1"`, "want host:port"}},
		{"endpoint without address", upstream("    endpoints: [{weight: 2}]\n"),
			[]string{"upstreams.app.endpoints[0].address", "missing", "want host:port"}},
		{"duplicate endpoint", upstream("    endpoints: [{address: \"127.0.0.1:9001\"}, {address: \"127.0.0.1:9001\"}]\n"),
			[]string{"upstreams.app.endpoints[1].address", `"127.0.0.1:9001"`, "want an address not already listed in this group"}},
		{"weight 0", upstream("    endpoints: [{address: \"127.0.0.1:9001\", weight: 0}]\n"),
			[]string{"upstreams.app.endpoints[0].weight", `"0"`, "want a whole number of at least 1"}},
		{"no endpoints", upstream("    policy: round_robin\n"),
			[]string{"upstreams.app.endpoints", "missing", "want a list of at least one endpoint"}},
		{"bad group name", "routes:\n  - upstream: a b\nupstreams:\n  \"a b\":\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n",
			[]string{"upstreams.a b", `"a b"`, "want a group name of letters, digits"}},
		{"tls cert file missing", with("listen: { tls: { cert: " + missing + ", key: " + key + " } }\n"),
			[]string{"listen.tls.cert", missing, "want a readable PEM certificate matching the key in", "no such file"}},
		{"tls cert not PEM", with("listen: { tls: { cert: " + notPEM + ", key: " + key + " } }\n"),
			[]string{"listen.tls.cert", notPEM, "want a readable PEM certificate matching the key in"}},
		{"tls key does not match cert", with("listen: { tls: { cert: " + cert + ", key: " + otherKey + " } }\n"),
			[]string{"listen.tls.cert", cert, otherKey, "matching the key"}},
		{"tls cert without key", with("listen: { tls: { cert: " + cert + " } }\n"),
			[]string{"listen.tls.key", "missing", "want a PEM private key file"}},
		{"tls key without cert", with("listen: { tls: { key: " + key + " } }\n"),
			[]string{"listen.tls.cert", "missing", "want a PEM certificate file"}},
		{"tls list: second cert not PEM", with("listen: { tls: [{ cert: " + cert + ", key: " + key + " }, { cert: " + notPEM + ", key: " + key + " }] }\n"),
			[]string{"listen.tls[1].cert", notPEM, "want a readable PEM certificate matching the key in"}},
		{"tls list: key missing", with("listen: { tls: [{ cert: " + cert + " }] }\n"),
			[]string{"listen.tls[0].key", "missing", "want a PEM private key file"}},
		{"tls list: unknown key", with("listen: { tls: [{ cert: " + cert + ", key: " + key + ", sni: a }] }\n"),
			[]string{"listen.tls[0].sni", "unknown key", "want one of cert, key"}},
		{"tls list empty", with("listen: { tls: [] }\n"),
			[]string{"listen.tls", "want a {cert, key} mapping or a list of at least one"}},
		{"section not a mapping", with("listen: 8443\n"),
			[]string{"listen:", `"8443"`, "want a mapping"}},
		{"stage not a mapping", with("stages: { pool: 4 }\n"),
			[]string{"stages.pool:", `"4"`, "want a mapping"}},
		{"unknown stage key", with("stages: { pool: { worker: 4 } }\n"),
			[]string{"stages.pool.worker", "unknown key", "want one of workers, queue"}},
		{"unknown route key", "routes:\n  - { upstream: app, matcher: {} }\nupstreams:\n  app:\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n",
			[]string{"routes[0].matcher", "unknown key", "want one of name, match, upstream, timeout, retries"}},
		{"unknown endpoint key", upstream("    endpoints: [{address: \"127.0.0.1:9001\", wieght: 2}]\n"),
			[]string{"upstreams.app.endpoints[0].wieght", "unknown key", "want one of address, weight"}},
		{"unknown health key", upstream("    health: { path: /h, every: 5s }\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n"),
			[]string{"upstreams.app.health.every", "unknown key", "want one of path, interval"}},
		{"upstreams a list", "routes:\n  - upstream: app\nupstreams: [app]\n",
			[]string{"upstreams:", `"[app]"`, "want a mapping of group name to upstream group"}},
		{"route not a mapping", "routes: [app]\nupstreams:\n  app:\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n",
			[]string{"routes[0]:", `"app"`, "want a mapping"}},
		{"group not a mapping", "routes:\n  - upstream: app\nupstreams:\n  app: 5\n",
			[]string{"upstreams.app:", `"5"`, "want a mapping"}},
		{"endpoint not a mapping", upstream("    endpoints: [\"127.0.0.1:9001\"]\n"),
			[]string{"upstreams.app.endpoints[0]:", `"127.0.0.1:9001"`, "want a mapping"}},
		{"hash_on name on a nameless source", upstream("    hash_on: client_ip:x\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n"),
			[]string{"upstreams.app.hash_on", `"client_ip:x"`, "want header:NAME"}},
		{"health healthy 0", upstream("    health: { path: /h, healthy: 0 }\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n"),
			[]string{"upstreams.app.health.healthy", `"0"`, "want a whole number of at least 1"}},
		{"health interval no unit", upstream("    health: { path: /h, interval: 5 }\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n"),
			[]string{"upstreams.app.health.interval", `"5"`, "want a positive duration"}},
		{"health without path", upstream("    health: { interval: 5s }\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n"),
			[]string{"upstreams.app.health.path", "missing", "want a path starting with /"}},
		{"expected_status out of range", upstream("    health: { path: /h, expected_status: 200-600 }\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n"),
			[]string{"upstreams.app.health.expected_status", `"200-600"`, "want a status or range"}},
		{"expected_status not a number", upstream("    health: { path: /h, expected_status: ok }\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n"),
			[]string{"upstreams.app.health.expected_status", `"ok"`, "want a status or range"}},
		{"negative consecutive_failures", upstream("    outlier: { consecutive_failures: -1 }\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n"),
			[]string{"upstreams.app.outlier.consecutive_failures", `"-1"`, "want a whole number of at least 0"}},
		{"bad base_ejection", upstream("    outlier: { base_ejection: soon }\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n"),
			[]string{"upstreams.app.outlier.base_ejection", `"soon"`, "want a positive duration"}},
		{"retry_budget percent over 100", upstream("    retry_budget: { percent: 101 }\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n"),
			[]string{"upstreams.app.retry_budget.percent", `"101"`, "want a percentage from 0 to 100"}},
		{"fallback with endpoints", upstream("    policy: fallback\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n    groups: [[{address: \"127.0.0.1:9002\"}]]\n"),
			[]string{"upstreams.app.endpoints", "(set)", "want groups (a list of endpoint lists) with policy fallback"}},
		{"fallback empty group", upstream("    policy: fallback\n    groups: [[{address: \"127.0.0.1:9001\"}], []]\n"),
			[]string{"upstreams.app.groups[1]", `"[]"`, "want a list of at least one endpoint"}},
		{"endpoint in two fallback groups", upstream("    policy: fallback\n    groups: [[{address: \"127.0.0.1:9001\"}], [{address: \"127.0.0.1:9001\"}]]\n"),
			[]string{"upstreams.app.groups[1][0].address", `"127.0.0.1:9001"`, "want an address not already listed"}},
		{"fallback group endpoint weight 0", upstream("    policy: fallback\n    groups: [[{address: \"127.0.0.1:9001\", weight: 0}]]\n"),
			[]string{"upstreams.app.groups[0][0].weight", `"0"`, "want a whole number of at least 1"}},
		{"retries.on not a list", "routes:\n  - upstream: app\n    retries: { on: 503 }\nupstreams:\n  app:\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n",
			[]string{"routes[0].retries.on", `"503"`, "want a list of connect-failure"}},
		{"bad per_try_timeout", "routes:\n  - upstream: app\n    retries: { per_try_timeout: 0s }\nupstreams:\n  app:\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n",
			[]string{"routes[0].retries.per_try_timeout", `"0s"`, "want a positive duration"}},
		{"route name not a string", "routes:\n  - { upstream: app, name: [a] }\nupstreams:\n  app:\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n",
			[]string{"routes[0].name", `"[a]"`, "want a string"}},
		{"empty match host", "routes:\n  - { upstream: app, match: { host: \"\" } }\nupstreams:\n  app:\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n",
			[]string{"routes[0].match.host", `""`, `want "*", an exact host`}},
		{"drain_timeout not a duration", with("listen: { drain_timeout: [1] }\n"),
			[]string{"listen.drain_timeout", `"[1]"`, "want a positive duration"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := load(t, tt.doc)
			if err == nil {
				t.Fatalf("Load succeeded (%+v), want an error", c)
			}
			if c != nil {
				t.Errorf("Load returned a config with its error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if ps := problems(err); len(ps) != 1 {
				t.Errorf("got %d problems, want 1:\n%v", len(ps), err)
			}
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Errorf("error %v is not a *config.Error", err)
			}
		})
	}
}

func TestYAMLSyntaxError(t *testing.T) {
	doc := "routes:\n  - upstream: app\nupstreams: [\n  app: {\n"
	path := writeFile(t, t.TempDir(), "spooky.yaml", doc)
	c, err := config.Load(path)
	if err == nil || c != nil {
		t.Fatalf("Load = %v, %v; want only an error", c, err)
	}
	for _, w := range []string{"config:", path, "line "} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

func TestMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	c, err := config.Load(path)
	if err == nil || c != nil || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Load(missing) = %v, %v; want an error naming the path that wraps os.ErrNotExist", c, err)
	}
}

func TestEveryProblemIsReported(t *testing.T) {
	doc := `
listen: { address: nowhere }
stages: { pool: { workers: 0 } }
routes:
  - { upstream: app, timeout: 3x }
upstreams:
  app:
    endpoints: [{ address: "127.0.0.1:9001" }]
`
	_, err := load(t, doc)
	ps := problems(err)
	if len(ps) != 3 {
		t.Fatalf("got %d problems, want 3:\n%v", len(ps), err)
	}
	var keys []string
	for _, p := range ps {
		var ce *config.Error
		if !errors.As(p, &ce) {
			t.Fatalf("problem %v is not a *config.Error", p)
		}
		keys = append(keys, ce.Key)
	}
	slices.Sort(keys)
	if want := []string{"listen.address", "routes[0].timeout", "stages.pool.workers"}; !slices.Equal(keys, want) {
		t.Fatalf("problem keys = %v, want %v", keys, want)
	}
}

func TestEnvOverrides(t *testing.T) {
	t.Setenv("SPOOKY_ADMIN__ADDRESS", "127.0.0.1:9999")
	t.Setenv("SPOOKY_STAGES__POOL__WORKERS", "7")
	t.Setenv("SPOOKY_LISTEN__ADMISSION_WAIT", "250ms")
	c, err := load(t, minimal+"admin: { address: \"127.0.0.1:1234\" }\n")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.Admin.Address != "127.0.0.1:9999" {
		t.Errorf("admin.address = %q, want the environment's 127.0.0.1:9999 over the file's", c.Admin.Address)
	}
	if c.Stages.Pool.Workers != 7 {
		t.Errorf("stages.pool.workers = %d, want 7", c.Stages.Pool.Workers)
	}
	if c.Stages.Pool.Queue != 4096 {
		t.Errorf("stages.pool.queue = %d, want the default 4096 kept beside an overridden sibling", c.Stages.Pool.Queue)
	}
	if c.Listen.AdmissionWait != 250*time.Millisecond {
		t.Errorf("listen.admission_wait = %v, want 250ms", c.Listen.AdmissionWait)
	}
}

func TestTrustedProxies(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []netip.Prefix
	}{
		{"left out", minimal, nil},
		{"empty", minimal + "trusted_proxies: []\n", nil},
		{"CIDRs and bare IPs", minimal + "trusted_proxies: [10.0.0.0/8, \"2001:db8::/32\", 192.0.2.7, \"::1\", \"::ffff:198.51.100.1\", 0.0.0.0/0]\n",
			[]netip.Prefix{
				netip.MustParsePrefix("10.0.0.0/8"),
				netip.MustParsePrefix("2001:db8::/32"),
				netip.MustParsePrefix("192.0.2.7/32"),
				netip.MustParsePrefix("::1/128"),
				netip.MustParsePrefix("198.51.100.1/32"),
				netip.MustParsePrefix("0.0.0.0/0"),
			}},
		{"one string", minimal + "trusted_proxies: 10.0.0.0/8\n", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := load(t, tt.doc)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(c.TrustedProxies, tt.want) {
				t.Fatalf("TrustedProxies = %v, want %v", c.TrustedProxies, tt.want)
			}
		})
	}
}

func TestTrustedProxiesFromEnv(t *testing.T) {
	t.Setenv("SPOOKY_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.0.0/16 2001:db8::1")
	c, err := load(t, minimal+"trusted_proxies: [172.16.0.0/12]\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("2001:db8::1/128"),
	}
	if !slices.Equal(c.TrustedProxies, want) {
		t.Fatalf("TrustedProxies = %v, want the environment's %v over the file's", c.TrustedProxies, want)
	}

	t.Setenv("SPOOKY_TRUSTED_PROXIES", "10.0.0.0/8,nope")
	if _, err := load(t, minimal); err == nil || !strings.Contains(err.Error(), `trusted_proxies[1]: "nope" is not valid`) {
		t.Fatalf("Load = %v; want an error naming trusted_proxies[1]", err)
	}
}

func TestBadEnvOverride(t *testing.T) {
	t.Setenv("SPOOKY_STAGES__POOL__WORKERS", "abc")
	c, err := load(t, minimal)
	if err == nil || c != nil {
		t.Fatalf("Load = %v, %v; want an error", c, err)
	}
	for _, w := range []string{"stages.pool.workers", `"abc"`, "whole number"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

func TestUnknownEnvKey(t *testing.T) {
	t.Setenv("SPOOKY_ADMIN__PORT", "9999")
	_, err := load(t, minimal)
	if err == nil || !strings.Contains(err.Error(), "admin.port") || !strings.Contains(err.Error(), "unknown key") {
		t.Fatalf("Load = %v; want an error naming admin.port as unknown", err)
	}
}

func TestErrorText(t *testing.T) {
	tests := []struct {
		err  config.Error
		want string
	}{
		{config.Error{Key: "routes", Want: "a list"}, "routes: missing; want a list"},
		{config.Error{Key: "stages.pool.workers", Value: -1, Want: "a whole number of at least 1"},
			`stages.pool.workers: "-1" is not valid; want a whole number of at least 1`},
		{config.Error{Key: "routes[0].timeout", Value: "3x", Want: "a duration"},
			`routes[0].timeout: "3x" is not valid; want a duration`},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestRootCAsEmpty(t *testing.T) {
	pool, err := config.UpstreamTLS{}.RootCAs()
	if pool != nil || err != nil {
		t.Fatalf("RootCAs() with no CA = %v, %v; want nil, nil (system roots)", pool, err)
	}
}

func FuzzLoad(f *testing.F) {
	f.Add(minimal)
	f.Add("")
	f.Add("null")
	f.Add("- a\n- b\n")
	f.Add("routes: []\n")
	f.Add("listen: { address: nowhere }\nstages: { pool: { workers: 0 } }\n" + minimal)
	f.Add("routes:\n  - { upstream: app, timeout: 3x, match: { host: \"*.x\", path_prefix: api } }\nupstreams:\n  app:\n    policy: random\n    endpoints: [{address: \"10.0.0.1\", weight: 0}, {address: \"10.0.0.1\"}]\n")
	f.Add("stages: { pool: { workers: 1e300, queue: .nan } }\n" + minimal)
	f.Add("listen: { tls: { cert: /nonexistent, key: /nonexistent } }\n" + minimal)
	f.Add("a: &x [*x]\n")
	f.Add("upstreams: [\n")
	f.Add("routes: [app, {upstream: app, retries: {on: ~, attempts: \"2\"}}]\nupstreams:\n  app: 5\n")
	f.Add("routes:\n  - upstream: app\nupstreams:\n  app:\n    policy: fallback\n    health: { path: /h, expected_status: 204 }\n    groups: [[{address: \":1\"}], [{address: \":1\", weight: \"2\"}], []]\n")
	f.Add("stages: { pool: { workers: \"  8 \" }, cache: {} }\nlog: { level: ~ }\n" + minimal)
	f.Add("trusted_proxies: [10.0.0.0/8, \"::1\", 10.1.2.3/8, \"::ffff:1.2.3.4\", ~, {}]\n" + minimal)
	f.Add("trusted_proxies: \" 10.0.0.0/8 ,, 2001:db8::/129\"\n" + minimal)
	f.Fuzz(func(t *testing.T, doc string) {
		c, err := load(t, doc)
		if (c == nil) == (err == nil) {
			t.Fatalf("Load = %v, %v; want exactly one of a config and an error", c, err)
		}
		if c == nil {
			return
		}
		// A config Load accepts keeps its promises.
		if len(c.Routes) == 0 || len(c.Upstreams) == 0 {
			t.Fatalf("accepted a config without routes or upstreams: %+v", c)
		}
		if !slices.IsSorted(c.UpstreamNames) || len(c.UpstreamNames) != len(c.Upstreams) {
			t.Fatalf("UpstreamNames = %v for %d groups", c.UpstreamNames, len(c.Upstreams))
		}
		for _, r := range c.Routes {
			if c.Upstreams[r.Upstream] == nil {
				t.Fatalf("route to unknown group %q accepted", r.Upstream)
			}
			if !strings.HasPrefix(r.Match.PathPrefix, "/") || r.Timeout <= 0 {
				t.Fatalf("bad route accepted: %+v", r)
			}
		}
		for name, u := range c.Upstreams {
			if len(u.Endpoints) == 0 {
				t.Fatalf("group %q accepted without endpoints", name)
			}
			for _, ep := range u.Endpoints {
				if ep.Weight < 1 || ep.Address == "" {
					t.Fatalf("bad endpoint accepted in %q: %+v", name, ep)
				}
			}
		}
		for _, p := range c.TrustedProxies {
			if !p.IsValid() || p != p.Masked() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
				t.Fatalf("bad trusted proxy accepted: %v", p)
			}
		}
		for _, s := range []config.Stage{c.Stages.Router, c.Stages.Balancer, c.Stages.Pool, c.Stages.Telemetry} {
			if s.Workers < 1 || s.Queue < 1 {
				t.Fatalf("bad stage accepted: %+v", s)
			}
		}
	})
}

func TestErrorOrderIsStable(t *testing.T) {
	doc := minimal + "stages: { pool: { workers: 0 }, router: { queue: 0 }, telemetry: { workers: x } }\n"
	_, first := load(t, doc)
	if first == nil {
		t.Fatal("Load succeeded, want 3 problems")
	}
	for range 20 {
		if _, err := load(t, doc); err == nil || err.Error() != first.Error() {
			t.Fatalf("BUG(config/sections.go decoder.stages): the same file gave problems in a different order:\n%v\nthen\n%v\n"+
				"(stages are walked by ranging over a map, so their errors come out in random order)", first, err)
		}
	}
}

func TestBalancingKeysLoad(t *testing.T) {
	c, err := load(t, `
routes:
  - upstream: app
    retries: { attempts: 3, per_try_timeout: 250ms, on: [reset-before-response, 503] }
upstreams:
  app:
    policy: fallback
    hash_on: "header:x-user-id"
    health: { path: /healthz, interval: 2s, expected_status: "204" }
    outlier: { consecutive_failures: 0 }
    limits: { max_requests: 100, max_pending: 10 }
    retry_budget: { percent: 25, min_concurrency: 1 }
    groups:
      - [ { address: "127.0.0.1:9001" }, { address: "127.0.0.1:9002", weight: 2 } ]
      - [ { address: "127.0.0.1:9003" } ]
`)
	if err != nil {
		t.Fatal(err)
	}
	u := c.Upstreams["app"]
	want := []config.Endpoint{{Address: "127.0.0.1:9001", Weight: 1}, {Address: "127.0.0.1:9002", Weight: 2}, {Address: "127.0.0.1:9003", Weight: 1, Priority: 1}}
	if !slices.Equal(u.Endpoints, want) {
		t.Errorf("endpoints %+v", u.Endpoints)
	}
	if u.HashOn != (config.HashOn{Source: "header", Name: "X-User-Id"}) {
		t.Errorf("hash_on %+v", u.HashOn)
	}
	if h := u.Health; h == nil || h.Interval != 2*time.Second || h.Timeout != time.Second || h.StatusMin != 204 || h.StatusMax != 204 || h.Healthy != 2 || h.Unhealthy != 3 {
		t.Errorf("health %+v", u.Health)
	}
	if u.Outlier.ConsecutiveFailures != 0 || u.Outlier.MaxEjectionPercent != 50 || u.Limits != (config.Limits{MaxRequests: 100, MaxPending: 10}) || u.RetryBudget != (config.RetryBudget{Percent: 25, MinConcurrency: 1}) {
		t.Errorf("outlier %+v limits %+v budget %+v", u.Outlier, u.Limits, u.RetryBudget)
	}
	r := c.Routes[0].Retries
	if r.Attempts != 3 || r.PerTryTimeout != 250*time.Millisecond || !slices.Equal(r.On, []string{"reset-before-response", "503"}) {
		t.Errorf("retries %+v", r)
	}
}

func TestTCPAddress(t *testing.T) {
	tests := []struct {
		listen config.Listen
		want   string
	}{
		{config.Listen{Address: "127.0.0.1:8443"}, "127.0.0.1:8443"},
		{config.Listen{Address: "127.0.0.1:0"}, "127.0.0.1:4433"},
		{config.Listen{Address: ":0"}, ":4433"},
		{config.Listen{Address: "[::1]:0"}, "[::1]:4433"},
		{config.Listen{Address: "127.0.0.1:0", TCP: config.TCP{Address: "127.0.0.1:443"}}, "127.0.0.1:443"},
	}
	for _, tt := range tests {
		if got := tt.listen.TCPAddress(4433); got != tt.want {
			t.Errorf("TCPAddress(4433) of %+v = %q, want %q", tt.listen, got, tt.want)
		}
	}
}

func TestTLSList(t *testing.T) {
	cert1, key1 := testkit.SelfSigned(t, "one", false)
	cert2, key2 := testkit.SelfSigned(t, "two", false)
	c, err := load(t, "listen:\n  tls:\n    - { cert: "+cert1+", key: "+key1+" }\n    - { cert: "+cert2+", key: "+key2+" }\n"+minimal)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := []config.TLS{{Cert: cert1, Key: key1}, {Cert: cert2, Key: key2}}
	if !slices.Equal(c.Listen.TLS, want) {
		t.Errorf("Listen.TLS = %+v, want %+v", c.Listen.TLS, want)
	}
}

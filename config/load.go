package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
)

// EnvPrefix starts every environment variable that overrides a key. The rest
// of the name is the key path in upper case with "__" between levels:
// SPOOKY_ADMIN__ADDRESS sets admin.address, SPOOKY_STAGES__POOL__WORKERS
// sets stages.pool.workers. Keys inside lists (routes) cannot be set this way.
const EnvPrefix = "SPOOKY_"

// Error is one problem with one key. Load and Parse return every Error they
// find, joined with errors.Join.
type Error struct {
	Key   string // the key path, e.g. routes[0].timeout
	Value any    // the value found; nil when the key is missing
	Want  string // what was expected instead
}

func (e *Error) Error() string {
	if e.Value == nil {
		return fmt.Sprintf("%s: missing; want %s", e.Key, e.Want)
	}
	return fmt.Sprintf("%s: %q is not valid; want %s", e.Key, fmt.Sprint(e.Value), e.Want)
}

// Load reads the YAML file at path, applies SPOOKY_ environment overrides
// from the process environment, and validates the result in
// full. On error the Config is nil and the error lists every problem found.
func Load(path string) (*Config, error) {
	k := koanf.New(".")
	if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	if err := k.Load(envProvider(), nil); err != nil {
		return nil, fmt.Errorf("config: environment: %w", err)
	}
	return decode(k.Raw())
}

// envProvider maps SPOOKY_A__B_C=v to the key a.b_c.
func envProvider() koanf.Provider {
	return env.Provider(EnvPrefix, ".", func(name string) string {
		return strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, EnvPrefix), "__", "."))
	})
}

// decoder walks the raw document and collects every error it meets.
type decoder struct {
	errs []error
}

func (d *decoder) fail(key string, value any, want string) {
	d.errs = append(d.errs, &Error{Key: key, Value: value, Want: want})
}

func join(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// object checks that v is a mapping with no keys outside allowed.
func (d *decoder) object(key string, v any, allowed ...string) map[string]any {
	if v == nil {
		return map[string]any{}
	}
	m, ok := v.(map[string]any)
	if !ok {
		d.fail(key, v, "a mapping")
		return map[string]any{}
	}
	for _, name := range sortedKeys(m) {
		if !slices.Contains(allowed, name) {
			d.fail(join(key, name), "(unknown key)", "one of "+strings.Join(allowed, ", "))
		}
	}
	return m
}

func (d *decoder) str(m map[string]any, parent, key, def string) string {
	v, ok := m[key]
	if !ok || v == nil {
		return def
	}
	s, ok := v.(string)
	if !ok {
		d.fail(join(parent, key), v, "a string")
		return def
	}
	return s
}

func (d *decoder) oneOf(m map[string]any, parent, key, def string, allowed []string) string {
	s := d.str(m, parent, key, def)
	if !slices.Contains(allowed, s) {
		d.fail(join(parent, key), s, "one of "+strings.Join(allowed, ", "))
	}
	return s
}

func (d *decoder) integer(m map[string]any, parent, key string, def, least int) int {
	v, ok := m[key]
	if !ok || v == nil {
		return def
	}
	var n int
	switch x := v.(type) {
	case int:
		n = x
	case int64:
		n = int(x)
	case float64:
		if x != float64(int(x)) {
			d.fail(join(parent, key), v, fmt.Sprintf("a whole number of at least %d", least))
			return def
		}
		n = int(x)
	case string:
		var err error
		if n, err = strconv.Atoi(strings.TrimSpace(x)); err != nil {
			d.fail(join(parent, key), v, fmt.Sprintf("a whole number of at least %d", least))
			return def
		}
	default:
		d.fail(join(parent, key), v, fmt.Sprintf("a whole number of at least %d", least))
		return def
	}
	if n < least {
		d.fail(join(parent, key), n, fmt.Sprintf("a whole number of at least %d", least))
		return def
	}
	return n
}

func (d *decoder) boolean(m map[string]any, parent, key string) bool {
	v, ok := m[key]
	if !ok || v == nil {
		return false
	}
	switch x := v.(type) {
	case bool:
		return x
	case string:
		if b, err := strconv.ParseBool(x); err == nil {
			return b
		}
	}
	d.fail(join(parent, key), v, "true or false")
	return false
}

func (d *decoder) duration(m map[string]any, parent, key string, def time.Duration) time.Duration {
	v, ok := m[key]
	if !ok || v == nil {
		return def
	}
	s, _ := v.(string)
	dur, err := time.ParseDuration(s)
	if err != nil || dur <= 0 {
		d.fail(join(parent, key), v, "a positive duration such as 500ms or 30s")
		return def
	}
	return dur
}

func (d *decoder) hostPort(m map[string]any, parent, key, def string) string {
	s := d.str(m, parent, key, def)
	if s == "" && def == "" {
		d.fail(join(parent, key), nil, "host:port")
		return s
	}
	host, port, err := net.SplitHostPort(s)
	if err == nil {
		var n int
		n, err = strconv.Atoi(port)
		if err == nil && (n < 0 || n > 65535) {
			err = errors.New("port out of range")
		}
	}
	if err != nil || host == "" && !strings.HasPrefix(s, ":") {
		d.fail(join(parent, key), s, "host:port, such as 127.0.0.1:8443")
	}
	return s
}

var upstreamName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func decode(raw map[string]any) (*Config, error) {
	d := &decoder{}
	top := d.object("", raw, "listen", "admin", "log", "stages", "routes", "upstreams")
	c := &Config{
		Listen: d.listen(top["listen"]),
		Admin:  d.admin(top["admin"]),
		Log:    d.log(top["log"]),
		Stages: d.stages(top["stages"]),
	}
	c.Upstreams, c.UpstreamNames = d.upstreams(top["upstreams"])
	c.Routes = d.routes(top["routes"], c.Upstreams)
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	return c, nil
}

func (d *decoder) listen(v any) Listen {
	m := d.object("listen", v, "address", "tls", "admission_wait", "drain_timeout")
	l := Listen{
		Address:       d.hostPort(m, "listen", "address", DefaultListenAddress),
		AdmissionWait: d.duration(m, "listen", "admission_wait", DefaultAdmissionWait),
		DrainTimeout:  d.duration(m, "listen", "drain_timeout", DefaultDrainTimeout),
	}
	if raw, ok := m["tls"]; ok && raw != nil {
		t := d.object("listen.tls", raw, "cert", "key")
		l.TLS = &TLS{
			Cert: d.str(t, "listen.tls", "cert", ""),
			Key:  d.str(t, "listen.tls", "key", ""),
		}
		switch {
		case l.TLS.Cert == "":
			d.fail("listen.tls.cert", nil, "a PEM certificate file (or leave listen.tls out for a dev certificate)")
		case l.TLS.Key == "":
			d.fail("listen.tls.key", nil, "a PEM private key file")
		default:
			if _, err := l.TLS.Load(); err != nil {
				d.fail("listen.tls.cert", l.TLS.Cert, "a readable PEM certificate matching the key in "+l.TLS.Key+" ("+err.Error()+")")
			}
		}
	}
	return l
}

// Load reads the certificate and key files.
func (t *TLS) Load() (tls.Certificate, error) {
	return tls.LoadX509KeyPair(t.Cert, t.Key)
}

func (d *decoder) admin(v any) Admin {
	m := d.object("admin", v, "address")
	return Admin{Address: d.hostPort(m, "admin", "address", DefaultAdminAddress)}
}

func (d *decoder) log(v any) Log {
	m := d.object("log", v, "level")
	return Log{Level: d.oneOf(m, "log", "level", "info", LogLevels)}
}

func (d *decoder) stages(v any) Stages {
	s := defaultStages()
	m := d.object("stages", v, "router", "balancer", "pool", "telemetry")
	for _, named := range []struct {
		name  string
		stage *Stage
	}{{"router", &s.Router}, {"balancer", &s.Balancer}, {"pool", &s.Pool}, {"telemetry", &s.Telemetry}} {
		key, st := "stages."+named.name, named.stage
		sm := d.object(key, m[named.name], "workers", "queue")
		st.Workers = d.integer(sm, key, "workers", st.Workers, 1)
		st.Queue = d.integer(sm, key, "queue", st.Queue, 1)
	}
	return s
}

func (d *decoder) upstreams(v any) (map[string]*Upstream, []string) {
	out := map[string]*Upstream{}
	if v == nil {
		d.fail("upstreams", nil, "at least one upstream group")
		return out, nil
	}
	m, ok := v.(map[string]any)
	if !ok || len(m) == 0 {
		d.fail("upstreams", v, "a mapping of group name to upstream group")
		return out, nil
	}
	names := sortedKeys(m)
	for _, name := range names {
		key := "upstreams." + name
		if !upstreamName.MatchString(name) {
			d.fail(key, name, "a group name of letters, digits, '-' and '_'")
		}
		um := d.object(key, m[name], "policy", "protocol", "tls", "connect_timeout", "endpoints")
		u := &Upstream{
			Name:           name,
			Policy:         d.oneOf(um, key, "policy", DefaultPolicy, Policies),
			Protocol:       d.oneOf(um, key, "protocol", DefaultProtocol, Protocols),
			ConnectTimeout: d.duration(um, key, "connect_timeout", DefaultConnectTimeout),
		}
		tm := d.object(key+".tls", um["tls"], "ca", "server_name", "insecure_skip_verify")
		u.TLS = UpstreamTLS{
			CA:                 d.str(tm, key+".tls", "ca", ""),
			ServerName:         d.str(tm, key+".tls", "server_name", ""),
			InsecureSkipVerify: d.boolean(tm, key+".tls", "insecure_skip_verify"),
		}
		if u.TLS.CA != "" {
			if _, err := u.TLS.RootCAs(); err != nil {
				d.fail(key+".tls.ca", u.TLS.CA, "a readable PEM file of CA certificates ("+err.Error()+")")
			}
		}
		u.Endpoints = d.endpoints(key+".endpoints", um["endpoints"])
		out[name] = u
	}
	return out, names
}

func (d *decoder) endpoints(key string, v any) []Endpoint {
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		d.fail(key, v, "a list of at least one endpoint ({address: host:port})")
		return nil
	}
	eps := make([]Endpoint, 0, len(list))
	seen := map[string]bool{}
	for i, raw := range list {
		ek := fmt.Sprintf("%s[%d]", key, i)
		em := d.object(ek, raw, "address", "weight")
		ep := Endpoint{
			Address: d.hostPort(em, ek, "address", ""),
			Weight:  d.integer(em, ek, "weight", 1, 1),
		}
		if seen[ep.Address] {
			d.fail(ek+".address", ep.Address, "an address not already listed in this group")
		}
		seen[ep.Address] = true
		eps = append(eps, ep)
	}
	return eps
}

func (d *decoder) routes(v any, upstreams map[string]*Upstream) []Route {
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		d.fail("routes", v, "a list of at least one route")
		return nil
	}
	routes := make([]Route, 0, len(list))
	for i, raw := range list {
		key := fmt.Sprintf("routes[%d]", i)
		rm := d.object(key, raw, "name", "match", "upstream", "timeout")
		mm := d.object(key+".match", rm["match"], "host", "path_prefix")
		r := Route{
			Match: Match{
				Host:       strings.ToLower(d.str(mm, key+".match", "host", "*")),
				PathPrefix: d.str(mm, key+".match", "path_prefix", "/"),
			},
			Upstream: d.str(rm, key, "upstream", ""),
			Timeout:  d.duration(rm, key, "timeout", DefaultRouteTimeout),
		}
		r.Name = d.str(rm, key, "name", r.Match.Host+r.Match.PathPrefix)
		if !strings.HasPrefix(r.Match.PathPrefix, "/") {
			d.fail(key+".match.path_prefix", r.Match.PathPrefix, "a path starting with /")
		}
		if h := r.Match.Host; strings.Contains(h[min(1, len(h)):], "*") || h == "" {
			d.fail(key+".match.host", h, `"*", an exact host, or "*.suffix"`)
		}
		switch {
		case r.Upstream == "":
			d.fail(key+".upstream", nil, "the name of an upstream group")
		case upstreams[r.Upstream] == nil && len(upstreams) > 0:
			d.fail(key+".upstream", r.Upstream, "one of the groups under upstreams: "+strings.Join(sortedKeys(upstreams), ", "))
		}
		routes = append(routes, r)
	}
	return routes
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

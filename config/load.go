package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
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
		um := d.object(key, m[name], "policy", "protocol", "tls", "connect_timeout", "endpoints", "groups",
			"hash_on", "health", "outlier", "limits", "retry_budget")
		u := &Upstream{
			Name:           name,
			Policy:         d.oneOf(um, key, "policy", DefaultPolicy, Policies),
			Protocol:       d.oneOf(um, key, "protocol", DefaultProtocol, Protocols),
			ConnectTimeout: d.duration(um, key, "connect_timeout", DefaultConnectTimeout),
			HashOn:         d.hashOn(um, key),
			Health:         d.health(key+".health", um["health"]),
			Outlier:        d.outlier(key+".outlier", um["outlier"]),
			Limits:         d.limits(key+".limits", um["limits"]),
			RetryBudget:    d.retryBudget(key+".retry_budget", um["retry_budget"]),
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
		u.Endpoints = d.groupEndpoints(key, u.Policy, um)
		out[name] = u
	}
	return out, names
}

// groupEndpoints reads endpoints, or for the fallback policy groups: a list
// of priority groups, each a list of endpoints.
func (d *decoder) groupEndpoints(key, policy string, um map[string]any) []Endpoint {
	if policy != "fallback" {
		if _, ok := um["groups"]; ok {
			d.fail(key+".groups", "(set)", "groups only with policy fallback; use endpoints")
		}
		return d.endpoints(key+".endpoints", um["endpoints"], 0, map[string]bool{})
	}
	if _, ok := um["endpoints"]; ok {
		d.fail(key+".endpoints", "(set)", "groups (a list of endpoint lists) with policy fallback")
	}
	groups, ok := um["groups"].([]any)
	if !ok || len(groups) == 0 {
		d.fail(key+".groups", um["groups"], "a list of priority groups, each a list of endpoints")
		return nil
	}
	var eps []Endpoint
	seen := map[string]bool{}
	for i, g := range groups {
		eps = append(eps, d.endpoints(fmt.Sprintf("%s.groups[%d]", key, i), g, i, seen)...)
	}
	return eps
}

func (d *decoder) endpoints(key string, v any, priority int, seen map[string]bool) []Endpoint {
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		d.fail(key, v, "a list of at least one endpoint ({address: host:port})")
		return nil
	}
	eps := make([]Endpoint, 0, len(list))
	for i, raw := range list {
		ek := fmt.Sprintf("%s[%d]", key, i)
		em := d.object(ek, raw, "address", "weight")
		ep := Endpoint{
			Address:  d.hostPort(em, ek, "address", ""),
			Weight:   d.integer(em, ek, "weight", 1, 1),
			Priority: priority,
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
		rm := d.object(key, raw, "name", "match", "upstream", "timeout", "retries")
		mm := d.object(key+".match", rm["match"], "host", "path_prefix")
		r := Route{
			Match: Match{
				Host:       strings.ToLower(d.str(mm, key+".match", "host", "*")),
				PathPrefix: d.str(mm, key+".match", "path_prefix", "/"),
			},
			Upstream: d.str(rm, key, "upstream", ""),
			Timeout:  d.duration(rm, key, "timeout", DefaultRouteTimeout),
			Retries:  d.retries(key+".retries", rm["retries"]),
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

func (d *decoder) hashOn(um map[string]any, key string) HashOn {
	s := d.str(um, key, "hash_on", "client_ip")
	source, name, _ := strings.Cut(s, ":")
	switch source {
	case "client_ip", "path", "authority":
		if name == "" {
			return HashOn{Source: source}
		}
	case "header", "cookie", "query":
		if name != "" {
			if source == "header" {
				name = http.CanonicalHeaderKey(name)
			}
			return HashOn{Source: source, Name: name}
		}
	}
	d.fail(key+".hash_on", s, "header:NAME, cookie:NAME, query:NAME, client_ip, path or authority")
	return HashOn{Source: "client_ip"}
}

func (d *decoder) health(key string, v any) *Health {
	if v == nil {
		return nil
	}
	m := d.object(key, v, "path", "interval", "timeout", "healthy", "unhealthy", "expected_status")
	h := &Health{
		Path:      d.str(m, key, "path", ""),
		Interval:  d.duration(m, key, "interval", 5*time.Second),
		Timeout:   d.duration(m, key, "timeout", time.Second),
		Healthy:   d.integer(m, key, "healthy", 2, 1),
		Unhealthy: d.integer(m, key, "unhealthy", 3, 1),
	}
	if u, err := url.ParseRequestURI(h.Path); err != nil || !strings.HasPrefix(h.Path, "/") || u.Host != "" {
		d.fail(key+".path", m["path"], "a path starting with /, such as /healthz")
	}
	status := d.str(m, key, "expected_status", "200-399")
	lo, hi, isRange := strings.Cut(status, "-")
	if !isRange {
		hi = lo
	}
	var err1, err2 error
	h.StatusMin, err1 = strconv.Atoi(strings.TrimSpace(lo))
	h.StatusMax, err2 = strconv.Atoi(strings.TrimSpace(hi))
	if err1 != nil || err2 != nil || h.StatusMin < 100 || h.StatusMax > 599 || h.StatusMin > h.StatusMax {
		d.fail(key+".expected_status", status, "a status or range of statuses such as 200-399 or 204")
	}
	return h
}

func (d *decoder) outlier(key string, v any) Outlier {
	m := d.object(key, v, "consecutive_failures", "base_ejection", "max_ejection_percent")
	o := Outlier{
		ConsecutiveFailures: d.integer(m, key, "consecutive_failures", 5, 0),
		BaseEjection:        d.duration(m, key, "base_ejection", 30*time.Second),
		MaxEjectionPercent:  d.integer(m, key, "max_ejection_percent", 50, 0),
	}
	if o.MaxEjectionPercent > 100 {
		d.fail(key+".max_ejection_percent", o.MaxEjectionPercent, "a percentage from 0 to 100")
	}
	return o
}

func (d *decoder) limits(key string, v any) Limits {
	m := d.object(key, v, "max_requests", "max_pending")
	return Limits{
		MaxRequests: d.integer(m, key, "max_requests", 0, 0),
		MaxPending:  d.integer(m, key, "max_pending", 0, 0),
	}
}

func (d *decoder) retryBudget(key string, v any) RetryBudget {
	m := d.object(key, v, "percent", "min_concurrency")
	b := RetryBudget{
		Percent:        d.integer(m, key, "percent", 20, 0),
		MinConcurrency: d.integer(m, key, "min_concurrency", 3, 0),
	}
	if b.Percent > 100 {
		d.fail(key+".percent", b.Percent, "a percentage from 0 to 100")
	}
	return b
}

func (d *decoder) retries(key string, v any) Retries {
	m := d.object(key, v, "attempts", "per_try_timeout", "on")
	r := Retries{
		Attempts: d.integer(m, key, "attempts", 1, 1),
		On:       []string{"connect-failure", "refused-stream"},
	}
	if _, ok := m["per_try_timeout"]; ok {
		r.PerTryTimeout = d.duration(m, key, "per_try_timeout", 0)
	}
	if raw, ok := m["on"]; ok {
		list, ok := raw.([]any)
		if !ok {
			d.fail(key+".on", raw, "a list of "+strings.Join(RetryConditions, ", "))
			return r
		}
		r.On = r.On[:0]
		for i, item := range list {
			s := fmt.Sprint(item)
			if !slices.Contains(RetryConditions, s) {
				d.fail(fmt.Sprintf("%s.on[%d]", key, i), s, "one of "+strings.Join(RetryConditions, ", "))
				continue
			}
			r.On = append(r.On, s)
		}
	}
	return r
}

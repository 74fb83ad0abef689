package config

// This file decodes and checks the file section by section: a method per
// mapping, reading each key through the decoder (which takes its default
// from keys) and checking what one key alone cannot: pairs of keys, and
// references from routes to upstream groups.

import (
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// config decodes the whole document.
func (d *decoder) config(raw map[string]any) *Config {
	top := d.object("", "", raw)
	c := &Config{
		Listen:         d.listen(d.child(top, "listen")),
		TrustedProxies: d.trustedProxies(top),
		Admin:          Admin{Address: d.hostPort(d.child(top, "admin"), "address")},
		Log:            Log{Level: d.oneOf(d.child(top, "log"), "level", LogLevels)},
		Stages:         d.stages(d.child(top, "stages")),
	}
	c.Upstreams, c.UpstreamNames = d.upstreams(top.m["upstreams"])
	c.Routes = d.routes(top.m["routes"], c.Upstreams)
	return c
}

func (d *decoder) listen(n node) Listen {
	l := Listen{
		Address:          d.hostPort(n, "address"),
		AdmissionWait:    d.duration(n, "admission_wait"),
		DrainTimeout:     d.duration(n, "drain_timeout"),
		WriteIdleTimeout: d.duration(n, "write_idle_timeout"),
	}
	ln := d.child(n, "limits")
	l.Limits = ClientLimits{
		RequestHeaderBytes:   d.size(ln, "request_header_bytes"),
		RequestHeaders:       d.integer(ln, "request_headers", 1),
		RequestBodyBytes:     d.size(ln, "request_body_bytes"),
		Connections:          d.integer(ln, "connections", 1),
		ConnectionsPerClient: d.integer(ln, "connections_per_client", 1),
		ResetsPerSecond:      d.integer(ln, "resets_per_second", 1),
	}
	if l.Limits.RequestHeaderBytes < 1<<10 {
		d.fail("listen.limits.request_header_bytes", l.Limits.RequestHeaderBytes, "at least 1KiB")
	}
	qn := d.child(n, "quic")
	l.QUIC = QUIC{
		IdleTimeout:         d.duration(qn, "idle_timeout"),
		KeepAlive:           d.durationOrZero(qn, "keep_alive"),
		MaxStreamWindow:     d.size(qn, "max_stream_window"),
		MaxConnectionWindow: d.size(qn, "max_connection_window"),
		Allow0RTT:           d.boolean(qn, "allow_0rtt"),
		MaxStreams:          d.integer(qn, "max_streams", 1),
		MaxHandshakes:       d.integer(qn, "max_handshakes", 1),
		RetryAbove:          d.integer(qn, "retry_above", 0),
	}
	switch q := l.QUIC; {
	case q.MaxStreamWindow < 64<<10:
		d.fail("listen.quic.max_stream_window", q.MaxStreamWindow, "at least 64KiB")
	case q.MaxConnectionWindow < q.MaxStreamWindow:
		d.fail("listen.quic.max_connection_window", q.MaxConnectionWindow, "at least listen.quic.max_stream_window")
	}
	tcp := d.child(n, "tcp")
	l.TCP = TCP{
		Enabled:           d.boolean(tcp, "enabled"),
		Address:           d.str(tcp, "address"),
		ReadHeaderTimeout: d.duration(tcp, "read_header_timeout"),
		IdleTimeout:       d.duration(tcp, "idle_timeout"),
	}
	if l.TCP.Address != "" {
		d.hostPort(tcp, "address")
	}
	alt := d.child(n, "alt_svc")
	l.AltSvc = AltSvc{
		Enabled: d.boolean(alt, "enabled"),
		Port:    d.integer(alt, "port", 1),
		MaxAge:  d.duration(alt, "max_age"),
	}
	if l.AltSvc.Port > 65535 {
		d.fail("listen.alt_svc.port", l.AltSvc.Port, "a port from 1 to 65535")
	}
	if l.AltSvc.MaxAge < time.Second {
		d.fail("listen.alt_svc.max_age", l.AltSvc.MaxAge.String(), "at least 1s")
	}
	l.TLS = d.tls(n.m["tls"])
	return l
}

// tls reads listen.tls: one {cert, key} mapping, or a list of them. Each
// pair must load, so that a bad file is named when the config is read.
func (d *decoder) tls(v any) []TLS {
	if v == nil {
		return nil
	}
	items, keys := []any{v}, []string{"listen.tls"}
	if list, ok := v.([]any); ok {
		if len(list) == 0 {
			d.fail("listen.tls", v, "a {cert, key} mapping or a list of at least one (or leave listen.tls out for a dev certificate)")
			return nil
		}
		items, keys = list, nil
		for i := range list {
			keys = append(keys, fmt.Sprintf("listen.tls[%d]", i))
		}
	}
	var out []TLS
	for i, item := range items {
		tn := d.object(keys[i], "listen.tls[]", item)
		if tn.wrong {
			continue
		}
		t := TLS{Cert: d.str(tn, "cert"), Key: d.str(tn, "key")}
		switch {
		case t.Cert == "":
			d.fail(join(tn.key, "cert"), nil, "a PEM certificate file (or leave listen.tls out for a dev certificate)")
		case t.Key == "":
			d.fail(join(tn.key, "key"), nil, "a PEM private key file")
		default:
			if _, err := t.Load(); err != nil {
				d.fail(join(tn.key, "cert"), t.Cert, "a readable PEM certificate matching the key in "+t.Key+" ("+err.Error()+")")
			}
		}
		out = append(out, t)
	}
	return out
}

// trustedProxies reads trusted_proxies: a list of CIDRs or bare IPs, or,
// as an environment override gives it, one string of them separated by
// commas or white space.
func (d *decoder) trustedProxies(n node) []netip.Prefix {
	const name = "trusted_proxies"
	var items []any
	switch v := d.value(n, name).(type) {
	case []any:
		items = v
	case string:
		for _, s := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || unicode.IsSpace(r) }) {
			items = append(items, s)
		}
	default:
		d.fail(join(n.key, name), v, "a list of CIDRs such as 10.0.0.0/8 or bare IPs")
		return nil
	}
	var out []netip.Prefix
	for i, item := range items {
		s, _ := item.(string)
		p, want := trustedProxy(s)
		if want != "" {
			d.fail(fmt.Sprintf("%s[%d]", join(n.key, name), i), item, want)
			continue
		}
		out = append(out, p)
	}
	return out
}

// trustedProxy parses one item of trusted_proxies; want says what was
// expected when s is not valid. A bare IP is a /32 or /128, an IPv4-mapped
// one is read as IPv4 (client addresses are compared unmapped), and a CIDR
// must have no address bits set past its length, since 10.1.2.3/8 is more
// often a mistake than a way to write 10.0.0.0/8.
func trustedProxy(s string) (p netip.Prefix, want string) {
	const form = "a CIDR such as 10.0.0.0/8 or 2001:db8::/32, or a bare IP"
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return p, form + " (without a zone)"
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), ""
	}
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		return p, form
	case p.Addr().Is4In6():
		return p, "an IPv4 range written as IPv4, such as 10.0.0.0/8: client addresses are compared unmapped"
	case p != p.Masked():
		return p, "a CIDR with no address bits set past its length, such as " + p.Masked().String()
	}
	return p, ""
}

func (d *decoder) stages(n node) Stages {
	var s Stages
	for _, st := range []struct {
		name  string
		stage *Stage
	}{{"router", &s.Router}, {"balancer", &s.Balancer}, {"pool", &s.Pool}, {"telemetry", &s.Telemetry}} {
		sn := d.child(n, st.name)
		*st.stage = Stage{Workers: d.integer(sn, "workers", 1), Queue: d.integer(sn, "queue", 1)}
	}
	return s
}

var upstreamName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

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
	names := slices.Sorted(maps.Keys(m))
	for _, name := range names {
		key := "upstreams." + name
		if !upstreamName.MatchString(name) {
			d.fail(key, name, "a group name of letters, digits, '-' and '_'")
		}
		n := d.object(key, "upstreams.<name>", m[name])
		u := &Upstream{
			Name:           name,
			Policy:         d.oneOf(n, "policy", Policies),
			Protocol:       d.oneOf(n, "protocol", Protocols),
			ConnectTimeout: d.duration(n, "connect_timeout"),
			MaxConnections: d.integer(n, "max_connections", 1),
			IdleTimeout:    d.duration(n, "idle_timeout"),
			HashOn:         d.hashOn(n),
			Health:         d.health(n),
			Outlier:        d.outlier(d.child(n, "outlier")),
			Limits:         d.limits(d.child(n, "limits")),
			RetryBudget:    d.retryBudget(d.child(n, "retry_budget")),
			TLS:            d.upstreamTLS(d.child(n, "tls")),
		}
		if !n.wrong {
			u.Endpoints = d.groupEndpoints(n, u.Policy)
		}
		out[name] = u
	}
	return out, names
}

func (d *decoder) upstreamTLS(n node) UpstreamTLS {
	t := UpstreamTLS{
		CA:                 d.str(n, "ca"),
		ServerName:         d.str(n, "server_name"),
		InsecureSkipVerify: d.boolean(n, "insecure_skip_verify"),
	}
	if t.CA != "" {
		if _, err := t.RootCAs(); err != nil {
			d.fail(join(n.key, "ca"), t.CA, "a readable PEM file of CA certificates ("+err.Error()+")")
		}
	}
	return t
}

// groupEndpoints reads endpoints, or for the fallback policy groups: a list
// of priority groups, each a list of endpoints.
func (d *decoder) groupEndpoints(n node, policy string) []Endpoint {
	endpoints := join(n.path, "endpoints")
	if policy != "fallback" {
		if _, ok := n.m["groups"]; ok {
			d.fail(join(n.key, "groups"), "(set)", "groups only with policy fallback; use endpoints")
		}
		return d.endpoints(join(n.key, "endpoints"), endpoints, n.m["endpoints"], 0, map[string]bool{})
	}
	if _, ok := n.m["endpoints"]; ok {
		d.fail(join(n.key, "endpoints"), "(set)", "groups (a list of endpoint lists) with policy fallback")
	}
	groups, ok := d.value(n, "groups").([]any)
	if !ok || len(groups) == 0 {
		d.fail(join(n.key, "groups"), n.m["groups"], "a list of priority groups, each a list of endpoints")
		return nil
	}
	var eps []Endpoint
	seen := map[string]bool{}
	for i, g := range groups {
		// A group's endpoints are declared as the endpoints of any group.
		eps = append(eps, d.endpoints(fmt.Sprintf("%s.groups[%d]", n.key, i), endpoints, g, i, seen)...)
	}
	return eps
}

// endpoints reads the list v found at key, declared at path.
func (d *decoder) endpoints(key, path string, v any, priority int, seen map[string]bool) []Endpoint {
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		d.fail(key, v, "a list of at least one endpoint ({address: host:port})")
		return nil
	}
	eps := make([]Endpoint, 0, len(list))
	for i, raw := range list {
		n := d.object(fmt.Sprintf("%s[%d]", key, i), path+"[]", raw)
		if n.wrong {
			continue
		}
		ep := Endpoint{
			Address:  d.hostPort(n, "address"),
			Weight:   d.integer(n, "weight", 1),
			Priority: priority,
		}
		if seen[ep.Address] {
			d.fail(join(n.key, "address"), ep.Address, "an address not already listed in this group")
		}
		seen[ep.Address] = true
		eps = append(eps, ep)
	}
	return eps
}

func (d *decoder) hashOn(n node) HashOn {
	s := d.str(n, "hash_on")
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
	d.fail(join(n.key, "hash_on"), s, "header:NAME, cookie:NAME, query:NAME, client_ip, path or authority")
	return HashOn{Source: "client_ip"}
}

// health reads the health mapping of the group n; nil when there is none.
func (d *decoder) health(un node) *Health {
	if un.m["health"] == nil {
		return nil
	}
	n := d.child(un, "health")
	h := &Health{
		Path:      d.str(n, "path"),
		Interval:  d.duration(n, "interval"),
		Timeout:   d.duration(n, "timeout"),
		Healthy:   d.integer(n, "healthy", 1),
		Unhealthy: d.integer(n, "unhealthy", 1),
	}
	if u, err := url.ParseRequestURI(h.Path); err != nil || !strings.HasPrefix(h.Path, "/") || u.Host != "" {
		d.fail(join(n.key, "path"), n.m["path"], "a path starting with /, such as /healthz")
	}
	status := d.str(n, "expected_status")
	lo, hi, isRange := strings.Cut(status, "-")
	if !isRange {
		hi = lo
	}
	var err1, err2 error
	h.StatusMin, err1 = strconv.Atoi(strings.TrimSpace(lo))
	h.StatusMax, err2 = strconv.Atoi(strings.TrimSpace(hi))
	if err1 != nil || err2 != nil || h.StatusMin < 100 || h.StatusMax > 599 || h.StatusMin > h.StatusMax {
		d.fail(join(n.key, "expected_status"), status, "a status or range of statuses such as 200-399 or 204")
	}
	return h
}

func (d *decoder) outlier(n node) Outlier {
	o := Outlier{
		ConsecutiveFailures: d.integer(n, "consecutive_failures", 0),
		BaseEjection:        d.duration(n, "base_ejection"),
		MaxEjectionPercent:  d.integer(n, "max_ejection_percent", 0),
	}
	if o.MaxEjectionPercent > 100 {
		d.fail(join(n.key, "max_ejection_percent"), o.MaxEjectionPercent, "a percentage from 0 to 100")
	}
	return o
}

func (d *decoder) limits(n node) Limits {
	return Limits{
		MaxRequests: d.integer(n, "max_requests", 0),
		MaxPending:  d.integer(n, "max_pending", 0),
	}
}

func (d *decoder) retryBudget(n node) RetryBudget {
	b := RetryBudget{
		Percent:        d.integer(n, "percent", 0),
		MinConcurrency: d.integer(n, "min_concurrency", 0),
	}
	if b.Percent > 100 {
		d.fail(join(n.key, "percent"), b.Percent, "a percentage from 0 to 100")
	}
	return b
}

func (d *decoder) routes(v any, upstreams map[string]*Upstream) []Route {
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		d.fail("routes", v, "a list of at least one route")
		return nil
	}
	routes := make([]Route, 0, len(list))
	for i, raw := range list {
		n := d.object(fmt.Sprintf("routes[%d]", i), "routes[]", raw)
		if n.wrong {
			continue
		}
		mn := d.child(n, "match")
		r := Route{
			Match: Match{
				Host:       strings.ToLower(d.str(mn, "host")),
				PathPrefix: d.str(mn, "path_prefix"),
			},
			Upstream: d.str(n, "upstream"),
			Timeout:  d.duration(n, "timeout"),
			Retries:  d.retries(d.child(n, "retries")),
		}
		r.Name = d.str(n, "name")
		if n.m["name"] == nil {
			r.Name = r.Match.Host + r.Match.PathPrefix
		}
		if !strings.HasPrefix(r.Match.PathPrefix, "/") {
			d.fail(join(mn.key, "path_prefix"), r.Match.PathPrefix, "a path starting with /")
		}
		if h := r.Match.Host; strings.Contains(h[min(1, len(h)):], "*") || h == "" {
			d.fail(join(mn.key, "host"), h, `"*", an exact host, or "*.suffix"`)
		}
		switch {
		case r.Upstream == "":
			d.fail(join(n.key, "upstream"), nil, "the name of an upstream group")
		case upstreams[r.Upstream] == nil && len(upstreams) > 0:
			d.fail(join(n.key, "upstream"), r.Upstream, "one of the groups under upstreams: "+strings.Join(slices.Sorted(maps.Keys(upstreams)), ", "))
		}
		routes = append(routes, r)
	}
	return routes
}

func (d *decoder) retries(n node) Retries {
	r := Retries{
		Attempts:      d.integer(n, "attempts", 1),
		PerTryTimeout: d.duration(n, "per_try_timeout"),
	}
	raw := d.value(n, "on")
	list, ok := raw.([]any)
	if !ok {
		d.fail(join(n.key, "on"), raw, "a list of "+strings.Join(RetryConditions, ", "))
		return r
	}
	r.On = []string{}
	for i, item := range list {
		s := fmt.Sprint(item)
		if !slices.Contains(RetryConditions, s) {
			d.fail(fmt.Sprintf("%s.on[%d]", n.key, i), s, "one of "+strings.Join(RetryConditions, ", "))
			continue
		}
		r.On = append(r.On, s)
	}
	return r
}

package router

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http/httpguts"

	"spooky/config"
	"spooky/stages"
)

func TestCheckPath(t *testing.T) {
	for _, tc := range []struct {
		path string
		want error
	}{
		{"/", nil},
		{"/api/v1/users?id=7&x=a%20b", nil},
		{"*", nil},
		{"/a%2Fb;c=d/@:!$&'()*+,=~", nil},
		{"/?", nil},
		{"/caf\xc3\xa9", nil}, // raw UTF-8 is not ours to refuse
		{"/a|b^c", nil},       // nor are characters browsers leave raw
		{"/a b", ErrPathSpace},
		{"/a?q=a b", ErrPathSpace},
		{"/ ", ErrPathSpace},
		{"/a\tb", ErrPathControl},
		{"/a\x00", ErrPathControl},
		{"/a\r\nX-Injected: 1", ErrPathControl},
		{"/a\x7f", ErrPathControl},
		{"/a#b", ErrPathFragment},
		{"/a?b#c", ErrPathFragment},
		{"/#", ErrPathFragment},
		{"/a#b c", ErrPathFragment}, // the first fault is the one reported
	} {
		if got := checkPath(tc.path); got != tc.want {
			t.Errorf("checkPath(%q) = %v, want %v", tc.path, got, tc.want)
		}
	}
}

func TestCheckAuthority(t *testing.T) {
	for _, tc := range []struct {
		authority string
		want      error
	}{
		{"example.com", nil},
		{"Example.COM:8443", nil},
		{"a-b_c.example.com.", nil},
		{"192.0.2.1:443", nil},
		{"localhost:0", nil},
		{"example.com:65535", nil},
		{"example.com:", nil}, // RFC 3986: port = *DIGIT
		{"[::1]", nil},
		{"[2001:db8::1]:443", nil},
		{"[::ffff:192.0.2.1]:443", nil},
		{"user@example.com", ErrAuthorityUserinfo},
		{"user:pass@example.com:443", ErrAuthorityUserinfo},
		{"example.com@evil.example", ErrAuthorityUserinfo},
		{"", ErrAuthorityHost},
		{":443", ErrAuthorityHost},
		{"exa mple.com", ErrAuthorityHost},
		{"example.com ", ErrAuthorityHost},
		{"example.com\t", ErrAuthorityHost},
		{"example.com\x00", ErrAuthorityHost},
		{"example.com/path", ErrAuthorityHost},
		{"example.com?x", ErrAuthorityHost},
		{"example.com#x", ErrAuthorityHost},
		{"ex%61mple.com", ErrAuthorityHost},
		{"a,b.example", ErrAuthorityHost},
		{"caf\xc3\xa9.example", ErrAuthorityHost},
		{"a:b:443", ErrAuthorityHost},
		{"::1", ErrAuthorityHost},
		{"[::1", ErrAuthorityHost},
		{"[::1]x", ErrAuthorityHost},
		{"[::1]]:443", ErrAuthorityHost},
		{"[192.0.2.1]", ErrAuthorityHost},
		{"[fe80::1%25eth0]:443", ErrAuthorityHost},
		{"[v1.x]", ErrAuthorityHost},
		{"[]:443", ErrAuthorityHost},
		{"example.com:65536", ErrAuthorityPort},
		{"example.com:99999999999999999999", ErrAuthorityPort},
		{"example.com:-1", ErrAuthorityPort},
		{"example.com:44 3", ErrAuthorityPort},
		{"example.com:https", ErrAuthorityPort},
		{"[::1]:x", ErrAuthorityPort},
	} {
		if got := checkAuthority(tc.authority); got != tc.want {
			t.Errorf("checkAuthority(%q) = %v, want %v", tc.authority, got, tc.want)
		}
	}
}

// TestHandleRefusesMalformedTargets drives the stage: a malformed target is
// answered 400 with the reason, and the balancer never sees it.
func TestHandleRefusesMalformedTargets(t *testing.T) {
	cfg := &config.Config{
		Stages: config.Stages{Router: config.Stage{Workers: 1, Queue: 4}},
		Routes: []config.Route{{Name: "all", Match: config.Match{Host: "*", PathPrefix: "/"}, Upstream: "app", Timeout: time.Second}},
	}
	in, out := stages.NewMailbox(cfg.Stages.Router), stages.NewMailbox(cfg.Stages.Router)
	r := New(cfg, in, out)
	for _, tc := range []struct {
		name, uri, host string
		want            error
	}{
		{"space in path", "/a b", "example.com", ErrPathSpace},
		{"tab in path", "/a\tb", "example.com", ErrPathControl},
		{"fragment", "/admin#x", "example.com", ErrPathFragment},
		{"userinfo", "/", "user@example.com", ErrAuthorityUserinfo},
		{"space in host", "/", "example.com /", ErrAuthorityHost},
		{"bad port", "/", "example.com:70000", ErrAuthorityPort},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnvelope("/")
			e.Request.RequestURI, e.Request.Host = tc.uri, tc.host
			rec := e.Writer.(*httptest.ResponseRecorder)
			r.Handle(e)
			<-e.Done()
			if want := "400 Bad Request: " + tc.want.Error() + "\n"; rec.Code != http.StatusBadRequest || rec.Body.String() != want {
				t.Fatalf("got %d %q, want 400 %q", rec.Code, rec.Body, want)
			}
			if got, ok := out.TryReceive(); ok {
				t.Fatalf("the balancer got %+v", got)
			}
			e.Release()
		})
	}
}

// TestHandleTrustedProxies checks that the router passes the config's
// trusted proxies to the header rules, and takes a reload's.
func TestHandleTrustedProxies(t *testing.T) {
	cfg := &config.Config{
		Stages: config.Stages{Router: config.Stage{Workers: 1, Queue: 4}},
		Routes: []config.Route{{Name: "all", Match: config.Match{Host: "*", PathPrefix: "/"}, Upstream: "app", Timeout: time.Second}},
	}
	in, out := stages.NewMailbox(cfg.Stages.Router), stages.NewMailbox(cfg.Stages.Router)
	r := New(cfg, in, out)
	route := func() http.Header {
		t.Helper()
		e := newEnvelope("/")
		e.Request.Header.Set("X-Forwarded-For", "203.0.113.7")
		e.Request.Header.Set("X-Forwarded-Host", "admin.internal")
		r.Handle(e)
		msg, err := out.Receive(context.Background())
		if err != nil || msg.Data != e {
			t.Fatalf("balancer got %+v, %v", msg, err)
		}
		h := e.Request.Header.Clone()
		e.Finish(200, nil)
		<-e.Done()
		e.Release()
		return h
	}
	if h := route(); h.Get("X-Forwarded-For") != "127.0.0.1" || h.Get("X-Forwarded-Host") != "" {
		t.Fatalf("from an untrusted client: %v", h)
	}
	trusting := *cfg
	trusting.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	r.Control(stages.Reconfigure{Config: &trusting})
	if h := route(); h.Get("X-Forwarded-For") != "203.0.113.7, 127.0.0.1" || h.Get("X-Forwarded-Host") != "admin.internal" {
		t.Fatalf("from a trusted proxy: %v", h)
	}
}

// FuzzCheckTarget holds the checks to their promises on whatever quic-go
// lets through: they never panic, refuse only with their own errors, and
// what they accept is read the same by the router and by Go's URL parser,
// so that the path a route matched is the path the upstream is sent.
func FuzzCheckTarget(f *testing.F) {
	f.Add("/api/v1?x=1", "example.com:443")
	f.Add("*", "[::1]:8443")
	f.Add("/a%2Fb/./../c?q=a%20b&r", "a-b.example.")
	f.Add("/a b", "user@example.com")
	f.Add("/a#b", "example.com:65536")
	f.Add("/a\tb", "[fe80::1%25eth0]")
	f.Add("/caf\xc3\xa9|^", "exa mple.com")
	f.Add("/?", "example.com:")
	f.Fuzz(func(t *testing.T, path, authority string) {
		err := checkTarget(path, authority)
		known := []error{nil, ErrPathSpace, ErrPathControl, ErrPathFragment, ErrAuthorityUserinfo, ErrAuthorityHost, ErrAuthorityPort}
		if !slices.Contains(known, err) {
			t.Fatalf("checkTarget(%q, %q) = %v, not one of the router's errors", path, authority, err)
		}
		if err := checkAuthority(authority); err == nil {
			checkAcceptedAuthority(t, authority)
		}
		// quic-go resets the stream of a request it cannot parse; only
		// what it accepts reaches the router.
		if !(strings.HasPrefix(path, "/") || path == "*") || !httpguts.ValidHeaderFieldValue(path) {
			return
		}
		u, perr := url.ParseRequestURI(path)
		if perr != nil || checkPath(path) != nil {
			return
		}
		checkAcceptedPath(t, path, u)
	})
}

// checkAcceptedPath checks that path, accepted, re-serialises unchanged:
// Go's URL keeps its query verbatim and splits it where an upstream does,
// at the first "?" (there is no "#" to cut at), and rebuilds the path
// exactly when it is written in RFC 3986's characters. Characters outside
// them that clients send raw ("|", "^", UTF-8) Go writes percent-encoded,
// which an upstream decodes to the same path.
func checkAcceptedPath(t *testing.T, path string, u *url.URL) {
	t.Helper()
	rawPath, rawQuery, hasQuery := strings.Cut(path, "?")
	if u.RawQuery != rawQuery || u.ForceQuery != (hasQuery && rawQuery == "") {
		t.Fatalf("%q: query %q (forced %v), want %q", path, u.RawQuery, u.ForceQuery, rawQuery)
	}
	if path == "*" {
		if u.RequestURI() != "*" {
			t.Fatalf("%q re-serialised as %q", path, u.RequestURI())
		}
		return
	}
	if decoded, err := url.PathUnescape(rawPath); err != nil || decoded != u.Path {
		t.Fatalf("%q: URL path %q, the upstream decodes %q (%v)", path, u.Path, decoded, err)
	}
	again := u.RequestURI()
	if rfc3986(path) && again != path {
		t.Fatalf("%q re-serialised as %q", path, again)
	}
	v, err := url.ParseRequestURI(again)
	if err != nil || v.Path != u.Path || v.RawQuery != u.RawQuery {
		t.Fatalf("%q re-serialised as %q, which reads back as %+v (%v)", path, again, v, err)
	}
}

// checkAcceptedAuthority checks that an accepted authority is read alike
// by the router's Match (net.SplitHostPort) and by Go's URL parser, and
// re-serialises unchanged.
func checkAcceptedAuthority(t *testing.T, authority string) {
	t.Helper()
	if strings.ContainsAny(authority, " \t@/?#%") {
		t.Fatalf("accepted authority %q", authority)
	}
	u, err := url.Parse("https://" + authority + "/")
	if err != nil || u.Host != authority || u.User != nil {
		t.Fatalf("accepted authority %q, which Go's URL reads as host %q user %v (%v)", authority, u.Host, u.User, err)
	}
	host := authority
	if h, _, err := net.SplitHostPort(authority); err == nil {
		host = h
	} else if strings.HasPrefix(authority, "[") {
		host = strings.Trim(authority, "[]")
	}
	if host != u.Hostname() {
		t.Fatalf("%q: the router matches host %q, Go's URL reads %q", authority, host, u.Hostname())
	}
}

// rfc3986 reports whether s is written only in RFC 3986's characters
// (unreserved, reserved and "%"), the ones Go's URL writes as they are.
func rfc3986(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~:/?[]@!$&'()*+,;=%", c) >= 0) {
			return false
		}
	}
	return true
}

func BenchmarkCheckTarget(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if checkTarget("/api/v1/users/12345?include=profile&fields=name,email", "api.example.com:8443") != nil {
			b.Fatal("refused")
		}
	}
}

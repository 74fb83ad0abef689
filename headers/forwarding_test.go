package headers_test

import (
	"net/http"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"spooky/headers"
)

// proxies is a trusted_proxies list: a private IPv4 range, a bare IPv4 and
// an IPv6 range.
var proxies = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("198.51.100.9/32"),
	netip.MustParsePrefix("2001:db8:f::/48"),
}

// spoofed is what a client may claim about itself.
func spoofed() http.Header {
	return http.Header{
		"Accept":             {"*/*"},
		"X-Forwarded-For":    {"203.0.113.7", "127.0.0.1"},
		"Forwarded":          {"for=127.0.0.1;proto=http"},
		"X-Real-Ip":          {"127.0.0.1"},
		"X-Forwarded-Host":   {"admin.internal"},
		"X-Forwarded-Proto":  {"http"},
		"X-Forwarded-Port":   {"80"},
		"X-Forwarded-Prefix": {"/admin"},
		"X-Forwarded-Scheme": {"http"},
		"X-Forwarded-Ssl":    {"off"},
		"X-Forwarded-Server": {"kept: not a claim spooky knows"},
		"Via":                {"1.1 edge"},
	}
}

func TestToUpstream(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      http.Header
		client  string
		trusted []netip.Prefix
		want    http.Header
	}{
		{
			name:   "first hop",
			in:     http.Header{"Accept": {"*/*"}},
			client: "192.0.2.1:5000",
			want: http.Header{
				"Accept":            {"*/*"},
				"X-Forwarded-For":   {"192.0.2.1"},
				"X-Forwarded-Proto": {"https"},
				"Via":               {"3 spooky"},
			},
		},
		{
			name:    "untrusted client: its claims are dropped",
			in:      spoofed(),
			client:  "192.0.2.1:5000",
			trusted: proxies,
			want: http.Header{
				"Accept":             {"*/*"},
				"X-Forwarded-For":    {"192.0.2.1"},
				"X-Forwarded-Proto":  {"https"},
				"X-Forwarded-Server": {"kept: not a claim spooky knows"},
				"Via":                {"1.1 edge, 3 spooky"},
			},
		},
		{
			name:   "nobody trusted, not even loopback",
			in:     spoofed(),
			client: "127.0.0.1:5000",
			want: http.Header{
				"Accept":             {"*/*"},
				"X-Forwarded-For":    {"127.0.0.1"},
				"X-Forwarded-Proto":  {"https"},
				"X-Forwarded-Server": {"kept: not a claim spooky knows"},
				"Via":                {"1.1 edge, 3 spooky"},
			},
		},
		{
			name:    "trusted proxy: chains extended, the rest kept",
			in:      spoofed(),
			client:  "10.1.2.3:5000",
			trusted: proxies,
			want: http.Header{
				"Accept":             {"*/*"},
				"X-Forwarded-For":    {"203.0.113.7, 127.0.0.1, 10.1.2.3"},
				"Forwarded":          {"for=127.0.0.1;proto=http, for=10.1.2.3;proto=https"},
				"X-Real-Ip":          {"127.0.0.1"},
				"X-Forwarded-Host":   {"admin.internal"},
				"X-Forwarded-Proto":  {"http"},
				"X-Forwarded-Port":   {"80"},
				"X-Forwarded-Prefix": {"/admin"},
				"X-Forwarded-Scheme": {"http"},
				"X-Forwarded-Ssl":    {"off"},
				"X-Forwarded-Server": {"kept: not a claim spooky knows"},
				"Via":                {"1.1 edge, 3 spooky"},
			},
		},
		{
			name:    "trusted proxy that sent nothing",
			in:      http.Header{"Accept": {"*/*"}},
			client:  "198.51.100.9:443",
			trusted: proxies,
			want: http.Header{
				"Accept":            {"*/*"},
				"X-Forwarded-For":   {"198.51.100.9"},
				"X-Forwarded-Proto": {"https"},
				"Via":               {"3 spooky"},
			},
		},
		{
			name:    "trusted IPv6 proxy: Forwarded quotes and brackets it",
			in:      http.Header{"Forwarded": {`for="[2001:db8::1]:4711"`, "for=192.0.2.60;by=203.0.113.43"}},
			client:  "[2001:db8:f::2]:443",
			trusted: proxies,
			want: http.Header{
				"X-Forwarded-For":   {"2001:db8:f::2"},
				"Forwarded":         {`for="[2001:db8::1]:4711", for=192.0.2.60;by=203.0.113.43, for="[2001:db8:f::2]";proto=https`},
				"X-Forwarded-Proto": {"https"},
				"Via":               {"3 spooky"},
			},
		},
		{
			name:    "IPv4-mapped client matched and written as IPv4",
			in:      http.Header{"X-Forwarded-For": {"203.0.113.7"}},
			client:  "[::ffff:10.0.0.1]:443",
			trusted: proxies,
			want: http.Header{
				"X-Forwarded-For":   {"203.0.113.7, 10.0.0.1"},
				"X-Forwarded-Proto": {"https"},
				"Via":               {"3 spooky"},
			},
		},
		{
			name:    "IPv6 client with a zone: zone dropped",
			in:      http.Header{},
			client:  "[fe80::1%eth0]:443",
			trusted: proxies,
			want: http.Header{
				"X-Forwarded-For":   {"fe80::1"},
				"X-Forwarded-Proto": {"https"},
				"Via":               {"3 spooky"},
			},
		},
		{
			name:    "non-canonical IPv6 written as it came",
			in:      http.Header{},
			client:  "[2001:DB8:0:0::1]:443",
			trusted: proxies,
			want: http.Header{
				"X-Forwarded-For":   {"2001:DB8:0:0::1"},
				"X-Forwarded-Proto": {"https"},
				"Via":               {"3 spooky"},
			},
		},
		{
			name:    "bare IP",
			in:      http.Header{"X-Forwarded-For": {"203.0.113.7"}},
			client:  "10.0.0.1",
			trusted: proxies,
			want: http.Header{
				"X-Forwarded-For":   {"203.0.113.7, 10.0.0.1"},
				"X-Forwarded-Proto": {"https"},
				"Via":               {"3 spooky"},
			},
		},
		{
			name:    "address that does not parse is nobody's",
			in:      http.Header{"X-Forwarded-For": {"203.0.113.7"}},
			client:  "pipe@1",
			trusted: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")},
			want: http.Header{
				"X-Forwarded-For":   {"unknown"},
				"X-Forwarded-Proto": {"https"},
				"Via":               {"3 spooky"},
			},
		},
		{
			name: "later hop, hop-by-hop stripped",
			in: http.Header{
				"X-Forwarded-For": {"203.0.113.7", "198.51.100.2"},
				"Via":             {"1.1 edge"},
				"Connection":      {"close, X-Private"},
				"X-Private":       {"secret"},
				"Keep-Alive":      {"timeout=5"},
				"Te":              {"trailers"},
			},
			client:  "[2001:db8:f::1]:443",
			trusted: proxies,
			want: http.Header{
				"X-Forwarded-For":   {"203.0.113.7, 198.51.100.2, 2001:db8:f::1"},
				"X-Forwarded-Proto": {"https"},
				"Via":               {"1.1 edge, 3 spooky"},
				"Te":                {"trailers"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			headers.ToUpstream(tc.in, tc.client, tc.trusted, headers.ViaHTTP3)
			if !reflect.DeepEqual(tc.in, tc.want) {
				t.Fatalf("got  %v\nwant %v", tc.in, tc.want)
			}
		})
	}
}

// TestToUpstreamAllocs holds the common case, a client that is not a
// proxy and sent no forwarding fields, to the one allocation its
// X-Forwarded-For value needs.
func TestToUpstreamAllocs(t *testing.T) {
	h := http.Header{"Accept": {"*/*"}, "User-Agent": {"test"}, "Te": {"trailers"}}
	allocs := testing.AllocsPerRun(100, func() {
		headers.ToUpstream(h, "192.0.2.1:5000", proxies, headers.ViaHTTP3)
		delete(h, "X-Forwarded-For")
		delete(h, "Via")
	})
	if allocs > 1 {
		t.Fatalf("ToUpstream allocates %v times per request, want at most 1", allocs)
	}
}

// FuzzToUpstream checks, for any client address and forwarding fields,
// that an untrusted client's claims never reach the upstream and a trusted
// proxy's are kept whole, with this hop last.
func FuzzToUpstream(f *testing.F) {
	f.Add("192.0.2.1:5000", "203.0.113.7", "for=1.2.3.4", "x", "http")
	f.Add("10.0.0.1:5000", "203.0.113.7, 127.0.0.1", `for="[::1]"`, "h", "")
	f.Add("[2001:db8:f::1]:443", "", "", "", "")
	f.Add("[::ffff:10.9.9.9]:1", "a\nb", "c\nd", "", "https")
	f.Add("[fe80::1%eth0]:443", "", "for=x", "", "")
	f.Add("garbage", "1", "2", "3", "4")
	f.Fuzz(func(t *testing.T, client, xff, fwd, host, proto string) {
		h := http.Header{}
		addLines := func(name, v string) {
			if v == "" {
				return
			}
			for line := range strings.SplitSeq(v, "\n") {
				h.Add(name, line)
			}
		}
		addLines("X-Forwarded-For", xff)
		addLines("Forwarded", fwd)
		addLines("X-Forwarded-Host", host)
		addLines("X-Forwarded-Proto", proto)
		addLines("X-Real-Ip", host)
		before := h.Clone()

		headers.ToUpstream(h, client, proxies, headers.ViaHTTP3)

		got := h["X-Forwarded-For"]
		if len(got) != 1 {
			t.Fatalf("X-Forwarded-For = %q, want one line", got)
		}
		if _, ok := h["X-Forwarded-Proto"]; !ok {
			t.Fatalf("no X-Forwarded-Proto: %v", h)
		}
		self := got[0]
		if i := strings.LastIndex(self, ", "); i >= 0 {
			self = self[i+len(", "):]
		}
		if ip, err := netip.ParseAddr(self); self != "unknown" && (err != nil || ip.Zone() != "" || ip.Is4In6()) {
			t.Fatalf("this hop is written %q, not a plain address", self)
		}
		ip, _ := netip.ParseAddr(self)
		trusted := false
		for _, p := range proxies {
			trusted = trusted || p.Contains(ip)
		}
		if !trusted {
			if len(h) != 3 || h["X-Forwarded-Proto"][0] != "https" || got[0] != self {
				t.Fatalf("untrusted %q: %v kept claims from %v", client, h, before)
			}
			return
		}
		if prior := before["X-Forwarded-For"]; len(prior) > 0 && got[0] != strings.Join(prior, ", ")+", "+self {
			t.Fatalf("X-Forwarded-For %q from %q", got[0], prior)
		}
		if prior := before["Forwarded"]; len(prior) > 0 && !strings.HasPrefix(h.Get("Forwarded"), strings.Join(prior, ", ")+", for=") {
			t.Fatalf("Forwarded %q from %q", h.Get("Forwarded"), prior)
		}
		for _, name := range []string{"X-Forwarded-Host", "X-Real-Ip"} {
			if !reflect.DeepEqual(h[name], before[name]) {
				t.Fatalf("%s = %q from a trusted proxy, was %q", name, h[name], before[name])
			}
		}
	})
}

func BenchmarkToUpstream(b *testing.B) {
	h := http.Header{"Accept": {"*/*"}, "User-Agent": {"bench"}, "Te": {"trailers"}}
	b.ReportAllocs()
	for b.Loop() {
		headers.ToUpstream(h, "192.0.2.1:5000", proxies, headers.ViaHTTP3)
		delete(h, "X-Forwarded-For")
		delete(h, "Via")
	}
}

// BenchmarkToUpstreamTrusted is a request through a trusted proxy that
// sent X-Forwarded-For and Forwarded.
func BenchmarkToUpstreamTrusted(b *testing.B) {
	xff, fwd := []string{"203.0.113.7"}, []string{"for=203.0.113.7"}
	h := http.Header{"Accept": {"*/*"}, "User-Agent": {"bench"}, "Te": {"trailers"}}
	b.ReportAllocs()
	for b.Loop() {
		h["X-Forwarded-For"], h["Forwarded"] = xff, fwd
		headers.ToUpstream(h, "10.0.0.1:5000", proxies, headers.ViaHTTP3)
		delete(h, "Via")
	}
}

func TestClientIP(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}
	for _, tc := range []struct {
		name string
		fwd  []string
		addr string
		want string
	}{
		{"untrusted peer: its own address, whatever it claims", []string{"203.0.113.9, 192.0.2.1"}, "192.0.2.1:5000", "192.0.2.1"},
		{"trusted peer: the nearest untrusted hop", []string{"198.51.100.7, 203.0.113.9, 10.0.0.2"}, "10.0.0.2:5000", "203.0.113.9"},
		{"over several lines", []string{"198.51.100.7", "203.0.113.9, 10.1.1.1", "10.0.0.2"}, "10.0.0.2:5000", "203.0.113.9"},
		{"trusted IPv6 peer", []string{"203.0.113.9, 2001:db8::5"}, "[2001:db8::5]:443", "203.0.113.9"},
		{"every hop trusted: the farthest", []string{"10.9.9.9, 10.0.0.2"}, "10.0.0.2:5000", "10.9.9.9"},
		{"a hop that is no address is the client's claim", []string{"unknown, 10.0.0.2"}, "10.0.0.2:5000", "unknown"},
		{"no field: the peer", nil, "10.0.0.2:5000", "10.0.0.2"},
	} {
		if got := headers.ClientIP(tc.fwd, tc.addr, trusted); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	fwd := []string{"198.51.100.7, 203.0.113.9, 10.0.0.2"}
	if n := testing.AllocsPerRun(100, func() { headers.ClientIP(fwd, "10.0.0.2:5000", trusted) }); n != 0 {
		t.Errorf("%v allocations", n)
	}
}

func TestViaNamesTheProtocolReceived(t *testing.T) {
	for _, tc := range []struct {
		major, minor int
		want         string
	}{{3, 0, "3 spooky"}, {2, 0, "2 spooky"}, {1, 1, "1.1 spooky"}, {1, 0, "1.0 spooky"}} {
		r := &http.Request{ProtoMajor: tc.major, ProtoMinor: tc.minor}
		h := http.Header{"Via": {"1.1 edge"}}
		headers.ToUpstream(h, "192.0.2.1:5000", nil, headers.ViaFor(r))
		if got := h.Get("Via"); got != "1.1 edge, "+tc.want {
			t.Errorf("HTTP/%d.%d: Via %q, want %q", tc.major, tc.minor, got, "1.1 edge, "+tc.want)
		}
	}
}

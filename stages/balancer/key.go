package balancer

import (
	"net/netip"
	"strings"

	"spooky/config"
	"spooky/envelope"
	"spooky/headers"
)

// requestKey hashes what hash_on names in e's request. It reports false
// when the request has no such value; the hash policies then fall back to
// round robin. The client's IP is the one behind trusted proxies, so that a
// proxy in front of spooky does not send all its clients to one endpoint.
// It allocates nothing.
func requestKey(on config.HashOn, e *envelope.Envelope, trusted []netip.Prefix) (uint64, bool) {
	r := e.Request
	var v string
	switch on.Source {
	case "header":
		if vs := r.Header[on.Name]; len(vs) > 0 {
			v = vs[0]
		}
	case "cookie":
		v = cookieValue(r.Header["Cookie"], on.Name)
	case "query":
		v = queryValue(r.URL.RawQuery, on.Name)
	case "client_ip":
		v = headers.ClientIP(r.Header["X-Forwarded-For"], e.ClientAddr, trusted)
	case "path":
		v = r.URL.Path
	case "authority":
		v = r.Host
	}
	if v == "" {
		return 0, false
	}
	return HashKey(v), true
}

// cookieValue finds name's value in Cookie header lines without parsing
// every cookie into a slice, as http.Request.Cookie would.
func cookieValue(lines []string, name string) string {
	for _, line := range lines {
		for part := range strings.SplitSeq(line, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
			if ok && k == name {
				return strings.Trim(v, `"`)
			}
		}
	}
	return ""
}

// queryValue finds name's raw (still escaped) value in a query string; the
// escaped form hashes as well as the plain one, and is cheaper.
func queryValue(rawQuery, name string) string {
	for part := range strings.SplitSeq(rawQuery, "&") {
		k, v, _ := strings.Cut(part, "=")
		if k == name {
			return v
		}
	}
	return ""
}

package headers

import (
	"net/http"
	"net/netip"
	"strings"
)

// The elements spooky adds to Via (RFC 9110 §7.6.3): the protocol the
// request was received in, and spooky's pseudonym.
const (
	ViaHTTP3  = "3 spooky"
	ViaHTTP2  = "2 spooky"
	ViaHTTP11 = "1.1 spooky"
	ViaHTTP10 = "1.0 spooky"
)

// ViaFor is the Via element for a request received as r.
func ViaFor(r *http.Request) string {
	switch {
	case r.ProtoMajor == 3:
		return ViaHTTP3
	case r.ProtoMajor == 2:
		return ViaHTTP2
	case r.ProtoMinor == 0:
		return ViaHTTP10
	}
	return ViaHTTP11
}

// ToUpstream prepares request headers for the upstream hop: it strips
// connection-specific fields and records this hop. clientAddr is the
// client's host:port as the listener's socket reports it; trusted lists the
// proxies whose word about their own clients is taken.
//
// From a client in trusted, spooky adds to what the proxy said: the
// client's address is appended to X-Forwarded-For, and to Forwarded as an
// element "for=...;proto=https" (RFC 7239 §4, an IPv6 address bracketed and
// quoted as §6 asks) when the proxy sent Forwarded; spooky does not start a
// Forwarded field of its own. The other forwarding fields
// (X-Forwarded-Proto, X-Forwarded-Host, X-Real-IP, ...) are kept.
//
// From any other client, whatever it claims is dropped: X-Forwarded-For
// becomes the client's address alone and the fields in claims are removed.
//
// Either way X-Forwarded-Proto is https unless a trusted proxy set it, and
// via (ViaFor the request) is appended to Via.
func ToUpstream(h http.Header, clientAddr string, trusted []netip.Prefix, via string) {
	StripHopByHop(h)
	ip, text := clientIP(clientAddr)
	if isTrusted(ip, trusted) {
		h["X-Forwarded-For"] = appendElement(h["X-Forwarded-For"], text)
		if prior := h["Forwarded"]; len(prior) > 0 {
			if ip.Is6() {
				h["Forwarded"] = appendElement(prior, `for="[`, text, `]";proto=https`)
			} else {
				h["Forwarded"] = appendElement(prior, "for=", text, ";proto=https")
			}
		}
		if _, ok := h["X-Forwarded-Proto"]; !ok {
			h["X-Forwarded-Proto"] = forwardedProto
		}
	} else {
		for _, name := range claims {
			delete(h, name)
		}
		h["X-Forwarded-For"] = []string{text}
		h["X-Forwarded-Proto"] = forwardedProto
	}
	if prior := h["Via"]; len(prior) > 0 {
		h["Via"] = appendElement(prior, via)
	} else {
		h["Via"] = viaOnly(via)
	}
}

// claims lists the fields, in canonical form, by which a proxy speaks for
// its client, apart from X-Forwarded-For and X-Forwarded-Proto, which spooky
// sets: who the client is (RFC 7239 Forwarded, X-Real-IP) and what it asked
// for (host, port, path prefix and scheme, as frameworks such as Spring,
// ASP.NET Core and Rack read them to build URLs). A fixed list, since
// deleting a few names costs less than walking every field of a request.
var claims = []string{
	"Forwarded",
	"X-Real-Ip",
	"X-Forwarded-Host",
	"X-Forwarded-Port",
	"X-Forwarded-Prefix",
	"X-Forwarded-Scheme",
	"X-Forwarded-Ssl",
}

// Header values that never change are shared, not made per request;
// nothing downstream writes to a header value slice.
var (
	forwardedProto = []string{"https"}
	viaOnlyHTTP3   = []string{ViaHTTP3}
	viaOnlyHTTP2   = []string{ViaHTTP2}
	viaOnlyHTTP11  = []string{ViaHTTP11}
)

// viaOnly is Via holding via alone.
func viaOnly(via string) []string {
	switch via {
	case ViaHTTP3:
		return viaOnlyHTTP3
	case ViaHTTP2:
		return viaOnlyHTTP2
	case ViaHTTP11:
		return viaOnlyHTTP11
	}
	return []string{via}
}

// appendElement appends the element that the parts make to the
// comma-separated list that the field lines prior make together, as one
// line.
func appendElement(prior []string, parts ...string) []string {
	if len(prior) == 0 && len(parts) == 1 {
		return []string{parts[0]}
	}
	n := 0
	for _, p := range prior {
		n += len(p) + len(", ")
	}
	for _, p := range parts {
		n += len(p)
	}
	var b strings.Builder
	b.Grow(n)
	for _, p := range prior {
		b.WriteString(p)
		b.WriteString(", ")
	}
	for _, p := range parts {
		b.WriteString(p)
	}
	return []string{b.String()}
}

// clientIP parses the address part of clientAddr, a host:port or a bare
// IP; the port is not looked at. An IPv4-mapped address is unmapped and a
// zone dropped, so that 192.0.2.1 is matched and written alike whichever
// socket family it came in on. text is the address as X-Forwarded-For
// writes it: otherwise a part of clientAddr, so that the common case
// allocates nothing. An address that does not parse is the zero Addr,
// written "unknown" (RFC 7239 §6.3); no prefix contains it.
func clientIP(clientAddr string) (ip netip.Addr, text string) {
	text = clientAddr
	if rest, ok := strings.CutPrefix(clientAddr, "["); ok {
		text, _, _ = strings.Cut(rest, "]")
	} else if i := strings.IndexByte(clientAddr, ':'); i >= 0 && i == strings.LastIndexByte(clientAddr, ':') {
		text = clientAddr[:i] // IPv4:port; more colons make a bare IPv6
	}
	ip, err := netip.ParseAddr(text)
	if err != nil {
		return netip.Addr{}, "unknown"
	}
	if ip.Is4In6() || ip.Zone() != "" {
		ip = ip.Unmap().WithZone("")
		return ip, ip.String()
	}
	// Written as it came: ParseAddr takes only the canonical dotted quad,
	// and the listener's IPv6 addresses are canonical already (RFC 5952, as
	// net.IP.String writes them); making sure would cost more than the rest
	// of the parse.
	return ip, text
}

// isTrusted reports whether ip is in one of the prefixes.
func isTrusted(ip netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// ClientIP is the address of the client a request comes from, as the
// upstream should believe it: the connection's own address (clientAddr,
// host:port) unless that is a trusted proxy, and then the nearest address
// in X-Forwarded-For (fwd, the field's lines; walked from its end, as each
// proxy appends) that is not a trusted proxy, or the farthest one when all
// are. Its text is as written; it allocates nothing.
func ClientIP(fwd []string, clientAddr string, trusted []netip.Prefix) string {
	ip, text := clientIP(clientAddr)
	if !isTrusted(ip, trusted) {
		return text
	}
	farthest := text
	for i := len(fwd) - 1; i >= 0; i-- {
		line := fwd[i]
		for line != "" {
			elem := line
			if j := strings.LastIndexByte(line, ','); j >= 0 {
				elem, line = line[j+1:], line[:j]
			} else {
				line = ""
			}
			elem = strings.TrimSpace(elem)
			if elem == "" {
				continue
			}
			a, err := netip.ParseAddr(elem)
			if err != nil || !isTrusted(a.Unmap(), trusted) {
				return elem // a claim spooky cannot place is the client's
			}
			farthest = elem
		}
	}
	return farthest
}

package headers

import (
	"net"
	"net/http"
	"strings"
)

// Via is the pseudonym spooky adds to Via (RFC 9110 §7.6.3); the received
// protocol is HTTP/3, written "3".
const Via = "3 spooky"

// ToUpstream prepares request headers for the upstream hop: it strips
// connection-specific fields and records this hop in X-Forwarded-For,
// X-Forwarded-Proto and Via. clientAddr is the client's host:port.
func ToUpstream(h http.Header, clientAddr string) {
	StripHopByHop(h)
	ip := clientAddr
	if host, _, err := net.SplitHostPort(clientAddr); err == nil {
		ip = host
	}
	if prior := h["X-Forwarded-For"]; len(prior) > 0 {
		h["X-Forwarded-For"] = []string{strings.Join(prior, ", ") + ", " + ip}
	} else {
		h["X-Forwarded-For"] = []string{ip}
	}
	h["X-Forwarded-Proto"] = forwardedProto
	if prior := h["Via"]; len(prior) > 0 {
		h["Via"] = []string{strings.Join(prior, ", ") + ", " + Via}
	} else {
		h["Via"] = viaOnly
	}
}

// Header values that never change are shared, not made per request;
// nothing downstream writes to a header value slice.
var (
	forwardedProto = []string{"https"}
	viaOnly        = []string{Via}
)

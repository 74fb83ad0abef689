// Package headers owns the rules for HTTP fields that cross spooky: which
// connection-specific fields a proxy must not forward, and the fields that
// record a hop (X-Forwarded-For, Forwarded, X-Forwarded-Proto, Via), which
// it takes from the client only when the client is a trusted proxy. It
// imports nothing of spooky's, so that the HTTP/2 client and the router
// share one list.
package headers

import (
	"net/http"
	"net/textproto"
	"slices"
	"strings"
)

// hopByHop lists the connection-specific fields that RFC 9110 §7.6.1 and
// RFC 9113 §8.2.2 forbid a proxy to forward. TE is handled apart: "trailers"
// is the one value HTTP/2 allows.
var hopByHop = []string{
	"Connection",
	"Keep-Alive",
	"Proxy-Connection",
	"Transfer-Encoding",
	"Upgrade",
}

// teTrailers is the one TE value kept, shared like the values in
// forwarding.go.
var teTrailers = []string{"trailers"}

// IsHopByHop reports whether name, in canonical form, is one of the fixed
// connection-specific fields (TE aside).
func IsHopByHop(name string) bool { return slices.Contains(hopByHop, name) }

// StripHopByHop removes connection-specific fields from h in place: the
// fixed list, every name that Connection lists, and TE unless it is exactly
// "trailers".
func StripHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				delete(h, textproto.CanonicalMIMEHeaderKey(name))
			}
		}
	}
	for _, name := range hopByHop {
		delete(h, name)
	}
	if te, ok := h["Te"]; ok {
		if len(te) == 1 && strings.EqualFold(strings.TrimSpace(te[0]), "trailers") {
			if te[0] != "trailers" {
				h["Te"] = teTrailers
			}
		} else {
			delete(h, "Te")
		}
	}
}

package router

import (
	"errors"
	"net/netip"
	"strings"
)

// Errors the client reads when its request target is malformed (400).
//
// They cover what quic-go's HTTP/3 server lets through (http3/headers.go,
// requestFromHeaders): it already resets the stream of a request whose
// :path does not start with "/" (or is not "*" for OPTIONS) or does not
// parse as a URL, whose :authority is empty or, for http and https,
// carries userinfo, or with any field value holding a control character
// other than horizontal tab. Space, tab and "#" pass it, and :authority is
// otherwise unchecked.
var (
	ErrPathSpace         = errors.New(":path contains a space")
	ErrPathControl       = errors.New(":path contains a control character")
	ErrPathFragment      = errors.New(":path contains a fragment (#)")
	ErrAuthorityUserinfo = errors.New(":authority contains userinfo (@)")
	ErrAuthorityHost     = errors.New(":authority has an invalid host")
	ErrAuthorityPort     = errors.New(":authority has an invalid port")
)

// checkTarget checks the request target as the client sent it: path is
// :path (http.Request.RequestURI), authority is :authority (Host).
func checkTarget(path, authority string) error {
	if err := checkPath(path); err != nil {
		return err
	}
	return checkAuthority(authority)
}

// checkPath rejects a request target with a space or a control character,
// which RFC 9112 §3.2 has no place for and an HTTP/1.1 upstream behind an
// HTTP/2 one could split the request line on, or a fragment, which a client
// never sends (RFC 9110 §7.1) and which would let the router match one path
// and an upstream that cuts at "#" serve another.
func checkPath(path string) error {
	for i := 0; i < len(path); i++ {
		if f := pathFault[path[i]]; f != 0 {
			return pathErrors[f]
		}
	}
	return nil
}

// pathFault classes each byte for checkPath: 0 for a byte it accepts, else
// the index of its error in pathErrors. One load per byte.
var (
	pathErrors = [...]error{nil, ErrPathSpace, ErrPathControl, ErrPathFragment}
	pathFault  = func() (t [256]uint8) {
		for c := range t {
			switch {
			case c == ' ':
				t[c] = 1
			case c < ' ' || c == 0x7f:
				t[c] = 2
			case c == '#':
				t[c] = 3
			}
		}
		return t
	}()
)

// checkAuthority accepts host[:port] (RFC 3986 §3.2), where host is a name
// of letters, digits, "-", "." and "_" (an IPv4 address among them) or an
// IPv6 address in brackets, without a zone, and port is digits worth at
// most 65535, or empty as RFC 3986 allows. That is narrower than RFC 3986's
// reg-name, which also has percent-encoding and sub-delimiters: no DNS name
// needs them, and an upstream that builds URLs from Host should never see
// them. Userinfo is refused on its own (RFC 9110 §4.2.4).
func checkAuthority(authority string) error {
	if strings.IndexByte(authority, '@') >= 0 {
		return ErrAuthorityUserinfo
	}
	host, port, hasPort := authority, "", false
	if rest, ok := strings.CutPrefix(authority, "["); ok {
		addr, after, ok := strings.Cut(rest, "]")
		if !ok {
			return ErrAuthorityHost
		}
		if ip, err := netip.ParseAddr(addr); err != nil || !ip.Is6() || ip.Zone() != "" {
			return ErrAuthorityHost
		}
		if after != "" {
			if after[0] != ':' {
				return ErrAuthorityHost
			}
			port, hasPort = after[1:], true
		}
	} else {
		if i := strings.LastIndexByte(authority, ':'); i >= 0 {
			host, port, hasPort = authority[:i], authority[i+1:], true
		}
		if host == "" {
			return ErrAuthorityHost
		}
		for i := 0; i < len(host); i++ {
			if !hostByte[host[i]] {
				return ErrAuthorityHost
			}
		}
	}
	if hasPort && !validPort(port) {
		return ErrAuthorityPort
	}
	return nil
}

// hostByte marks the bytes of a host name.
var hostByte = func() (t [256]bool) {
	for c := range t {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '.' || c == '_'
	}
	return t
}()

// validPort reports whether port is digits worth at most 65535; empty is
// valid.
func validPort(port string) bool {
	n := 0
	for i := 0; i < len(port); i++ {
		c := port[i]
		if c < '0' || c > '9' {
			return false
		}
		if n = n*10 + int(c-'0'); n > 65535 {
			return false
		}
	}
	return true
}

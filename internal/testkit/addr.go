package testkit

import (
	"net"
	"testing"
)

// FreeAddr returns a loopback address on network ("tcp" or "udp") that
// nothing is bound to: one a test binds later, a config names before its
// server starts, or a dial is refused at. The port was free a moment ago;
// another process could take it meanwhile, which on loopback is rare.
func FreeAddr(t testing.TB, network string) string {
	t.Helper()
	switch network {
	case "tcp":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	case "udp":
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		return pc.LocalAddr().String()
	}
	t.Fatalf("testkit: FreeAddr on network %q; want tcp or udp", network)
	return ""
}

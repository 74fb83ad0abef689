package listener

import (
	"log/slog"
	"net"
	"strings"
	"testing"
)

// TestSmallUDPBuffersAreWarnedOfOnce: a socket whose buffers the kernel
// keeps small gets one warning that names the sysctls to raise.
func TestSmallUDPBuffersAreWarnedOfOnce(t *testing.T) {
	var logged strings.Builder
	l := &Listener{log: slog.New(slog.NewTextHandler(&logged, nil))}
	for range 2 {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadBuffer(64 << 10)
		c.SetWriteBuffer(64 << 10)
		l.checkUDPBuffers(c)
		c.Close()
	}
	if n := strings.Count(logged.String(), "net.core.rmem_max"); n != 1 {
		t.Fatalf("warned %d times:\n%s", n, logged.String())
	}
}

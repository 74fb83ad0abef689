package listener

import (
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// wantUDPBuffer is the UDP socket buffer size quic-go asks the kernel for
// (7 MiB): smaller buffers drop packets at high rates, which QUIC then
// takes for congestion.
const wantUDPBuffer = 7 << 20

// quietQUICGoBufferWarning turns off quic-go's own warning about small
// UDP buffers, which it prints through the standard log, unstructured:
// checkUDPBuffers says it through the daemon's logger instead.
func quietQUICGoBufferWarning() {
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
}

// checkUDPBuffers logs one warning, naming the sysctls, when the kernel
// kept the socket's buffers below what quic-go asked for. quic-go has
// tried by then, and its own warning is turned off.
func (l *Listener) checkUDPBuffers(c *net.UDPConn) {
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	var rcv, snd int
	raw.Control(func(fd uintptr) {
		rcv, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		snd, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	})
	if rcv >= wantUDPBuffer && snd >= wantUDPBuffer {
		return
	}
	l.udpWarned.Do(func() {
		l.log.Warn("the kernel keeps UDP socket buffers below what QUIC needs at high rates; raise them with sysctl -w net.core.rmem_max=7340032 net.core.wmem_max=7340032 (or run spooky with CAP_NET_ADMIN)",
			"receive_buffer", rcv, "send_buffer", snd, "wanted", wantUDPBuffer)
	})
}

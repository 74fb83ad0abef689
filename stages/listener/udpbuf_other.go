//go:build !linux

package listener

import "net"

// checkUDPBuffers is Linux's only: elsewhere quic-go's own warning stands.
func (l *Listener) checkUDPBuffers(*net.UDPConn) {}

func quietQUICGoBufferWarning() {}

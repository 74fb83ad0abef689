package listener

import (
	"testing"
	"time"

	"spooky/config"
)

func TestQUICConfigOfListenQUIC(t *testing.T) {
	q := config.QUIC{IdleTimeout: 45 * time.Second, KeepAlive: 15 * time.Second, MaxStreamWindow: 256 << 10,
		MaxConnectionWindow: 4 << 20, Allow0RTT: true, MaxStreams: 50}
	c := quicConfigOf(q)
	if c.MaxIdleTimeout != 45*time.Second || c.KeepAlivePeriod != 15*time.Second || c.MaxIncomingStreams != 50 || !c.Allow0RTT {
		t.Errorf("config %+v", c)
	}
	// A window below quic-go's initial one starts at it, not above it.
	if c.InitialStreamReceiveWindow != 256<<10 || c.MaxStreamReceiveWindow != 256<<10 {
		t.Errorf("stream windows %d..%d, want 256 KiB", c.InitialStreamReceiveWindow, c.MaxStreamReceiveWindow)
	}
	if c.InitialConnectionReceiveWindow != 768<<10 || c.MaxConnectionReceiveWindow != 4<<20 {
		t.Errorf("connection windows %d..%d", c.InitialConnectionReceiveWindow, c.MaxConnectionReceiveWindow)
	}
}

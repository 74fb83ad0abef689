package h2

import (
	"math"

	"golang.org/x/net/http2"
)

// applySettings takes the peer's settings (RFC 9113 §6.5.2). A new initial
// window changes the send window of every open stream by the difference,
// once a frame, whatever number of times the frame sets it.
// A new SETTINGS_HEADER_TABLE_SIZE is returned, or -1, for ackSettings.
func (c *Conn) applySettings(f *http2.SettingsFrame) (int64, error) {
	tableSize := int64(-1)
	window := int64(-1)
	c.mu.Lock()
	defer c.mu.Unlock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingEnablePush:
			if s.Val != 0 {
				// Only a client may offer push (RFC 9113 §6.5.2).
				return protocolError("SETTINGS_ENABLE_PUSH=%d from a server", s.Val)
			}
		case http2.SettingMaxConcurrentStreams:
			c.maxStreams = int(min(s.Val, defaultMaxStreams))
		case http2.SettingInitialWindowSize:
			window = int64(s.Val)
		case http2.SettingMaxFrameSize:
			c.peerFrameSize = int(s.Val)
		case http2.SettingMaxHeaderListSize:
			c.peerMaxHeader = s.Val
		case http2.SettingHeaderTableSize:
			tableSize = int64(s.Val)
		}
		return nil
	})
	if err != nil || window < 0 {
		return tableSize, err
	}
	delta := window - int64(c.peerWindow)
	c.peerWindow = int32(window)
	for _, st := range c.streams {
		st.sendWindow += delta
		if st.sendWindow > math.MaxInt32 {
			return tableSize, http2.ConnectionError(http2.ErrCodeFlowControl)
		}
	}
	c.flow.Broadcast()
	return tableSize, nil
}

// ackSettings acknowledges the peer's settings and, in the same hold of the
// write side, applies a new header table size to the encoder: the size
// update it then emits must open the first header block after the ACK
// (RFC 7541 §4.2). Called holding the write side.
func (c *Conn) ackSettings(tableSize int64) error {
	if err := c.fr.WriteSettingsAck(); err != nil {
		return err
	}
	if tableSize >= 0 {
		c.henc.SetMaxDynamicTableSizeLimit(uint32(tableSize))
	}
	return nil
}

// frameSize is the peer's SETTINGS_MAX_FRAME_SIZE.
func (c *Conn) frameSize() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peerFrameSize
}

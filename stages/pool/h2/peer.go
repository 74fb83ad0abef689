package h2

// PeerMaxStreams is the peer's SETTINGS_MAX_CONCURRENT_STREAMS as last
// applied (capped at what the connection uses at most): 0 means the peer
// takes no new streams on this connection for now (RFC 9113 §6.5.2).
func (c *Conn) PeerMaxStreams() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maxStreams
}

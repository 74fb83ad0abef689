package main

import (
	"net"
	"sync"
	"testing"
)

// handshakeHold is a UDP relay between one client and spooky that drops
// the client's Handshake packets (its Finished) and lets
// every other packet through: spooky's side of the handshake never
// completes, so every request the client sent in early data is seen as
// early, as a replayed flight's always are.
type handshakeHold struct {
	conn *net.UDPConn // the client's side
	out  *net.UDPConn // spooky's side

	mu     sync.Mutex
	client *net.UDPAddr
}

func startHandshakeHold(t *testing.T, spookyAddr string) *handshakeHold {
	t.Helper()
	up, err := net.ResolveUDPAddr("udp", spookyAddr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	out, err := net.DialUDP("udp", nil, up)
	if err != nil {
		t.Fatal(err)
	}
	h := &handshakeHold{conn: c, out: out}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		c.Close()
		out.Close()
		wg.Wait()
	})
	wg.Go(func() { // client → spooky
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			pkt := append([]byte(nil), buf[:n]...)
			h.mu.Lock()
			h.client = from
			h.mu.Unlock()
			pkt = withoutHandshake(pkt)
			if len(pkt) > 0 {
				out.Write(pkt)
			}
		}
	})
	wg.Go(func() { // spooky → client
		buf := make([]byte, 65536)
		for {
			n, err := out.Read(buf)
			if err != nil {
				return
			}
			h.mu.Lock()
			client := h.client
			h.mu.Unlock()
			if client != nil {
				c.WriteToUDP(buf[:n], client)
			}
		}
	})
	return h
}

// withoutHandshake returns the datagram d without the Handshake packets
// coalesced in it; what follows the long-header packets (a short-header
// packet, which has no length) is kept as it is.
func withoutHandshake(d []byte) []byte {
	var kept []byte
	for _, p := range longPackets(d) {
		if (p[0]>>4)&3 != 2 {
			kept = append(kept, p...)
		}
		d = d[len(p):]
	}
	return append(kept, d...)
}

// longPackets splits off the long-header packets coalesced at the front of
// the datagram d (RFC 9000 §12.2, §17.2): QUIC v1's Initial (type 0), 0-RTT
// (1) and Handshake (2) packets.
func longPackets(d []byte) [][]byte {
	var ps [][]byte
	for len(d) > 6 && d[0]&0x80 != 0 {
		typ := (d[0] >> 4) & 3
		if typ == 3 { // Retry, from servers only
			break
		}
		i := 5        // first byte, version
		for range 2 { // destination, then source connection ID
			if i >= len(d) {
				return ps
			}
			i += 1 + int(d[i])
		}
		if typ == 0 { // Initial: the token
			n, w := varint(d[i:])
			i += w + int(n)
		}
		n, w := varint(d[i:])
		end := i + w + int(n)
		if w == 0 || end > len(d) {
			break
		}
		ps = append(ps, d[:end])
		d = d[end:]
	}
	return ps
}

// varint decodes a QUIC variable-length integer and its width, 0 if b is
// too short (RFC 9000 §16).
func varint(b []byte) (uint64, int) {
	if len(b) == 0 {
		return 0, 0
	}
	w := 1 << (b[0] >> 6)
	if len(b) < w {
		return 0, 0
	}
	v := uint64(b[0] & 0x3f)
	for _, c := range b[1:w] {
		v = v<<8 | uint64(c)
	}
	return v, w
}

func (h *handshakeHold) addr() string { return h.conn.LocalAddr().String() }

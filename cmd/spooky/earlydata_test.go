package main

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"spooky/bench/backend"
	"spooky/internal/testkit"
)

// handshakeHold is a UDP relay between one client and spooky that drops
// the client's Handshake packets (its Finished) and lets
// every other packet through: spooky's side of the handshake never
// completes, so every request the client sent in early data is seen as
// early, as a replayed flight's always are.
type handshakeHold struct {
	conn *net.UDPConn // the client's side
	out  *net.UDPConn // spooky's side

	mu       sync.Mutex
	client   *net.UDPAddr
	answered bool     // spooky has sent the client something
	flight   [][]byte // the client's first flight: Initial packets until answered, 0-RTT packets
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
			h.record(pkt)
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
			h.answered = true
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

// record keeps, of a datagram the client sent, what an attacker would
// replay: its 0-RTT packets, and its Initial packets until spooky first
// answered (later ones acknowledge spooky's, which a replay's new
// connection never sent).
func (h *handshakeHold) record(d []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range longPackets(d) {
		if typ := (p[0] >> 4) & 3; typ == 1 || typ == 0 && !h.answered {
			h.flight = append(h.flight, p)
		}
	}
}

// replay sends the client's first flight, as recorded, from the socket c:
// what an attacker who recorded it can do.
func (h *handshakeHold) replay(c *net.UDPConn, to *net.UDPAddr) {
	h.mu.Lock()
	flight := h.flight
	h.mu.Unlock()
	for _, p := range flight {
		c.WriteToUDP(p, to)
	}
}

// TestEarlyDataIsNeverReplayedUpstream: a GET sent in 0-RTT goes upstream
// with Early-Data: 1, a POST sent in 0-RTT gets 425 and never reaches the
// upstream (RFC 8470).
func TestEarlyDataIsNeverReplayedUpstream(t *testing.T) {
	var posts, earlyGets atomic.Int64
	counting := testkit.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost:
			posts.Add(1)
		case r.URL.Path == "/headers" && r.Header.Get("Early-Data") == "1":
			earlyGets.Add(1)
		}
		backend.Handler("b1").ServeHTTP(w, r)
	}), testkit.H2COptions{})
	url, d := startSpooky(t, spookyConfig(allRoute, map[string][]string{"app": {counting}}))
	spookyAddr := d.listener.Addr().String()

	cache := tls.NewLRUClientSessionCache(4)
	// A token from the first connection (NEW_TOKEN) validates the
	// client's address on the second, so that spooky's anti-amplification
	// limit (RFC 9000 §8.1) does not hold its answers back while the
	// handshake is.
	tokens := &tokenSignal{TokenStore: quic.NewLRUTokenStore(4, 4), put: make(chan struct{}, 1)}
	tlsConf := func() *tls.Config {
		return &tls.Config{InsecureSkipVerify: true, ServerName: "localhost", ClientSessionCache: cache, NextProtos: []string{http3.NextProtoH3}}
	}
	// A first connection leaves a session ticket that allows 0-RTT.
	first := &http3.Transport{TLSClientConfig: tlsConf(), QUICConfig: &quic.Config{TokenStore: tokens}}
	if resp, body := get(t, &http.Client{Transport: first}, url+"/"); resp.StatusCode != http.StatusOK {
		t.Fatalf("first connection: %d %q", resp.StatusCode, body)
	}
	testkit.Recv(t, tokens.put, "a token from the first connection")
	first.Close()

	hold := startHandshakeHold(t, spookyAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	qc, err := quic.DialAddrEarly(ctx, hold.addr(), tlsConf(), &quic.Config{TokenStore: tokens})
	if err != nil {
		t.Fatal(err)
	}
	defer qc.CloseWithError(0, "")
	cc := (&http3.Transport{}).NewClientConn(qc)
	// send sends a request's head and returns a function that reads its
	// response. Both early requests are sent before any answer is read:
	// once the client has the server's handshake flight it sends 1-RTT
	// packets, which spooky may not read before the handshake completes.
	send := func(method, path string) func() *http.Response {
		t.Helper()
		str, err := cc.OpenRequestStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(method, "https://"+spookyAddr+path, nil)
		if err := str.SendRequestHeader(req); err != nil {
			t.Fatal(err)
		}
		return func() *http.Response {
			resp, err := str.ReadResponse()
			if err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			return resp
		}
	}
	post, _ := send(http.MethodPost, "/echo"), send(http.MethodGet, "/headers")
	if resp := post(); resp.StatusCode != http.StatusTooEarly {
		t.Fatalf("POST in early data: %d; want 425", resp.StatusCode)
	}
	// The GET is judged by what the upstream saw. Its answer is not
	// waited for: with the handshake held, spooky's unacknowledged
	// handshake data can fill its congestion window on a loaded machine.
	testkit.WaitFor(t, "the early GET to reach the upstream marked Early-Data: 1", func() bool { return earlyGets.Load() == 1 })
	if n := posts.Load(); n != 0 {
		t.Fatalf("%d POSTs sent in early data reached the upstream", n)
	}

	if !qc.ConnectionState().Used0RTT {
		t.Fatal("the connection did not use 0-RTT; the test proved nothing")
	}

	// Whoever recorded that first flight replays it from another
	// address. Once spooky has dropped the original connection (its
	// handshake never completed), the replay is a new connection with a
	// valid ticket: its GET goes upstream again, marked Early-Data: 1,
	// and its POST never does. It is resent until spooky takes it.
	qc.CloseWithError(0, "")
	// The original connection goes when its handshake times out (the
	// client's close is in 1-RTT packets, which spooky may not read
	// before the handshake completes); a replay before that would be
	// taken for the original's packets and keep it alive.
	testkit.WaitFor(t, "spooky to drop the original connection", func() bool { return d.listener.Inspect().Connections == 0 })
	replayer, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer replayer.Close()
	to, err := net.ResolveUDPAddr("udp", spookyAddr)
	if err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	replayed, stop := context.WithTimeout(context.Background(), 30*time.Second)
	defer stop()
	for earlyGets.Load() < 2 {
		hold.replay(replayer, to)
		select {
		case <-tick.C:
		case <-replayed.Done():
			t.Fatal("the replayed flight's GET never reached the upstream")
		}
	}
	if n := posts.Load(); n != 0 {
		t.Fatalf("a replayed POST reached the upstream %d times", n)
	}
}

// tokenSignal is a token store that says when a token arrived, so that
// the first connection is not closed before spooky's NEW_TOKEN reached it.
type tokenSignal struct {
	quic.TokenStore
	put chan struct{}
}

func (s *tokenSignal) Put(key string, token *quic.ClientToken) {
	s.TokenStore.Put(key, token)
	select {
	case s.put <- struct{}{}:
	default:
	}
}

package h2

import (
	"bufio"
	"fmt"

	"golang.org/x/net/http2"
)

// Bounds on one header block (a HEADERS frame and the CONTINUATION frames
// that follow it, RFC 9113 §4.3). The framer reads a block whole within
// one ReadFrame and bounds the header list it decodes
// (SETTINGS_MAX_HEADER_LIST_SIZE), but not the frames: empty
// CONTINUATIONs, or fragments of HPACK table size updates, which decode to
// no field, can go on for ever, holding the read loop and every stream
// behind it (the attack of CVE-2023-45288 and CVE-2024-27316 in other
// servers).
const (
	// maxHeaderBlockFrames: a block of maxHeaderListSize cut at 16 KiB,
	// the smallest SETTINGS_MAX_FRAME_SIZE there is, takes 64 frames;
	// peers cut at the frame size they may use (1 MiB unless
	// Config.MaxReadFrameSize says otherwise), so an ordinary response
	// head takes one frame, a large one two. nghttp2 allows 8
	// CONTINUATIONs.
	maxHeaderBlockFrames = 128
	// maxHeaderBlockBytes: HPACK never makes a header list larger than
	// SETTINGS_MAX_HEADER_LIST_SIZE counts it (32 bytes a field), so
	// twice that leaves room for padding and HPACK instructions.
	maxHeaderBlockBytes = 2 * maxHeaderListSize
)

// frameGuard reads the socket for the framer, watching the frame headers
// go by: it fails the read that would go beyond a header block's bounds,
// which ends the connection, and it remembers the type of the frame being
// read.
type frameGuard struct {
	r        *bufio.Reader
	left     int             // bytes of the current frame not read yet; 0 at a frame's start
	lastType http2.FrameType // the type of the frame read last
	inBlock  bool            // CONTINUATION frames are due
	frames   int             // the frames of the current header block
	bytes    int             // their payload bytes
}

const frameHeaderLen = 9

func (g *frameGuard) Read(p []byte) (int, error) {
	if g.left == 0 {
		h, err := g.r.Peek(frameHeaderLen)
		if err != nil {
			// The stream ends within a frame header: the framer
			// gets what there is, then the error.
			if len(h) == 0 {
				return 0, err
			}
			return g.r.Read(p[:min(len(p), len(h))])
		}
		length := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
		typ, flags := http2.FrameType(h[3]), http2.Flags(h[4])
		g.left = frameHeaderLen + length
		g.lastType = typ
		switch {
		case typ == http2.FrameHeaders || typ == http2.FramePushPromise:
			g.frames, g.bytes = 1, length
			g.inBlock = !flags.Has(http2.FlagHeadersEndHeaders)
		case typ == http2.FrameContinuation && g.inBlock:
			g.frames++
			g.bytes += length
			g.inBlock = !flags.Has(http2.FlagContinuationEndHeaders)
		default:
			// Anything else inside a block is the framer's to reject.
			g.inBlock = false
		}
		if g.frames > maxHeaderBlockFrames || g.bytes > maxHeaderBlockBytes {
			g.left = 0
			return 0, fmt.Errorf("%w: header block of more than %d frames or %d bytes",
				http2.ConnectionError(http2.ErrCodeEnhanceYourCalm), maxHeaderBlockFrames, maxHeaderBlockBytes)
		}
	}
	n, err := g.r.Read(p[:min(len(p), g.left)])
	g.left -= n
	return n, err
}

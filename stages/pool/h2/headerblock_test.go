package h2

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"testing/iotest"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestHeaderBlockFrames: a response head cut into maxHeaderBlockFrames
// frames is taken; one more frame is a connection error.
func TestHeaderBlockFrames(t *testing.T) {
	for _, frames := range []int{maxHeaderBlockFrames, maxHeaderBlockFrames + 1} {
		t.Run(fmt.Sprint(frames), func(t *testing.T) {
			c, f := startFake(t, Config{})
			ch := goRoundTrip(context.Background(), c, getReq("/"))
			h := f.readRequest()
			block := f.block(":status", "200", "x-big", string(bytes.Repeat([]byte("v"), 4*maxHeaderBlockFrames)))
			cuts := make([]int, frames-1)
			for i := range cuts {
				cuts[i] = len(block) / frames
			}
			f.headerBlock(h.StreamID, true, block, cuts...)
			r := await(t, ch)
			if frames <= maxHeaderBlockFrames {
				if r.err != nil {
					t.Fatalf("head in %d frames: %v", frames, r.err)
				}
				readAll(t, r.resp)
				return
			}
			var ce http2.ConnectionError
			if !errors.As(r.err, &ce) || http2.ErrCode(ce) != http2.ErrCodeEnhanceYourCalm {
				t.Errorf("head in %d frames: %v, want a connection error ENHANCE_YOUR_CALM", frames, r.err)
			}
			if ga := f.expectClosed(); ga == nil || ga.ErrCode != http2.ErrCodeEnhanceYourCalm {
				t.Errorf("client's GOAWAY %+v, want ENHANCE_YOUR_CALM", ga)
			}
		})
	}
}

// TestHeaderBlockFlood: a header block that never ends (CONTINUATION
// frames that are empty, or carry a byte at a time, or only HPACK table
// size updates, none of which x/net's framer bounds) ends the connection
// once it goes beyond maxHeaderBlockFrames frames or maxHeaderBlockBytes
// bytes, however much more the peer would send; the request on it fails
// with the reason. CVE-2023-45288 was this attack.
func TestHeaderBlockFlood(t *testing.T) {
	for _, tc := range []struct {
		name     string
		fragment []byte
		frames   int // the frames read when the block is refused
	}{
		{"empty", nil, maxHeaderBlockFrames + 1},
		{"one byte", []byte{'a'}, maxHeaderBlockFrames + 1},
		{"table size updates", bytes.Repeat([]byte{0x20}, 64<<10), maxHeaderBlockBytes/(64<<10) + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				c, f := startFakePipe(t, Config{})
				f.lenient = true
				ch := goRoundTrip(context.Background(), c, getReq("/"))
				h := f.readRequest()
				go discardClient(f)
				// The first fragment opens a field whose name, 65 662
				// bytes long, the others never finish, except for table
				// size updates, which must open a block.
				first := []byte{0x40, 0x7f, 0xff, 0xff, 0x03}
				if tc.fragment != nil && tc.fragment[0] == 0x20 {
					first = []byte{0x20}
				}
				f.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.StreamID, BlockFragment: first})
				sent := 1
				for !c.Closed() && sent < 100*maxHeaderBlockFrames {
					if f.fr.WriteContinuation(h.StreamID, false, tc.fragment) != nil {
						break
					}
					sent++
				}
				r := await(t, ch)
				var ce http2.ConnectionError
				if !errors.As(r.err, &ce) || http2.ErrCode(ce) != http2.ErrCodeEnhanceYourCalm {
					t.Errorf("request: %v, want a connection error ENHANCE_YOUR_CALM", r.err)
				}
				if !waitClosed(c, time.Second) {
					t.Fatalf("connection open after %d frames of one header block", sent)
				}
				// The read loop has ended: its guard is still.
				if c.guard.frames != tc.frames {
					t.Errorf("the client read %d frames of the block, want %d", c.guard.frames, tc.frames)
				}
			})
		})
	}
}

// discardClient reads and drops what the client sends, so that its GOAWAY
// does not wait on the socket.
func discardClient(f *fake) {
	buf := make([]byte, 32<<10)
	for {
		if _, err := f.nc.Read(buf); err != nil {
			return
		}
	}
}

// TestFrameGuardReads: the guard hands the framer every byte of every
// frame, however the socket cuts them, and the end of the stream as the
// framer expects it: io.EOF between frames, io.ErrUnexpectedEOF within.
func TestFrameGuardReads(t *testing.T) {
	var wire bytes.Buffer
	fr := http2.NewFramer(&wire, nil)
	fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20})
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x88}}) // :status 200
	fr.WriteContinuation(1, false, nil)
	fr.WriteContinuation(1, true, nil)
	big := bytes.Repeat([]byte("d"), 200<<10) // more than the guard's buffer
	fr.WriteData(1, true, big)
	fr.WritePing(false, [8]byte{9})
	whole := wire.Bytes()

	for _, cut := range []int{0, 1, 4, 12} { // bytes cut off the last frame, a PING of 17
		t.Run(fmt.Sprint("cut ", cut), func(t *testing.T) {
			g := &frameGuard{r: bufio.NewReaderSize(iotest.OneByteReader(bytes.NewReader(whole[:len(whole)-cut])), 64<<10)}
			fr := http2.NewFramer(nil, g)
			fr.SetMaxReadFrameSize(1 << 20)
			fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
			var types []http2.FrameType
			var err error
			for {
				var f http2.Frame
				if f, err = fr.ReadFrame(); err != nil {
					break
				}
				types = append(types, f.Header().Type)
				if d, ok := f.(*http2.DataFrame); ok && !bytes.Equal(d.Data(), big) {
					t.Errorf("DATA of %d bytes, want %d", len(d.Data()), len(big))
				}
			}
			want := []http2.FrameType{http2.FrameSettings, http2.FrameHeaders, http2.FrameData, http2.FramePing}
			wantErr := io.EOF
			if cut > 0 {
				want, wantErr = want[:len(want)-1], io.ErrUnexpectedEOF
			}
			if fmt.Sprint(types) != fmt.Sprint(want) || err != wantErr {
				t.Errorf("read %v, then %v; want %v, then %v", types, err, want, wantErr)
			}
		})
	}
}

package h2

import "sync"

// dataBuffer holds a stream's received DATA until its reader takes it, in
// pooled chunks, so that a response costs no allocation for its body.
type dataBuffer struct {
	chunks []*chunk
	size   int // bytes held
}

type chunk struct {
	buf  []byte
	r, w int // read and write offsets into buf
}

// Chunk sizes: a small response fits the first, a bulk one fills the last.
var chunkPools = [...]struct {
	size int
	pool sync.Pool
}{{size: 1 << 10}, {size: 16 << 10}, {size: 64 << 10}}

func getChunk(want int) *chunk {
	i := 0
	for i < len(chunkPools)-1 && chunkPools[i].size < want {
		i++
	}
	if c, ok := chunkPools[i].pool.Get().(*chunk); ok {
		return c
	}
	return &chunk{buf: make([]byte, chunkPools[i].size)}
}

func putChunk(c *chunk) {
	for i := range chunkPools {
		if chunkPools[i].size == len(c.buf) {
			c.r, c.w = 0, 0
			chunkPools[i].pool.Put(c)
			return
		}
	}
}

func (b *dataBuffer) write(p []byte) {
	b.size += len(p)
	for len(p) > 0 {
		var last *chunk
		if n := len(b.chunks); n > 0 && b.chunks[n-1].w < len(b.chunks[n-1].buf) {
			last = b.chunks[n-1]
		} else {
			last = getChunk(len(p))
			b.chunks = append(b.chunks, last)
		}
		n := copy(last.buf[last.w:], p)
		last.w += n
		p = p[n:]
	}
}

func (b *dataBuffer) read(p []byte) int {
	n := 0
	for n < len(p) && len(b.chunks) > 0 {
		c := b.chunks[0]
		m := copy(p[n:], c.buf[c.r:c.w])
		c.r += m
		n += m
		if c.r == c.w {
			b.chunks[0] = nil
			b.chunks = b.chunks[1:]
			putChunk(c)
		}
	}
	b.size -= n
	return n
}

// release drops what is held and returns how many bytes that was.
func (b *dataBuffer) release() int {
	for _, c := range b.chunks {
		putChunk(c)
	}
	n := b.size
	b.chunks, b.size = nil, 0
	return n
}

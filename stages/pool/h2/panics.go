package h2

import (
	"fmt"

	"github.com/sourcegraph/conc/panics"
)

// contain runs f, the body of one of the connection's goroutines (the read
// loop, the flusher, a body sender, the idle check), and turns a panic in
// it into the connection's end: every request on it fails with an error
// that wraps ErrPanic and keeps the panic's value and stack, and Close
// still works. A panic is a bug; the process goes on, the connection does
// not.
//
// The sections that hold c.mu or the write side are short and call no
// code from outside the package (a request body is read holding neither),
// so a panic there would be a bug of this package's own; it would leave
// the lock held and the connection stuck.
func (c *Conn) contain(f func()) {
	if r := panics.Try(f); r != nil {
		c.closeWith(fmt.Errorf("%w: %w", ErrPanic, r.AsError()))
	}
}

// Package mailbox owns the bounded queue between two stages: a data lane for
// work and a priority control lane that a receiver always serves first.
//
// A full data lane is backpressure. Nothing here grows without bound: a sender
// either waits (Send, until its context ends) or is told no at once (TrySend).
package mailbox

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// ErrClosed is returned by Receive once the mailbox is closed and drained.
var ErrClosed = errors.New("mailbox: closed")

// Mailbox is a bounded data lane of T plus a control lane of C. It is safe
// for concurrent use by any number of senders and receivers, and it outlives
// the stages that read it, so queued messages survive a stage restart.
type Mailbox[T, C any] struct {
	data    chan T
	control chan C

	sent     atomic.Uint64
	received atomic.Uint64
	blocked  atomic.Uint64
	dropped  atomic.Uint64

	controlSent     atomic.Uint64
	controlReceived atomic.Uint64
}

// New returns a mailbox whose data lane holds dataCap messages and whose
// control lane holds controlCap. A capacity below 1 is taken as 1: an
// unbuffered lane would turn every send into a rendezvous.
func New[T, C any](dataCap, controlCap int) *Mailbox[T, C] {
	return &Mailbox[T, C]{
		data:    make(chan T, max(dataCap, 1)),
		control: make(chan C, max(controlCap, 1)),
	}
}

// Send puts v on the data lane, waiting for room until ctx ends. A send that
// had to wait is counted as blocked; one that gave up is counted as dropped
// and returns ctx's error. Sending hands v over to the receiver.
func (m *Mailbox[T, C]) Send(ctx context.Context, v T) error {
	if m.trySend(v) {
		return nil
	}
	return m.wait(ctx, v, nil)
}

// SendWithin is Send with an extra bound: it gives up with
// context.DeadlineExceeded after waiting for d. The timer is only made when
// the lane is full, so a send with room costs nothing extra.
func (m *Mailbox[T, C]) SendWithin(ctx context.Context, v T, d time.Duration) error {
	if m.trySend(v) {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	return m.wait(ctx, v, t.C)
}

func (m *Mailbox[T, C]) trySend(v T) bool {
	select {
	case m.data <- v:
		m.sent.Add(1)
		return true
	default:
		return false
	}
}

func (m *Mailbox[T, C]) wait(ctx context.Context, v T, expire <-chan time.Time) error {
	m.blocked.Add(1)
	select {
	case m.data <- v:
		m.sent.Add(1)
		return nil
	case <-ctx.Done():
		m.dropped.Add(1)
		return ctx.Err()
	case <-expire:
		m.dropped.Add(1)
		return context.DeadlineExceeded
	}
}

// TrySend puts v on the data lane if there is room and reports whether it did.
// A refused message is counted as dropped.
func (m *Mailbox[T, C]) TrySend(v T) bool {
	if m.trySend(v) {
		return true
	}
	m.dropped.Add(1)
	return false
}

// SendControl puts c on the control lane, waiting for room until ctx ends.
func (m *Mailbox[T, C]) SendControl(ctx context.Context, c C) error {
	select {
	case m.control <- c:
		m.controlSent.Add(1)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Message is one thing taken from a mailbox: a control message when
// IsControl is set, data otherwise.
type Message[T, C any] struct {
	Data      T
	Control   C
	IsControl bool
}

// Receive waits for the next message until ctx ends. A control message that
// is waiting is always returned before any data.
func (m *Mailbox[T, C]) Receive(ctx context.Context) (Message[T, C], error) {
	select {
	case c := <-m.control:
		m.controlReceived.Add(1)
		return Message[T, C]{Control: c, IsControl: true}, nil
	default:
	}
	select {
	case c := <-m.control:
		m.controlReceived.Add(1)
		return Message[T, C]{Control: c, IsControl: true}, nil
	case v := <-m.data:
		// Control messages that were waiting when Receive was called
		// were served above; one that arrives together with data while
		// we wait was never waiting, so either order is correct.
		m.received.Add(1)
		return Message[T, C]{Data: v}, nil
	case <-ctx.Done():
		return Message[T, C]{}, ctx.Err()
	}
}

// Stats is a point-in-time view of a mailbox's lanes and counters.
type Stats struct {
	DataLen         int    `json:"data_len"`
	DataCap         int    `json:"data_cap"`
	ControlLen      int    `json:"control_len"`
	ControlCap      int    `json:"control_cap"`
	Sent            uint64 `json:"sent"`
	Received        uint64 `json:"received"`
	BlockedSends    uint64 `json:"blocked_sends"`
	Dropped         uint64 `json:"dropped"`
	ControlSent     uint64 `json:"control_sent"`
	ControlReceived uint64 `json:"control_received"`
}

// Stats reads the mailbox's lengths, capacities and counters without
// stopping anybody.
func (m *Mailbox[T, C]) Stats() Stats {
	return Stats{
		DataLen:         len(m.data),
		DataCap:         cap(m.data),
		ControlLen:      len(m.control),
		ControlCap:      cap(m.control),
		Sent:            m.sent.Load(),
		Received:        m.received.Load(),
		BlockedSends:    m.blocked.Load(),
		Dropped:         m.dropped.Load(),
		ControlSent:     m.controlSent.Load(),
		ControlReceived: m.controlReceived.Load(),
	}
}

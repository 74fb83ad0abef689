// Package mailbox owns the bounded queue between two stages: a data lane for
// work and a priority control lane that a receiver always serves first.
//
// A full data lane is backpressure. Nothing here grows without bound: a sender
// either waits (Send, until its context ends) or is told no at once (TrySend).
// The data lane's capacity can be changed while the mailbox is in use
// (Resize), so that a config reload can resize a stage's queue live. Once
// its reader has stopped for good, Close refuses every later send, so that
// nothing is queued where nobody will ever take it.
package mailbox

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Mailbox is a bounded data lane of T plus a control lane of C. It is safe
// for concurrent use by any number of senders and receivers, and it outlives
// the stages that read it, so queued messages survive a stage restart.
//
// The data lane is a ring buffer guarded by mu. A goroutine that has to
// wait for it queues a waiter of its own, with its own channel, in sendq or
// recvq, oldest first, and parks on that channel (and its ctx). A waiter is
// woken only by whoever takes it out of its queue under mu, and that
// goroutine has already done its work for it. Whenever mu is free:
//
//	(S) A sender waits only while the lane has no room: if sendq is not
//	    empty, then n >= size. Whoever makes room (Receive, Resize) moves
//	    the oldest waiting senders' messages onto the lane before
//	    releasing mu, and then wakes them: their sends are done.
//	(R) A receiver waits only while the lane is empty: if recvq is not
//	    empty, then n == 0. A sender that finds a receiver waiting hands
//	    its message to the oldest one instead of queuing it, and wakes it.
//	(C) A receiver queues itself only after finding the control lane empty
//	    while holding mu, and SendControl, once its message is in the lane,
//	    takes mu and pokes the oldest waiting receiver, which then looks at
//	    the control lane again. So a control message never waits while
//	    every receiver sleeps.
//
// (S) and (R) cannot both have waiters, since size >= 1. As with a buffered
// channel, waiting senders keep their turn and never race newcomers for
// room, data goes to the receiver that has waited longest, and a receiver
// that was handed data has it even if its ctx ends as it wakes. No wake-up
// is shared, so none can be lost or taken by the wrong goroutine.
type Mailbox[T, C any] struct {
	mu     sync.Mutex
	closed bool // Close was called: data sends are refused
	// The data lane, guarded by mu: n messages from buf[head] on, wrapping
	// around. len(buf) >= max(size, n); it exceeds size only after Resize
	// shrank the lane below n, until receivers drain it.
	buf          []T
	head, n      int
	size         int // capacity: a sender needs n < size
	sendq, recvq waitq[T]
	sent         uint64
	received     uint64
	blocked      uint64
	dropped      uint64

	waiters sync.Pool // of *waiter[T], so that waiting does not allocate

	control         chan C
	controlSent     atomic.Uint64
	controlReceived atomic.Uint64
}

// New returns a mailbox whose data lane holds dataCap messages and whose
// control lane holds controlCap. A capacity below 1 is taken as 1: an
// unbuffered lane would turn every send into a rendezvous.
func New[T, C any](dataCap, controlCap int) *Mailbox[T, C] {
	size := max(dataCap, 1)
	return &Mailbox[T, C]{
		buf:     make([]T, size),
		size:    size,
		control: make(chan C, max(controlCap, 1)),
	}
}

// Resize changes the data lane's capacity to dataCap; below 1 is taken as
// 1. It is meant for a config reload, and may be called at any time,
// concurrently with anything.
//
// Every message already queued is kept and delivered once, in order. If
// there are more of them than the new capacity, the lane stays over capacity
// until receivers drain it, and senders wait until it is below dataCap. A
// larger capacity lets senders that were waiting for room in, oldest first.
// Resize may allocate a new buffer, so it does not belong on a hot path.
func (m *Mailbox[T, C]) Resize(dataCap int) {
	size := max(dataCap, 1)
	m.mu.Lock()
	m.size = size
	switch {
	case len(m.buf) < size:
		m.reshapeLocked(size)
	case len(m.buf) > size && m.n <= size:
		m.reshapeLocked(size)
	}
	// Otherwise the lane is over capacity: popLocked shrinks buf once it
	// has drained to size.
	admitted := m.admitLocked()
	m.mu.Unlock()
	admitted.wakeAll()
}

// ErrClosed is returned by a send to a mailbox that Close closed, or that
// was waiting for room when it was closed: the message was not taken.
var ErrClosed = errors.New("mailbox: closed")

// Close refuses every data send from now on, including those waiting for
// room, which return ErrClosed. What is already on the lane stays, for a
// final sweep with TryReceive. It is for a mailbox whose readers have
// stopped for good; a closed mailbox stays closed.
func (m *Mailbox[T, C]) Close() {
	m.mu.Lock()
	m.closed = true
	var refused waitList[T]
	for w := m.sendq.head; w != nil; w = m.sendq.head {
		m.sendq.remove(w)
		w.refused = true
		refused.add(w)
	}
	m.mu.Unlock()
	refused.wakeAll()
}

// Send puts v on the data lane, waiting for room until ctx ends. A send that
// had to wait is counted as blocked; one that gave up is counted as dropped
// and returns ctx's error, or ErrClosed if the mailbox was closed. Sending
// hands v over to the receiver.
func (m *Mailbox[T, C]) Send(ctx context.Context, v T) error {
	m.mu.Lock()
	if m.closed {
		m.dropped++
		m.mu.Unlock()
		return ErrClosed
	}
	if r, ok := m.offerLocked(v); ok {
		m.mu.Unlock()
		r.wake()
		return nil
	}
	w := m.queueLocked(&m.sendq)
	w.v = v
	m.blocked++
	m.mu.Unlock()
	return m.wait(ctx, w, nil)
}

// SendWithin is Send with an extra bound: it gives up with
// context.DeadlineExceeded after waiting for d. The timer is only made when
// the lane is full, so a send with room costs nothing extra.
func (m *Mailbox[T, C]) SendWithin(ctx context.Context, v T, d time.Duration) error {
	m.mu.Lock()
	if m.closed {
		m.dropped++
		m.mu.Unlock()
		return ErrClosed
	}
	if r, ok := m.offerLocked(v); ok {
		m.mu.Unlock()
		r.wake()
		return nil
	}
	w := m.queueLocked(&m.sendq)
	w.v = v
	m.blocked++
	m.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	return m.wait(ctx, w, t.C)
}

// TrySend puts v on the data lane if there is room and reports whether it did.
// A refused message is counted as dropped.
func (m *Mailbox[T, C]) TrySend(v T) bool {
	m.mu.Lock()
	if m.closed {
		m.dropped++
		m.mu.Unlock()
		return false
	}
	r, ok := m.offerLocked(v)
	if !ok {
		m.dropped++
	}
	m.mu.Unlock()
	r.wake()
	return ok
}

// offerLocked hands v to the receiver that has waited longest, returning it
// to be woken once mu is released, or else queues v if there is room. It
// reports whether v was taken.
func (m *Mailbox[T, C]) offerLocked(v T) (*waiter[T], bool) {
	if r := m.recvq.head; r != nil {
		m.recvq.remove(r)
		r.v = v
		m.sent++
		m.received++
		return r, true
	}
	if m.n < m.size {
		m.pushLocked(v)
		return nil, true
	}
	return nil, false
}

// wait parks a sender queued in sendq until its message is on the lane, it
// gives up, or Close refuses it.
func (m *Mailbox[T, C]) wait(ctx context.Context, w *waiter[T], expire <-chan time.Time) error {
	var err error
	select {
	case <-w.done:
		return m.finishSend(w)
	case <-ctx.Done():
		err = ctx.Err()
	case <-expire:
		err = context.DeadlineExceeded
	}
	m.mu.Lock()
	if !w.queued {
		// Its message went onto the lane (or Close refused it) before
		// we could give up; the wake-up is on its way.
		m.mu.Unlock()
		<-w.done
		return m.finishSend(w)
	}
	m.sendq.remove(w)
	m.dropped++
	m.mu.Unlock()
	m.release(w)
	return err
}

// finishSend is how a woken sender's send ended: on the lane, or refused by
// Close (and counted as dropped). It releases w.
func (m *Mailbox[T, C]) finishSend(w *waiter[T]) error {
	refused := w.refused
	m.release(w)
	if !refused {
		return nil
	}
	m.mu.Lock()
	m.dropped++
	m.mu.Unlock()
	return ErrClosed
}

// admitLocked moves the messages of the senders that have waited longest
// onto the lane while there is room, and returns those senders, to be woken
// once mu is released.
func (m *Mailbox[T, C]) admitLocked() waitList[T] {
	var admitted waitList[T]
	for m.sendq.head != nil && m.n < m.size {
		w := m.sendq.head
		m.sendq.remove(w)
		m.pushLocked(w.v)
		admitted.add(w)
	}
	return admitted
}

// SendControl puts c on the control lane, waiting for room until ctx ends.
func (m *Mailbox[T, C]) SendControl(ctx context.Context, c C) error {
	select {
	case m.control <- c:
		m.controlSent.Add(1)
	case <-ctx.Done():
		return ctx.Err()
	}
	// (C): wake a waiting receiver to look at the control lane.
	m.mu.Lock()
	r := m.recvq.head
	if r != nil {
		m.recvq.remove(r)
		r.poked = true
	}
	m.mu.Unlock()
	r.wake()
	return nil
}

// Message is one thing taken from a mailbox: a control message when
// IsControl is set, data otherwise.
type Message[T, C any] struct {
	Data      T
	Control   C
	IsControl bool
}

// Receive waits for the next message until ctx ends. A control message that
// is waiting is always returned before any data, even once ctx has ended;
// data is not: once ctx has ended, Receive returns its error and leaves the
// data lane to other receivers. (Data that a sender handed to Receive while
// it waited is returned, even if ctx ends as it wakes.)
func (m *Mailbox[T, C]) Receive(ctx context.Context) (Message[T, C], error) {
	if c, ok := m.tryControl(); ok {
		return m.controlMessage(c), nil
	}
	if err := ctx.Err(); err != nil {
		return Message[T, C]{}, err
	}
	m.mu.Lock()
	for {
		if m.n > 0 {
			v := m.popLocked()
			admitted := m.admitLocked()
			m.mu.Unlock()
			admitted.wakeAll()
			return Message[T, C]{Data: v}, nil
		}
		// (C): look again under mu, as SendControl pokes under mu once
		// its message is in: one sent after this look finds us queued.
		if c, ok := m.tryControl(); ok {
			m.mu.Unlock()
			return m.controlMessage(c), nil
		}
		w := m.queueLocked(&m.recvq)
		m.mu.Unlock()
		select {
		case <-w.done:
		case <-ctx.Done():
			m.mu.Lock()
			if w.queued {
				m.recvq.remove(w)
				m.mu.Unlock()
				m.release(w)
				return Message[T, C]{}, ctx.Err()
			}
			// Handed data or poked before we could give up; the
			// wake-up is on its way.
			m.mu.Unlock()
			<-w.done
		}
		if !w.poked {
			v := w.v
			m.release(w)
			return Message[T, C]{Data: v}, nil
		}
		m.release(w)
		// A control message came in while we waited. Another receiver
		// may have taken it first; then look at both lanes again.
		if c, ok := m.tryControl(); ok {
			return m.controlMessage(c), nil
		}
		if err := ctx.Err(); err != nil {
			return Message[T, C]{}, err
		}
		m.mu.Lock()
	}
}

// TryReceive takes the oldest data message if there is one, without
// waiting; control messages are left alone. It serves the final sweep of a
// stage that has stopped for good.
func (m *Mailbox[T, C]) TryReceive() (T, bool) {
	m.mu.Lock()
	if m.n == 0 {
		m.mu.Unlock()
		var zero T
		return zero, false
	}
	v := m.popLocked()
	admitted := m.admitLocked()
	m.mu.Unlock()
	admitted.wakeAll()
	return v, true
}

func (m *Mailbox[T, C]) tryControl() (C, bool) {
	select {
	case c := <-m.control:
		return c, true
	default:
		var zero C
		return zero, false
	}
}

func (m *Mailbox[T, C]) controlMessage(c C) Message[T, C] {
	m.controlReceived.Add(1)
	return Message[T, C]{Control: c, IsControl: true}
}

// pushLocked appends v to the data lane; the caller has checked n < size.
func (m *Mailbox[T, C]) pushLocked(v T) {
	i := m.head + m.n
	if i >= len(m.buf) {
		i -= len(m.buf)
	}
	m.buf[i] = v
	m.n++
	m.sent++
}

// popLocked takes the oldest message off the data lane; the caller has
// checked n > 0. The slot is zeroed so that nothing outlives its use.
func (m *Mailbox[T, C]) popLocked() T {
	var zero T
	v := m.buf[m.head]
	m.buf[m.head] = zero
	m.head++
	if m.head == len(m.buf) {
		m.head = 0
	}
	m.n--
	m.received++
	if len(m.buf) > m.size && m.n <= m.size {
		m.reshapeLocked(m.size) // drained after a shrink
	}
	return v
}

// reshapeLocked moves the queued messages, in order, to the start of a new
// buffer of length l >= n.
func (m *Mailbox[T, C]) reshapeLocked(l int) {
	buf := make([]T, l)
	if end := m.head + m.n; end <= len(m.buf) {
		copy(buf, m.buf[m.head:end])
	} else {
		k := copy(buf, m.buf[m.head:])
		copy(buf[k:], m.buf[:end-len(m.buf)])
	}
	m.buf, m.head = buf, 0
}

// waiter is a goroutine parked on a mailbox: a sender with its message v,
// or a receiver that v is handed to. While queued is set it is in sendq or
// recvq and only its owner may park on done. Whoever removes it from its
// queue under mu, other than its owner, does its work there (moves v onto
// the lane, hands it v, or sets poked) and then, after releasing mu, puts
// the one token in done; after that it does not touch the waiter again.
type waiter[T any] struct {
	v          T
	prev, next *waiter[T]
	queued     bool
	poked      bool          // a receiver woken for a control message
	refused    bool          // a sender woken by Close: its message was not taken
	done       chan struct{} // capacity 1
}

// wake puts w's token in done; w may be nil.
func (w *waiter[T]) wake() {
	if w != nil {
		w.done <- struct{}{} // never blocks: one token per queuing
	}
}

// queueLocked puts a waiter for the calling goroutine at the back of q.
func (m *Mailbox[T, C]) queueLocked(q *waitq[T]) *waiter[T] {
	w, _ := m.waiters.Get().(*waiter[T])
	if w == nil {
		w = &waiter[T]{done: make(chan struct{}, 1)}
	}
	q.add(w)
	return w
}

// release gives back a waiter that is out of its queue and whose token, if
// any, has been taken, zeroing it so that nothing outlives its use.
func (m *Mailbox[T, C]) release(w *waiter[T]) {
	var zero T
	w.v, w.poked, w.refused = zero, false, false
	m.waiters.Put(w)
}

// waitq is a queue of waiters, oldest first, guarded by the mailbox's mu.
type waitq[T any] struct{ head, tail *waiter[T] }

func (q *waitq[T]) add(w *waiter[T]) {
	w.queued, w.prev = true, q.tail
	if q.tail == nil {
		q.head = w
	} else {
		q.tail.next = w
	}
	q.tail = w
}

func (q *waitq[T]) remove(w *waiter[T]) {
	if w.prev == nil {
		q.head = w.next
	} else {
		w.prev.next = w.next
	}
	if w.next == nil {
		q.tail = w.prev
	} else {
		w.next.prev = w.prev
	}
	w.queued, w.prev, w.next = false, nil, nil
}

// waitList is a list of waiters taken out of their queue, to be woken once
// mu is released. It links them through next.
type waitList[T any] struct{ head *waiter[T] }

func (l *waitList[T]) add(w *waiter[T]) { w.next, l.head = l.head, w }

func (l waitList[T]) wakeAll() {
	for w := l.head; w != nil; {
		next := w.next
		w.next = nil
		w.wake()
		w = next
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

// Stats reads the mailbox's lengths, capacities and counters. The data
// lane's figures are read together, holding its lock for a moment, so that
// DataLen is Sent minus Received; DataLen exceeds DataCap while a lane that
// Resize shrank drains. The control lane's figures are read without
// stopping anybody.
func (m *Mailbox[T, C]) Stats() Stats {
	m.mu.Lock()
	st := Stats{
		DataLen:      m.n,
		DataCap:      m.size,
		Sent:         m.sent,
		Received:     m.received,
		BlockedSends: m.blocked,
		Dropped:      m.dropped,
	}
	m.mu.Unlock()
	st.ControlLen = len(m.control)
	st.ControlCap = cap(m.control)
	st.ControlSent = m.controlSent.Load()
	st.ControlReceived = m.controlReceived.Load()
	return st
}

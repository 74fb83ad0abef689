package mailbox

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// checkLocked reports the first invariant of m that does not hold.
func (m *Mailbox[T, C]) checkLocked() error {
	if m.sendq.head != nil && m.n < m.size {
		return fmt.Errorf("(S): a sender waits with %d queued, capacity %d", m.n, m.size)
	}
	if m.recvq.head != nil && m.n != 0 {
		return fmt.Errorf("(R): a receiver waits with %d queued", m.n)
	}
	if len(m.buf) < max(m.size, m.n) || m.head < 0 || m.head >= len(m.buf) {
		return fmt.Errorf("ring: len(buf) %d, head %d, n %d, size %d", len(m.buf), m.head, m.n, m.size)
	}
	if m.sent-m.received != uint64(m.n) {
		return fmt.Errorf("counters: sent %d - received %d != n %d", m.sent, m.received, m.n)
	}
	for _, q := range []*waitq[T]{&m.sendq, &m.recvq} {
		var prev *waiter[T]
		for w := q.head; w != nil; prev, w = w, w.next {
			if !w.queued || w.prev != prev {
				return fmt.Errorf("waitq: broken links")
			}
		}
		if q.tail != prev {
			return fmt.Errorf("waitq: tail is not the last waiter")
		}
	}
	return nil
}

// TestInvariantsUnderLoad checks the invariants on Mailbox while senders,
// receivers, control senders and a resizer run, giving up now and then.
func TestInvariantsUnderLoad(t *testing.T) {
	const workers, ops = 6, 3000
	m := New[int, int](4, 2)
	stop := make(chan struct{})
	var checker sync.WaitGroup
	checker.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			m.mu.Lock()
			err := m.checkLocked()
			m.mu.Unlock()
			if err != nil {
				t.Error(err)
				return
			}
		}
	})
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 3))
			for i := range ops {
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(50))*time.Microsecond)
				switch rng.IntN(7) {
				case 0, 1:
					_ = m.Send(ctx, i)
				case 2:
					_ = m.SendWithin(context.Background(), i, 10*time.Microsecond)
				case 3:
					m.TrySend(i)
				case 4, 5:
					_, _ = m.Receive(ctx)
				case 6:
					if rng.IntN(4) == 0 {
						_ = m.SendControl(ctx, i)
					} else {
						m.Resize(rng.IntN(8))
					}
				}
				cancel()
			}
		})
	}
	wg.Wait()
	close(stop)
	checker.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.checkLocked(); err != nil {
		t.Fatal(err)
	}
	if m.sendq.head != nil || m.recvq.head != nil {
		t.Fatal("waiters left queued after every call returned")
	}
}

// TestControlRacingAReceiverIsNotLost races SendControl against a Receive
// on an empty mailbox: a receiver must not go to sleep with a control
// message waiting. If one did, synctest would report the bubble deadlocked.
func TestControlRacingAReceiverIsNotLost(t *testing.T) {
	for range 2000 {
		synctest.Test(t, func(t *testing.T) {
			m := New[int, string](1, 1)
			got := make(chan Message[int, string], 1)
			go func() {
				msg, _ := m.Receive(context.Background())
				got <- msg
			}()
			go func() { _ = m.SendControl(context.Background(), "c") }()
			if msg := <-got; !msg.IsControl {
				t.Fatalf("Receive = %+v, want the control message", msg)
			}
		})
	}
}

// TestPokedReceiverThatFindsNoControlWaitsAgain pokes a waiting receiver for
// a control message that another receiver has already taken: it must go
// back to waiting, and still get the next data.
func TestPokedReceiverThatFindsNoControlWaitsAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := New[int, string](1, 1)
		got := make(chan Message[int, string], 1)
		go func() {
			msg, err := m.Receive(context.Background())
			if err != nil {
				t.Error(err)
			}
			got <- msg
		}()
		synctest.Wait()

		// SendControl, with another receiver taking the message between
		// its send and its poke.
		m.control <- "c"
		if c := <-m.control; c != "c" {
			t.Fatalf("took %q", c)
		}
		m.mu.Lock()
		r := m.recvq.head
		m.recvq.remove(r)
		r.poked = true
		m.mu.Unlock()
		r.wake()

		synctest.Wait()
		select {
		case msg := <-got:
			t.Fatalf("poked receiver returned %+v with nothing to receive", msg)
		default:
		}
		m.mu.Lock()
		requeued := m.recvq.head != nil
		m.mu.Unlock()
		if !requeued {
			t.Fatal("poked receiver is not waiting again")
		}
		if !m.TrySend(5) {
			t.Fatal("TrySend refused")
		}
		if msg := <-got; msg.IsControl || msg.Data != 5 {
			t.Fatalf("Receive = %+v, want data 5", msg)
		}
	})
}

// TestReceiverLooksAtControlBeforeWaiting sends a control message, without
// a poke, after a receiver's first look at the control lane but before it
// takes mu, as a SendControl that found nobody to poke does. The receiver
// must see it when it looks again under mu, rather than go to sleep.
func TestReceiverLooksAtControlBeforeWaiting(t *testing.T) {
	m := New[int, string](1, 1)
	m.mu.Lock()
	got := make(chan Message[int, string], 1)
	go func() {
		msg, _ := m.Receive(context.Background())
		got <- msg
	}()
	// Wait until the receiver is past its first look, at mu.
	for !goroutineIsIn("mailbox.(*Mailbox[...]).Receive(", "sync.(*Mutex).Lock(") {
		runtime.Gosched()
	}
	m.control <- "c"
	m.mu.Unlock()
	select {
	case msg := <-got:
		if !msg.IsControl || msg.Control != "c" {
			t.Fatalf("Receive = %+v, want the control message", msg)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the receiver went to sleep with a control message waiting")
	}
}

// goroutineIsIn reports whether some goroutine's stack has all the frames.
func goroutineIsIn(frames ...string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		all := true
		for _, f := range frames {
			all = all && strings.Contains(g, f)
		}
		if all {
			return true
		}
	}
	return false
}

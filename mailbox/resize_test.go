package mailbox_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"spooky/mailbox"
)

// fill queues the values from..to-1 with TrySend.
func fill(t *testing.T, mb *mailbox.Mailbox[int, ctl], from, to int) {
	t.Helper()
	for v := from; v < to; v++ {
		if !mb.TrySend(v) {
			t.Fatalf("TrySend(%d) refused; stats %+v", v, mb.Stats())
		}
	}
}

// drain receives want from mb, in order, and fails on anything else.
func drain(t *testing.T, mb *mailbox.Mailbox[int, ctl], want ...int) {
	t.Helper()
	for _, w := range want {
		msg, err := mb.Receive(context.Background())
		if err != nil || msg.IsControl || msg.Data != w {
			t.Fatalf("Receive = %+v, %v; want data %d", msg, err, w)
		}
	}
}

func seq(from, to int) []int {
	s := make([]int, 0, to-from)
	for v := from; v < to; v++ {
		s = append(s, v)
	}
	return s
}

func TestResizeKeepsPendingInOrder(t *testing.T) {
	tests := []struct {
		name     string
		capacity int
		rotate   int // messages sent and received first, so the ring wraps
		pending  int
		resize   int
	}{
		{"grow empty", 2, 1, 0, 5},
		{"grow full", 4, 0, 4, 8},
		{"grow wrapped", 4, 3, 3, 9},
		{"same size", 4, 2, 2, 4},
		{"shrink above length", 8, 7, 3, 5},
		{"shrink to length", 8, 5, 6, 6},
		{"shrink below length", 8, 0, 8, 2},
		{"shrink wrapped below length", 8, 6, 7, 3},
		{"shrink to one", 5, 4, 2, 1},
		{"zero is one", 5, 0, 3, 0},
		{"negative is one", 5, 4, 4, -7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mb := newBox(t, tt.capacity, 1)
			for range tt.rotate {
				fill(t, mb, -1, 0)
				drain(t, mb, -1)
			}
			fill(t, mb, 0, tt.pending)

			mb.Resize(tt.resize)

			wantCap := max(tt.resize, 1)
			st := mb.Stats()
			if st.DataLen != tt.pending || st.DataCap != wantCap {
				t.Fatalf("after Resize(%d): len/cap %d/%d, want %d/%d", tt.resize, st.DataLen, st.DataCap, tt.pending, wantCap)
			}
			// A lane below its new capacity takes exactly the room that
			// is left; one at or over it refuses.
			fill(t, mb, tt.pending, max(wantCap, tt.pending))
			if mb.TrySend(-1) {
				t.Fatalf("TrySend accepted beyond capacity %d", wantCap)
			}
			drain(t, mb, seq(0, max(wantCap, tt.pending))...)
			st = mb.Stats()
			if st.DataLen != 0 || st.DataCap != wantCap {
				t.Fatalf("after draining: len/cap %d/%d, want 0/%d", st.DataLen, st.DataCap, wantCap)
			}
			// The lane works at its new size after draining.
			fill(t, mb, 100, 100+wantCap)
			if mb.TrySend(-1) {
				t.Fatalf("TrySend accepted beyond the new capacity %d", wantCap)
			}
			drain(t, mb, seq(100, 100+wantCap)...)
		})
	}
}

func TestResizeShrinkBelowLengthHoldsSendersUntilDrained(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		mb := newBox(t, 8, 1)
		fill(t, mb, 0, 8)
		mb.Resize(3)
		if st := mb.Stats(); st.DataLen != 8 || st.DataCap != 3 {
			t.Fatalf("after Resize(3): len/cap %d/%d, want 8/3", st.DataLen, st.DataCap)
		}

		errc := make(chan error, 1)
		go func() { errc <- mb.Send(ctx, 8) }()
		// The sender has room only once fewer than 3 are queued.
		for v := range 6 {
			synctest.Wait()
			select {
			case err := <-errc:
				t.Fatalf("Send returned %v with %d queued over a capacity of 3", err, 8-v)
			default:
			}
			drain(t, mb, v)
			if mb.TrySend(-1) {
				t.Fatalf("TrySend accepted with %d queued over a capacity of 3", 8-v-1)
			}
		}
		if err := <-errc; err != nil {
			t.Fatalf("Send = %v once the lane drained below its capacity", err)
		}
		drain(t, mb, 6, 7, 8)
		st := mb.Stats()
		if st.Sent != 9 || st.Received != 9 || st.BlockedSends != 1 || st.Dropped != 6 || st.DataLen != 0 {
			t.Fatalf("stats = %+v, want 9 sent and received, 1 blocked, 6 dropped, none left", st)
		}
	})
}

func TestResizeGrowWakesBlockedSenders(t *testing.T) {
	for _, send := range []struct {
		name string
		do   func(mb *mailbox.Mailbox[int, ctl], v int) error
	}{
		{"Send", func(mb *mailbox.Mailbox[int, ctl], v int) error { return mb.Send(context.Background(), v) }},
		{"SendWithin", func(mb *mailbox.Mailbox[int, ctl], v int) error {
			return mb.SendWithin(context.Background(), v, time.Hour)
		}},
	} {
		t.Run(send.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const blocked = 5
				mb := newBox(t, 1, 1)
				fill(t, mb, 0, 1)
				errc := make(chan error, blocked)
				for v := 1; v <= blocked; v++ {
					go func() { errc <- send.do(mb, v) }()
					synctest.Wait() // so that they wait in order
				}
				if st := mb.Stats(); st.BlockedSends != blocked || len(errc) != 0 {
					t.Fatalf("before Resize: %d returned, stats %+v; want all %d blocked", len(errc), st, blocked)
				}

				mb.Resize(blocked) // room for all but one of them
				synctest.Wait()
				if len(errc) != blocked-1 {
					t.Fatalf("after Resize(%d): %d senders returned, want %d", blocked, len(errc), blocked-1)
				}
				mb.Resize(blocked + 1)
				synctest.Wait()
				for range blocked {
					if err := <-errc; err != nil {
						t.Fatalf("blocked %s = %v, want nil once the lane grew", send.name, err)
					}
				}
				// They waited in order, and are queued in that order.
				drain(t, mb, seq(0, blocked+1)...)
				if st := mb.Stats(); st.Sent != blocked+1 || st.Dropped != 0 {
					t.Fatalf("stats = %+v, want %d sent, none dropped", st, blocked+1)
				}
			})
		})
	}
}

// TestWaitingSendersComeFirst checks that room made by a receiver goes to
// the senders already waiting for it, oldest first, as with a channel.
func TestWaitingSendersComeFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		mb := newBox(t, 2, 1)
		fill(t, mb, 0, 2)
		errc := make(chan error, 3)
		for v := 2; v < 5; v++ {
			go func() { errc <- mb.Send(ctx, v) }()
			synctest.Wait()
		}
		drain(t, mb, 0)
		// The room is the first waiting sender's, whether or not it has
		// run yet.
		if mb.TrySend(-1) {
			t.Fatal("TrySend took the room a waiting sender was owed")
		}
		drain(t, mb, 1, 2, 3, 4)
		for range 3 {
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestResizeDoesNotDisturbControlPriority(t *testing.T) {
	ctx := context.Background()
	mb := newBox(t, 6, 2)
	fill(t, mb, 0, 6)
	mb.Resize(2) // over capacity
	if err := mb.SendControl(ctx, "reconfigure"); err != nil {
		t.Fatal(err)
	}
	if err := wantMsg(mb, true, 0, "reconfigure"); err != nil {
		t.Fatalf("first Receive after Resize: %v", err)
	}
	drain(t, mb, 0, 1)
	mb.Resize(10)
	if err := mb.SendControl(ctx, "drain"); err != nil {
		t.Fatal(err)
	}
	if err := wantMsg(mb, true, 0, "drain"); err != nil {
		t.Fatalf("Receive after growing: %v", err)
	}
	drain(t, mb, 2, 3, 4, 5)
}

// TestManyWaitersAllWake parks many receivers on an empty lane and many
// senders on a full one; every message must reach one of them. A lost
// wake-up leaves a goroutine parked, which synctest reports as a deadlock.
func TestManyWaitersAllWake(t *testing.T) {
	const waiters = 16
	t.Run("receivers", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			mb := newBox(t, waiters, 1)
			got := make(chan int, waiters)
			for range waiters {
				go func() {
					msg, err := mb.Receive(context.Background())
					if err != nil {
						t.Error(err)
					}
					got <- msg.Data
				}()
			}
			synctest.Wait()
			fill(t, mb, 0, waiters) // as fast as possible, without waiting
			synctest.Wait()
			seen := map[int]bool{}
			for range waiters {
				seen[<-got] = true
			}
			if len(seen) != waiters {
				t.Fatalf("receivers got %d distinct messages, want %d", len(seen), waiters)
			}
		})
	})
	t.Run("senders", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			mb := newBox(t, 1, 1)
			fill(t, mb, -1, 0)
			errc := make(chan error, waiters)
			for v := range waiters {
				go func() { errc <- mb.Send(context.Background(), v) }()
			}
			synctest.Wait()
			mb.Resize(waiters + 1)
			synctest.Wait()
			for range waiters {
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
			}
			if st := mb.Stats(); st.DataLen != waiters+1 {
				t.Fatalf("DataLen = %d, want %d", st.DataLen, waiters+1)
			}
		})
	})
	t.Run("receivers with control", func(t *testing.T) {
		// Data and a control message arrive together for two waiting
		// receivers: each must get one, and neither may be left asleep.
		for range 50 {
			synctest.Test(t, func(t *testing.T) {
				mb := newBox(t, 4, 4)
				got := make(chan mailbox.Message[int, ctl], 2)
				for range 2 {
					go func() {
						msg, err := mb.Receive(context.Background())
						if err != nil {
							t.Error(err)
						}
						got <- msg
					}()
				}
				synctest.Wait()
				fill(t, mb, 7, 8)
				if err := mb.SendControl(context.Background(), "c"); err != nil {
					t.Fatal(err)
				}
				a, b := <-got, <-got
				if a.IsControl == b.IsControl {
					t.Fatalf("receivers got %+v and %+v, want one control and one data", a, b)
				}
			})
		}
	})
}

func TestWaitersThatGiveUpDoNotSwallowWakeUps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mb := newBox(t, 1, 1)
		// Two receivers wait; the older gives up just as data arrives.
		// If it was handed the message first, it returns it and the next
		// one goes to the other; either way, the other gets data.
		ctx, cancel := context.WithCancel(context.Background())
		quit := make(chan error, 1)
		go func() {
			_, err := mb.Receive(ctx)
			quit <- err
		}()
		got := make(chan int, 1)
		go func() {
			msg, _ := mb.Receive(context.Background())
			got <- msg.Data
		}()
		synctest.Wait()
		fill(t, mb, 1, 2)
		cancel()
		if err := <-quit; err == nil {
			// It took the message; send another for the other one.
			fill(t, mb, 2, 3)
		}
		if v := <-got; v != 1 && v != 2 {
			t.Fatalf("receiver got %d", v)
		}

		// The same for senders: two wait on a full lane, the older gives
		// up as room is made.
		fill(t, mb, 3, 4)
		sctx, scancel := context.WithCancel(context.Background())
		squit := make(chan error, 1)
		go func() { squit <- mb.Send(sctx, 4) }()
		sent := make(chan error, 1)
		go func() { sent <- mb.Send(context.Background(), 5) }()
		synctest.Wait()
		drain(t, mb, 3)
		scancel()
		if err := <-squit; err == nil {
			drain(t, mb, 4)
		}
		if err := <-sent; err != nil {
			t.Fatal(err)
		}
		drain(t, mb, 5)
	})
}

func TestSendWithinTimesOutOnShrunkLane(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mb := newBox(t, 4, 1)
		fill(t, mb, 0, 2)
		mb.Resize(1)
		start := time.Now()
		err := mb.SendWithin(context.Background(), 9, time.Second)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("SendWithin on a lane over capacity = %v, want DeadlineExceeded", err)
		}
		if d := time.Since(start); d != time.Second {
			t.Fatalf("SendWithin gave up after %v, want 1s", d)
		}
		drain(t, mb, 0, 1)
	})
}

// TestResizeUnderLoad runs senders of every kind, receivers and a resizer at
// once: every message must be received exactly once, and each receiver must
// see each sender's messages in the order they were sent.
func TestResizeUnderLoad(t *testing.T) {
	const (
		senders   = 9
		perSender = 3000
		receivers = 4
		total     = senders * perSender
	)
	ctx := context.Background()
	mb := newBox(t, 8, 4)

	var sendWG sync.WaitGroup
	for s := range senders {
		sendWG.Go(func() {
			for i := range perSender {
				v := s*perSender + i
				switch s % 3 {
				case 0:
					if err := mb.Send(ctx, v); err != nil {
						t.Errorf("Send: %v", err)
						return
					}
				case 1: // gives up often, then tries again
					for mb.SendWithin(ctx, v, 20*time.Microsecond) != nil {
					}
				case 2:
					for !mb.TrySend(v) {
						waitABit()
					}
				}
				if i%500 == 0 {
					if err := mb.SendControl(ctx, ctl(fmt.Sprint(v))); err != nil {
						t.Errorf("SendControl: %v", err)
					}
				}
			}
		})
	}

	stopCtx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	seen := make([][]int, receivers)
	var controls atomic.Int64
	var recvWG sync.WaitGroup
	for r := range receivers {
		recvWG.Go(func() {
			for n := 0; stopCtx.Err() == nil; n++ {
				// Every other Receive waits only a moment, so that
				// receivers give up while data and wake-ups arrive.
				rctx, cancel := stopCtx, context.CancelFunc(func() {})
				if n%2 == 1 {
					rctx, cancel = context.WithTimeout(stopCtx, 20*time.Microsecond)
				}
				msg, err := mb.Receive(rctx)
				cancel()
				switch {
				case err != nil:
				case msg.IsControl:
					controls.Add(1)
				default:
					seen[r] = append(seen[r], msg.Data)
				}
			}
		})
	}

	stopResizing := make(chan struct{})
	var resizeWG sync.WaitGroup
	resizeWG.Go(func() {
		rng := rand.New(rand.NewPCG(1, 2))
		for {
			select {
			case <-stopResizing:
				return
			default:
			}
			mb.Resize(rng.IntN(34) - 1) // -1 to 32: includes "below 1"
			if st := mb.Stats(); st.DataLen != int(st.Sent-st.Received) {
				t.Errorf("Stats: DataLen %d, want Sent-Received %d", st.DataLen, st.Sent-st.Received)
				return
			}
			waitABit()
		}
	})

	sendWG.Wait()
	close(stopResizing)
	resizeWG.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for mb.Stats().Received < total || controls.Load() < senders*perSender/500 {
		if time.Now().After(deadline) {
			t.Fatalf("stuck: stats %+v, %d controls received", mb.Stats(), controls.Load())
		}
		waitABit()
	}
	stop()
	recvWG.Wait()

	count := make([]int, total)
	for r, s := range seen {
		last := make([]int, senders)
		for i := range last {
			last[i] = -1
		}
		for _, v := range s {
			count[v]++
			from := v / perSender
			if v <= last[from] {
				t.Fatalf("receiver %d got %d after %d from the same sender", r, v, last[from])
			}
			last[from] = v
		}
	}
	for v, n := range count {
		if n != 1 {
			t.Fatalf("message %d received %d times, want exactly once", v, n)
		}
	}
	st := mb.Stats()
	if st.Sent != total || st.Received != total || st.DataLen != 0 {
		t.Fatalf("stats = %+v, want %d sent and received, none left", st, total)
	}
}

func TestResizeSendReceiveDoesNotAllocate(t *testing.T) {
	ctx := context.Background()
	mb := newBox(t, 1, 1)
	mb.Resize(4)
	mb.Resize(2)
	allocs := testing.AllocsPerRun(1000, func() {
		for v := range 2 {
			if err := mb.Send(ctx, v); err != nil {
				t.Fatal(err)
			}
		}
		for range 2 {
			if _, err := mb.Receive(ctx); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("Send+Receive after Resize allocates %v times per run, want 0", allocs)
	}
}

// TestSenderGivingUpAsItsTurnComes ends a waiting sender's context just
// after room was made for it. Its message went onto the lane when the room
// was made, so Send must report success even if it notices ctx first, and
// the message must not be counted as dropped.
func TestSenderGivingUpAsItsTurnComes(t *testing.T) {
	for range 100 {
		synctest.Test(t, func(t *testing.T) {
			mb := newBox(t, 1, 1)
			fill(t, mb, 0, 1)
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() { errc <- mb.Send(ctx, 1) }()
			synctest.Wait()
			drain(t, mb, 0) // makes room for it
			cancel()
			if err := <-errc; err != nil {
				t.Fatalf("Send = %v after its message went onto the lane", err)
			}
			if st := mb.Stats(); st.DataLen != 1 || st.Sent != 2 || st.Dropped != 0 || st.BlockedSends != 1 {
				t.Fatalf("stats = %+v, want 1 queued, 2 sent, 1 blocked, none dropped", st)
			}
			drain(t, mb, 1)
		})
	}
}

// TestResizeMatchesModel drives a mailbox through random TrySend, Receive
// and Resize calls from one goroutine and checks it against a slice.
func TestResizeMatchesModel(t *testing.T) {
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 7))
		capacity := 1 + rng.IntN(8)
		mb := newBox(t, capacity, 1)
		var model []int
		for step := range 2000 {
			switch op := rng.IntN(10); {
			case op < 4:
				ok := mb.TrySend(step)
				if want := len(model) < capacity; ok != want {
					t.Fatalf("seed %d step %d: TrySend = %v with %d queued, capacity %d", seed, step, ok, len(model), capacity)
				}
				if ok {
					model = append(model, step)
				}
			case op < 8:
				if len(model) == 0 {
					// With ctx ended, Receive does not wait.
					if msg, err := mb.Receive(ended); err == nil {
						t.Fatalf("seed %d step %d: Receive on empty lane = %+v", seed, step, msg)
					}
					break
				}
				msg, err := mb.Receive(context.Background())
				if err != nil || msg.Data != model[0] {
					t.Fatalf("seed %d step %d: Receive = %+v, %v; want %d", seed, step, msg, err, model[0])
				}
				model = model[1:]
			default:
				capacity = rng.IntN(12) - 1
				mb.Resize(capacity)
				capacity = max(capacity, 1)
			}
			if st := mb.Stats(); st.DataLen != len(model) || st.DataCap != capacity {
				t.Fatalf("seed %d step %d: len/cap %d/%d, want %d/%d", seed, step, st.DataLen, st.DataCap, len(model), capacity)
			}
		}
	}
}

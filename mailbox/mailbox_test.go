package mailbox_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"spooky/mailbox"
)

// ctl is the control type used by these tests.
type ctl string

func newBox(t *testing.T, dataCap, controlCap int) *mailbox.Mailbox[int, ctl] {
	t.Helper()
	return mailbox.New[int, ctl](dataCap, controlCap)
}

func TestSendBlocksWhenFullUntilContextEnds(t *testing.T) {
	mb := newBox(t, 1, 1)
	if err := mb.Send(context.Background(), 1); err != nil {
		t.Fatalf("Send into empty lane: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	errc := make(chan error, 1)
	go func() { errc <- mb.Send(ctx, 2) }()

	// The sender must be stuck: the lane is full. Wait until it has been
	// counted as blocked (it increments the counter before waiting), then
	// check that it has not returned.
	for mb.Stats().BlockedSends == 0 {
		select {
		case err := <-errc:
			t.Fatalf("Send on a full lane returned %v before its context ended", err)
		default:
		}
		waitABit()
	}
	select {
	case err := <-errc:
		t.Fatalf("Send on a full lane returned %v before its context ended", err)
	default:
	}

	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Send after cancel = %v, want context.Canceled", err)
	}
	st := mb.Stats()
	if st.Sent != 1 || st.BlockedSends != 1 || st.Dropped != 1 || st.DataLen != 1 {
		t.Fatalf("stats = %+v, want sent 1, blocked 1, dropped 1, len 1", st)
	}
}

func TestSendBlockedThenSucceeds(t *testing.T) {
	mb := newBox(t, 1, 1)
	ctx := context.Background()
	if err := mb.Send(ctx, 1); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- mb.Send(ctx, 2) }()
	for mb.Stats().BlockedSends == 0 {
		waitABit()
	}
	for want := 1; want <= 2; want++ {
		msg, err := mb.Receive(ctx)
		if err != nil || msg.IsControl || msg.Data != want {
			t.Fatalf("Receive = %+v, %v; want data %d", msg, err, want)
		}
	}
	if err := <-errc; err != nil {
		t.Fatalf("blocked Send = %v, want nil once room was made", err)
	}
	st := mb.Stats()
	if st.Sent != 2 || st.BlockedSends != 1 || st.Dropped != 0 || st.Received != 2 {
		t.Fatalf("stats = %+v, want sent 2, blocked 1, dropped 0, received 2", st)
	}
}

func TestSendWithEndedContextStillSendsWhenThereIsRoom(t *testing.T) {
	mb := newBox(t, 1, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := mb.Send(ctx, 1); err != nil {
		t.Fatalf("Send with room = %v, want nil (room is checked before the context)", err)
	}
	if err := mb.Send(ctx, 2); !errors.Is(err, context.Canceled) {
		t.Fatalf("Send on full lane with ended ctx = %v, want context.Canceled", err)
	}
	if st := mb.Stats(); st.Sent != 1 || st.BlockedSends != 1 || st.Dropped != 1 {
		t.Fatalf("stats = %+v, want sent 1, blocked 1, dropped 1", st)
	}
}

func TestTrySend(t *testing.T) {
	mb := newBox(t, 2, 1)
	for i, want := range []bool{true, true, false, false} {
		if got := mb.TrySend(i); got != want {
			t.Fatalf("TrySend #%d = %v, want %v", i, got, want)
		}
	}
	st := mb.Stats()
	if st.Sent != 2 || st.Dropped != 2 || st.BlockedSends != 0 || st.DataLen != 2 {
		t.Fatalf("stats = %+v, want sent 2, dropped 2, blocked 0, len 2", st)
	}
}

func TestReceivePrefersControl(t *testing.T) {
	ctx := context.Background()
	mb := newBox(t, 4, 2)
	for i := range 4 {
		if err := mb.Send(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	if err := mb.SendControl(ctx, "reconfigure"); err != nil {
		t.Fatal(err)
	}
	msg, err := mb.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !msg.IsControl || msg.Control != "reconfigure" {
		t.Fatalf("first Receive = %+v, want the control message before queued data", msg)
	}
	for i := range 4 {
		msg, err := mb.Receive(ctx)
		if err != nil || msg.IsControl || msg.Data != i {
			t.Fatalf("Receive = %+v, %v; want data %d in order", msg, err, i)
		}
	}
}

func TestReceiveWakesForControl(t *testing.T) {
	ctx := context.Background()
	mb := newBox(t, 1, 1)
	got := make(chan mailbox.Message[int, ctl], 1)
	go func() {
		msg, _ := mb.Receive(ctx)
		got <- msg
	}()
	if err := mb.SendControl(ctx, "drain"); err != nil {
		t.Fatal(err)
	}
	if msg := <-got; !msg.IsControl || msg.Control != "drain" {
		t.Fatalf("waiting Receive = %+v, want control drain", msg)
	}
}

func TestReceiveReturnsContextError(t *testing.T) {
	tests := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, context.Canceled},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithDeadline(context.Background(), time.Unix(0, 0))
		}, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mb := newBox(t, 1, 1)
			ctx, cancel := tt.ctx()
			t.Cleanup(cancel)
			msg, err := mb.Receive(ctx)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Receive on empty mailbox = %+v, %v; want %v", msg, err, tt.want)
			}
			if msg != (mailbox.Message[int, ctl]{}) {
				t.Fatalf("Receive returned %+v with its error, want the zero message", msg)
			}
		})
	}
}

func TestReceiveUnblocksWhenContextEnds(t *testing.T) {
	mb := newBox(t, 1, 1)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := mb.Receive(ctx)
		errc <- err
	}()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Receive after cancel = %v, want context.Canceled", err)
	}
	if st := mb.Stats(); st.Received != 0 || st.ControlReceived != 0 {
		t.Fatalf("stats = %+v, want nothing received", st)
	}
}

func TestStatsAfterScript(t *testing.T) {
	ctx := context.Background()
	ended, cancel := context.WithCancel(ctx)
	cancel()

	mb := newBox(t, 3, 2)
	steps := []struct {
		name string
		do   func() error
	}{
		{"send 1", func() error { return mb.Send(ctx, 1) }},
		{"send 2", func() error { return mb.Send(ctx, 2) }},
		{"try 3", func() error { return wantTrue(mb.TrySend(3)) }},
		{"try 4 (full)", func() error { return wantFalse(mb.TrySend(4)) }},
		{"send 5 (full, ctx ended)", func() error { return wantErr(mb.Send(ended, 5), context.Canceled) }},
		{"control a", func() error { return mb.SendControl(ctx, "a") }},
		{"control b", func() error { return mb.SendControl(ctx, "b") }},
		{"control c (full, ctx ended)", func() error { return wantErr(mb.SendControl(ended, "c"), context.Canceled) }},
		{"receive a", func() error { return wantMsg(mb, true, 0, "a") }},
		{"receive b", func() error { return wantMsg(mb, true, 0, "b") }},
		{"receive 1", func() error { return wantMsg(mb, false, 1, "") }},
		{"send 6", func() error { return mb.Send(ctx, 6) }},
		{"receive 2", func() error { return wantMsg(mb, false, 2, "") }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
	}
	want := mailbox.Stats{
		DataLen:         2, // 3 and 6
		DataCap:         3,
		ControlLen:      0,
		ControlCap:      2,
		Sent:            4, // 1, 2, 3, 6
		Received:        2,
		BlockedSends:    1, // 5
		Dropped:         2, // 4 and 5
		ControlSent:     2,
		ControlReceived: 2,
	}
	if got := mb.Stats(); got != want {
		t.Fatalf("Stats() =\n %+v\nwant\n %+v", got, want)
	}
}

func TestCapacityBelowOneIsOne(t *testing.T) {
	tests := []struct {
		dataCap, controlCap int
		wantData, wantCtl   int
	}{
		{0, 0, 1, 1},
		{-5, -1, 1, 1},
		{0, 3, 1, 3},
		{4, 0, 4, 1},
		{1, 1, 1, 1},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d,%d", tt.dataCap, tt.controlCap), func(t *testing.T) {
			mb := newBox(t, tt.dataCap, tt.controlCap)
			st := mb.Stats()
			if st.DataCap != tt.wantData || st.ControlCap != tt.wantCtl {
				t.Fatalf("caps = %d/%d, want %d/%d", st.DataCap, st.ControlCap, tt.wantData, tt.wantCtl)
			}
			// A lane of one is buffered: a send does not need a receiver.
			for range tt.wantData {
				if !mb.TrySend(1) {
					t.Fatal("TrySend refused while the lane had room")
				}
			}
			if mb.TrySend(1) {
				t.Fatal("TrySend accepted beyond capacity")
			}
		})
	}
}

func TestConcurrentSendersAndReceiversLoseNothing(t *testing.T) {
	const senders, perSender, receivers = 8, 2000, 4
	ctx := context.Background()
	mb := newBox(t, 16, 1)

	var sendWG sync.WaitGroup
	for s := range senders {
		sendWG.Go(func() {
			for i := range perSender {
				if err := mb.Send(ctx, s*perSender+i); err != nil {
					t.Errorf("Send: %v", err)
					return
				}
			}
		})
	}

	rctx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	seen := make([][]int, receivers)
	var recvWG sync.WaitGroup
	for r := range receivers {
		recvWG.Go(func() {
			for {
				msg, err := mb.Receive(rctx)
				if err != nil {
					return
				}
				seen[r] = append(seen[r], msg.Data)
			}
		})
	}

	sendWG.Wait()
	// Everything is sent; wait for the lane to empty before stopping the
	// receivers, so that none is left behind.
	for mb.Stats().Received < senders*perSender {
		waitABit()
	}
	stop()
	recvWG.Wait()

	count := make([]int, senders*perSender)
	for _, s := range seen {
		for _, v := range s {
			count[v]++
		}
	}
	for v, n := range count {
		if n != 1 {
			t.Fatalf("message %d received %d times, want exactly once", v, n)
		}
	}
	st := mb.Stats()
	if st.Sent != senders*perSender || st.Received != senders*perSender || st.Dropped != 0 || st.DataLen != 0 {
		t.Fatalf("stats = %+v, want %d sent and received, none dropped or left", st, senders*perSender)
	}
}

func TestSendReceiveDoesNotAllocate(t *testing.T) {
	ctx := context.Background()
	mb := newBox(t, 1, 1)
	allocs := testing.AllocsPerRun(1000, func() {
		if err := mb.Send(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if _, err := mb.Receive(ctx); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Send+Receive allocates %v times per run, want 0", allocs)
	}
}

func TestControlSendReceiveDoesNotAllocate(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	mb := mailbox.New[*int, *int](1, 1)
	c := new(int)
	allocs := testing.AllocsPerRun(1000, func() {
		if err := mb.SendControl(ctx, c); err != nil {
			t.Fatal(err)
		}
		if _, err := mb.Receive(ctx); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("SendControl+Receive allocates %v times per run, want 0", allocs)
	}
}

func ExampleMailbox() {
	ctx := context.Background()
	mb := mailbox.New[string, string](2, 1)

	_ = mb.Send(ctx, "request 1")
	_ = mb.Send(ctx, "request 2")
	fmt.Println("third fits:", mb.TrySend("request 3"))
	_ = mb.SendControl(ctx, "reconfigure")

	for range 3 {
		msg, _ := mb.Receive(ctx)
		if msg.IsControl {
			fmt.Println("control:", msg.Control)
		} else {
			fmt.Println("data:", msg.Data)
		}
	}
	st := mb.Stats()
	fmt.Printf("sent %d, received %d, dropped %d\n", st.Sent, st.Received, st.Dropped)
	// Output:
	// third fits: false
	// control: reconfigure
	// data: request 1
	// data: request 2
	// sent 2, received 2, dropped 1
}

func wantTrue(ok bool) error {
	if !ok {
		return errors.New("got false, want true")
	}
	return nil
}

func wantFalse(ok bool) error {
	if ok {
		return errors.New("got true, want false")
	}
	return nil
}

func wantErr(err, want error) error {
	if !errors.Is(err, want) {
		return fmt.Errorf("got error %v, want %v", err, want)
	}
	return nil
}

func wantMsg(mb *mailbox.Mailbox[int, ctl], control bool, data int, c ctl) error {
	msg, err := mb.Receive(context.Background())
	if err != nil {
		return err
	}
	want := mailbox.Message[int, ctl]{Data: data, Control: c, IsControl: control}
	if msg != want {
		return fmt.Errorf("Receive = %+v, want %+v", msg, want)
	}
	return nil
}

// waitABit yields to other goroutines while a test polls a counter that
// another goroutine is about to change. It does not sleep.
func waitABit() { runtime.Gosched() }

func TestReceiveWithEndedContextLeavesDataButServesControl(t *testing.T) {
	ctx := context.Background()
	ended, cancel := context.WithCancel(ctx)
	cancel()
	mb := newBox(t, 2, 1)
	if err := mb.Send(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := mb.SendControl(ctx, "drain"); err != nil {
		t.Fatal(err)
	}
	if msg, err := mb.Receive(ended); err != nil || !msg.IsControl || msg.Control != "drain" {
		t.Fatalf("Receive(ended) with control waiting = %+v, %v; want the control message", msg, err)
	}
	for range 10 {
		if msg, err := mb.Receive(ended); !errors.Is(err, context.Canceled) {
			t.Fatalf("Receive(ended) with data queued = %+v, %v; want context.Canceled", msg, err)
		}
	}
	if st := mb.Stats(); st.DataLen != 1 || st.Received != 0 {
		t.Fatalf("stats = %+v, want the data left queued", st)
	}
	if err := wantMsg(mb, false, 1, ""); err != nil {
		t.Fatal(err)
	}
}

package mailbox_test

import (
	"context"
	"errors"
	"runtime"
	"testing"

	"spooky/mailbox"
)

func TestCloseRefusesLaterAndWaitingSends(t *testing.T) {
	m := mailbox.New[int, string](1, 1)
	if err := m.Send(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	// The lane is full: this sender waits until Close refuses it.
	waiting := make(chan error, 1)
	go func() { waiting <- m.Send(context.Background(), 2) }()
	for m.Stats().BlockedSends == 0 {
		// BlockedSends counts the sender once it is queued.
		runtime.Gosched()
		select {
		case err := <-waiting:
			t.Fatalf("send to a full lane returned %v", err)
		default:
		}
	}
	m.Close()
	if err := <-waiting; !errors.Is(err, mailbox.ErrClosed) {
		t.Fatalf("waiting sender got %v, want ErrClosed", err)
	}
	if err := m.Send(context.Background(), 3); !errors.Is(err, mailbox.ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
	if err := m.SendWithin(context.Background(), 3, 0); !errors.Is(err, mailbox.ErrClosed) {
		t.Fatalf("SendWithin after Close: %v", err)
	}
	if m.TrySend(3) {
		t.Fatal("TrySend after Close took the message")
	}
	// What was on the lane stays for the final sweep, and only that.
	if v, ok := m.TryReceive(); !ok || v != 1 {
		t.Fatalf("sweep got %v, %v; want the queued 1", v, ok)
	}
	if v, ok := m.TryReceive(); ok {
		t.Fatalf("sweep got %v after the last queued message", v)
	}
	if st := m.Stats(); st.Dropped != 4 {
		t.Fatalf("dropped %d, want 4 (the refused waiter and three later sends)", st.Dropped)
	}
}

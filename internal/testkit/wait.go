package testkit

import (
	"testing"
	"time"
)

// Watchdog bounds every wait in spooky's tests, so that a bug fails a test
// instead of hanging it. Nothing waits for it to pass: a test that works
// goes on as soon as what it waits for has happened.
const Watchdog = 10 * time.Second

// Recv receives from ch, failing the test, with what in the message, if
// nothing comes within the Watchdog. Call it from the test's goroutine.
func Recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(Watchdog)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("timed out after %v waiting for %s", Watchdog, what)
		panic("unreachable")
	}
}

// WaitFor polls cond until it holds, failing the test, with what in the
// message, if it does not within the Watchdog. It is for state a test can
// look at but no event announces, such as a count on a real socket or an
// answer from a server that is starting; where an event exists (a handler
// that runs, a channel that closes), wait on it instead. Call it from the
// test's goroutine.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if !Eventually(cond) {
		t.Fatalf("timed out after %v waiting for %s", Watchdog, what)
	}
}

// Eventually polls cond until it holds, and reports false if it did not
// within the Watchdog; for callers that say more than WaitFor when it
// fails.
func Eventually(cond func() bool) bool {
	deadline := time.Now().Add(Watchdog)
	// Short pauses at first, since most conditions hold within a few
	// milliseconds; longer ones after, to leave the CPU to what the test
	// waits for.
	pause := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pause) // between polls: nothing here orders goroutines
		pause = min(2*pause, 20*time.Millisecond)
	}
	return true
}

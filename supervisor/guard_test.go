package supervisor_test

import (
	"log/slog"
	"strings"
	"sync"
	"testing"

	"spooky/supervisor"
)

func TestGuardLogsAPanicOnceAndReportsIt(t *testing.T) {
	var out strings.Builder
	log := slog.New(slog.NewTextHandler(&out, nil))
	var got error
	var wg sync.WaitGroup
	wg.Go(supervisor.Guard(log, "health check", func() { panic("boom") }, func(err error) { got = err }))
	wg.Wait()
	if got == nil || !strings.Contains(got.Error(), "boom") {
		t.Fatalf("onPanic got %v", got)
	}
	if n := strings.Count(out.String(), "panic in health check"); n != 1 || !strings.Contains(out.String(), "guard_test.go") {
		t.Fatalf("log (want one line with the stack):\n%s", out.String())
	}

	out.Reset()
	ran := false
	supervisor.Guard(log, "dial", func() { ran = true }, func(error) { t.Fatal("onPanic without a panic") })()
	if !ran || out.Len() != 0 {
		t.Fatalf("ran %v, log %q", ran, out.String())
	}
}

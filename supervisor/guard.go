package supervisor

import (
	"log/slog"

	"github.com/sourcegraph/conc/panics"
)

// Guard wraps f, which a stage runs on a goroutine of its own beside its
// Serve (a health check, a dial, a timer's callback), so that a panic in it
// is logged once, with its stack, as what failed, instead of ending the
// process: the supervisor only sees the goroutine that runs Serve. The
// stage decides what the failure means for the work f was doing, through
// onPanic, which may be nil.
func Guard(log *slog.Logger, what string, f func(), onPanic func(err error)) func() {
	return func() {
		var pc panics.Catcher
		pc.Try(f)
		if r := pc.Recovered(); r != nil {
			err := r.AsError()
			log.Error("panic in "+what, "err", r.Value, "stack", string(r.Stack))
			if onPanic != nil {
				onPanic(err)
			}
		}
	}
}

package pool

import (
	"log/slog"
	"sync"
	"time"
)

// failureLogEvery is the least time between two failure logs of one
// endpoint; what fails in between is counted and said with the next.
const failureLogEvery = 10 * time.Second

// failureLog logs an endpoint's failures with their cause, at most once a
// failureLogEvery, so that an endpoint that is down fills no disk.
type failureLog struct {
	log      *slog.Logger
	endpoint string

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func newFailureLog(log *slog.Logger, endpoint string) *failureLog {
	return &failureLog{log: log, endpoint: endpoint}
}

// failed logs that what (connect, protocol, reset, timeout…) failed
// because of err, unless the endpoint logged a failure lately.
func (f *failureLog) failed(what string, err error) {
	f.mu.Lock()
	now := time.Now()
	if !f.last.IsZero() && now.Sub(f.last) < failureLogEvery {
		f.suppressed++
		f.mu.Unlock()
		return
	}
	suppressed := f.suppressed
	f.last, f.suppressed = now, 0
	f.mu.Unlock()
	f.log.Warn("upstream failure", "endpoint", f.endpoint, "failure", what, "err", err, "suppressed_since_last", suppressed)
}

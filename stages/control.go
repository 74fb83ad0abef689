package stages

import "spooky/config"

// Control is a message on a mailbox's priority lane. The set is closed:
// only types in this package implement it.
type Control interface{ isControl() }

// Reconfigure carries a new, validated configuration snapshot. A stage
// applies it atomically; envelopes already in hand finish on the old one.
// Once applied, the stage calls Applied, so that the control plane can
// apply a config stage by stage, downstream first: the pool knows a new
// endpoint before the balancer can pick it.
type Reconfigure struct {
	Config *config.Config
	// Done, if set, is closed by Applied.
	Done chan struct{}
}

func (Reconfigure) isControl() {}

// Applied tells the sender that the config is in force.
func (r Reconfigure) Applied() {
	if r.Done != nil {
		close(r.Done)
	}
}

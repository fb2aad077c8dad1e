package conformance

import (
	"testing"
	"time"
)

// A case's bound comes from the run's options first, then the target, then
// the 3-minute default.
func TestCaseTimeoutOrder(t *testing.T) {
	for _, c := range []struct {
		opts, target, want time.Duration
	}{
		{0, 0, 3 * time.Minute},
		{0, 10 * time.Minute, 10 * time.Minute},
		{time.Minute, 10 * time.Minute, time.Minute},
		{time.Minute, 0, time.Minute},
	} {
		o := &Options{CaseTimeout: c.opts}
		tg := &Target{CaseTimeout: c.target}
		if got := o.caseTimeout(tg); got != c.want {
			t.Errorf("options %v, target %v: case bound %v, want %v", c.opts, c.target, got, c.want)
		}
	}
}

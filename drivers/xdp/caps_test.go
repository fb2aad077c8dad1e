package xdp

import (
	"strings"
	"testing"
)

// A capability the driver does not have is explained in its Notes (what
// vswitchctl caps prints): atomic batches, which softnic has, here say why
// not.
func TestCapabilitiesExplainNoAtomicBatch(t *testing.T) {
	caps := baseCapabilities(&Config{MaxRules: 16})
	if caps.AtomicBatch {
		t.Fatal("AtomicBatch advertised, but the driver implements no hal.AtomicApplier")
	}
	for _, n := range caps.Notes {
		if strings.HasPrefix(n, "atomic batches: no") {
			return
		}
	}
	t.Fatalf("no note says why there are no atomic batches: %q", caps.Notes)
}

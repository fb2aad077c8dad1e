package xdp

import (
	"slices"
	"strings"
	"testing"
)

// A capability the driver does not have is explained in its Notes (what
// vswitchctl caps prints): atomic batches and crypto, which softnic has,
// here say why not.
func TestCapabilitiesExplainRefusals(t *testing.T) {
	caps := baseCapabilities(&Config{MaxRules: 16})
	if caps.AtomicBatch {
		t.Fatal("AtomicBatch advertised, but the driver implements no hal.AtomicApplier")
	}
	if caps.Crypto {
		t.Fatal("Crypto advertised, but the program holds no keys")
	}
	if !caps.SealedDrop {
		t.Fatal("SealedDrop not advertised, but the program drops sealed frames itself")
	}
	for _, want := range []string{"atomic batches: no", "sealed-address frames (EtherType 0x88B5) are dropped"} {
		if !slices.ContainsFunc(caps.Notes, func(n string) bool { return strings.HasPrefix(n, want) }) {
			t.Errorf("no note starting %q: %q", want, caps.Notes)
		}
	}
}

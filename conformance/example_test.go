package conformance_test

import (
	"context"
	"os"
	"testing"

	"github.com/nicpath/nicpath/conformance"
	"github.com/nicpath/nicpath/conformance/internal/targets"
	"github.com/nicpath/nicpath/hal"
)

// A driver hooks in from its own tests: a Target that opens a fresh NIC and
// a harness to its ports' far side, then Run.
func ExampleRun() {
	var t *testing.T // the driver's TestConformance(t *testing.T)
	target := conformance.Target{
		Name: "mydriver on veth",
		Open: func(ctx context.Context) (hal.NIC, conformance.Harness, error) {
			// Open the driver on its interfaces, and a harness that sends
			// and receives on their far sides (veth peers, cabled ports).
			return nil, nil, hal.ErrNotSupported
		},
		// Differences from softnic the driver documents, case by case:
		// reported, not failed, as long as each still fails.
		Documented: []conformance.Difference{
			{Case: "counters/rule", Capability: "counters per rule", Reason: "hardware counts the FCS"},
		},
	}
	if t != nil {
		conformance.Run(t, target)
	}
}

// The runner's way: a report, written in the three formats.
func ExampleRunSuite() {
	rep := conformance.RunSuite(context.Background(), targets.Softnic(), conformance.Options{Run: "^sanity$"})
	_ = conformance.WriteJUnit(os.Stdout, rep) // for CI
	_ = conformance.WriteJSON(os.Stdout, rep)
	_ = conformance.WriteMarkdown(os.Stdout, rep) // for a person
}

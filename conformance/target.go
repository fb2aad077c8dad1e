package conformance

import (
	"context"
	"time"

	"github.com/nicpath/nicpath/hal"
)

// Target is what the suite runs against: a way to open a fresh NIC together
// with a harness to the far side of its ports.
type Target struct {
	// Name identifies the target in reports ("softnic", "xdp on veth0,veth1").
	Name string

	// Open returns a fresh NIC with no rules installed, and the harness that
	// injects frames into its ports and captures what they emit. It needs at
	// least two ports; cases that need a vport and an uplink, or two vports,
	// skip with a reason when the NIC lacks them. Every case opens its own NIC
	// and closes both the NIC and the harness when it ends.
	Open func(ctx context.Context) (hal.NIC, Harness, error)

	// Documented lists differences from the reference (softnic) that the
	// driver documents, by exact case name. A failing case or differential
	// scenario named there is reported as "documented" with the reason, not
	// failed; a documented case that passes, is skipped or does not exist
	// fails the run (see Difference).
	Documented []Difference

	// Devices, when set, describes the devices behind the NIC's ports for
	// the report's environment (driver, version, firmware as ethtool shows
	// them). It is called once per run, after the capabilities are read.
	Devices func(ctx context.Context) ([]DeviceInfo, error)

	// Timeout bounds how long the suite waits for a frame that must arrive
	// (default 10s: a passing case waits only as long as the frame takes,
	// and a loaded machine can take seconds). Quiet is how long it listens before it concludes that a
	// frame did not arrive (default 100ms; slower datapaths such as a VM want
	// more).
	Timeout time.Duration
	Quiet   time.Duration

	// MinFrame is the shortest frame the harness can send (a packet socket
	// on a real link refuses frames shorter than an Ethernet header); the
	// malformed-frame cases leave shorter ones out and say so. 0: any.
	MinFrame int
	// CaseTimeout bounds one top-level case of this target when the
	// run's Options give none (default 3 minutes): a NIC that takes long
	// to open (a BPF program the verifier walks for seconds, once per
	// subcase) says so here rather than every caller in its options.
	CaseTimeout time.Duration

	// FillLimit is the largest MaxRules for which the full-table case fills
	// the table (default 4096); above it the case skips and says so.
	FillLimit int
}

// Harness reaches the far side of a NIC's ports: what a cable, a veth peer or
// a test's in-memory port would see.
type Harness interface {
	// Send makes frames enter the NIC on port, from outside.
	Send(port hal.PortID, frames ...[]byte) error
	// Recv returns up to max frames the NIC emitted on port since the last
	// Recv, waiting until at least one is there or ctx is done; it returns
	// what it has (possibly nothing, with a nil error) when ctx is done.
	Recv(ctx context.Context, port hal.PortID, max int) ([][]byte, error)
	// Close releases the harness.
	Close() error
}

// LeakChecker is an optional ability of a Harness: after the NIC was closed,
// CheckLeaks reports anything the driver left behind on the device (BPF
// programs still attached, tc filters, maps, file descriptors, goroutines).
type LeakChecker interface {
	CheckLeaks() error
}

// Difference is a documented difference between a driver and the
// reference: one case (or differential scenario) that fails on the driver,
// the capability whose behaviour differs, and why. Names are exact: a
// pattern would let a regression in any case it covers read "documented".
//
// The suite holds the list to the cases it runs: a documented case that
// passes fails the run ("documented difference X now passes: remove it
// from the list"), as does one that is skipped, a name that matches no case
// of the suite, a capability the matrix does not name, an empty reason, or
// a name listed twice. So a list only shrinks as a driver improves.
type Difference struct {
	// Case is the full name of a case, subcase or differential scenario:
	// "decap/vxlan/ipv6", "diff/decap-geneve". It covers that case's own
	// failures, not its subcases'.
	Case string `json:"case"`
	// Capability is the advertised capability whose behaviour differs, as
	// the capability matrix names it ("decap vxlan", "exception path",
	// "priorities"; see CapabilityNames).
	Capability string `json:"capability"`
	// Reason says why the driver differs, in words a reader of the report
	// understands.
	Reason string `json:"reason"`
}

// documented returns the difference that covers the case named name.
func (t *Target) documented(name string) (Difference, bool) {
	for _, d := range t.Documented {
		if d.Case == name {
			return d, true
		}
	}
	return Difference{}, false
}

func (t *Target) timeout() time.Duration {
	if t.Timeout > 0 {
		return t.Timeout
	}
	return 10 * time.Second
}

func (t *Target) quiet() time.Duration {
	if t.Quiet > 0 {
		return t.Quiet
	}
	return 100 * time.Millisecond
}

func (t *Target) fillLimit() int {
	if t.FillLimit > 0 {
		return t.FillLimit
	}
	return 4096
}

package hal

import (
	"fmt"
	"strings"
)

// CounterCaps says which counters a NIC keeps.
type CounterCaps struct {
	PerRule bool // packets and bytes per rule (rules with a Count action at least)
	PerPort bool // rx/tx packets and bytes per port
	// BytesIncludeL2 is true when byte counters include the Ethernet header
	// (as the frame was when it matched), false when they count from L3.
	BytesIncludeL2 bool
}

// Capabilities describe what an opened NIC verifiably does. Drivers fill them
// from what they probed on the device, never from what the device's model is
// supposed to do.
type Capabilities struct {
	Driver   string   // driver name: "softnic", "xdp", "tcflower", …
	Device   string   // what was opened, human readable
	Location Location // where rules live
	MaxRules int      // rules the table holds
	MaxBatch int      // operations one Apply call takes; larger batches are refused
	// MatchFields are the fields rules may match on; MaskedFields the subset
	// that takes partial masks (prefixes, port masks). A field outside
	// MaskedFields is matched exactly or not at all.
	MatchFields  MatchField
	MaskedFields MatchField
	Priorities   bool // overlapping masked rules are resolved by Priority
	Actions      ActionSet
	Encaps       EncapSet // encapsulations for ActionEncap
	Decaps       EncapSet // encapsulations recognised on receive and removed by ActionDecap
	Counters     CounterCaps
	Generations  bool // Activate works; rules of inactive generations are kept but not live
	MaxScopes    int  // distinct scopes; 0 with Generations means unlimited
	Crypto       bool // sealed-address frames are opened on the NIC (SealedAddresses is implemented)
	// ExceptionPath is true when misses and ToHost packets reach ReadExceptions.
	ExceptionPath bool
	// AtomicBatch is true when the driver implements AtomicApplier.
	AtomicBatch bool
	// TunnelFilter is true when the driver implements TunnelTerminator:
	// tunnelled frames for another endpoint are dropped (ReasonNotLocal).
	TunnelFilter bool
	// TunnelMissesUnseen is true when a tunnelled frame that no rule takes
	// never reaches ReadExceptions (it goes on into the device's own
	// stack), although other misses do: the host cannot walk the first
	// packet of a flow that arrives tunnelled, and must program inbound
	// decapsulation before traffic. False, every driver's zero value,
	// means such frames reach the exception path as they arrived, outer
	// headers included, like any miss (when ExceptionPath is true).
	TunnelMissesUnseen bool
	// AddressLearning is true when the driver implements AddressLearner:
	// it reports the source addresses its vports use and their
	// announcements (gratuitous ARP, unsolicited neighbour advertisements).
	AddressLearning bool
	// SealedDrop is true when a sealed-address frame the NIC does not
	// open and forward (no crypto, an unknown key, a bad seal, no sealed
	// route) is dropped on the NIC and counted under ReasonSealed, never
	// handed to the host; false means such frames may reach
	// ReadExceptions with ReasonSealed (the host then drops them).
	SealedDrop bool
	// Notes say, in words, what the driver found while probing (e.g. "generic
	// XDP: no driver-mode support on veth0", "skip_sw refused: no hardware").
	Notes []string
}

// HasMatch reports whether every field in f can be matched.
func (c *Capabilities) HasMatch(f MatchField) bool { return c.MatchFields&f == f }

// HasAction reports whether action kind k is supported.
func (c *Capabilities) HasAction(k ActionKind) bool { return c.Actions.Has(k) }

// String prints a capability matrix, one item a line.
func (c *Capabilities) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "driver:        %s (%s)\n", c.Driver, c.Device)
	fmt.Fprintf(&b, "rules live in: %s\n", c.Location)
	fmt.Fprintf(&b, "max rules:     %d, batch %d\n", c.MaxRules, c.MaxBatch)
	fmt.Fprintf(&b, "match:         %s\n", c.MatchFields)
	fmt.Fprintf(&b, "masked match:  %s (priorities %v)\n", c.MaskedFields, c.Priorities)
	fmt.Fprintf(&b, "actions:       %s\n", c.Actions)
	fmt.Fprintf(&b, "encap:         %s\n", c.Encaps)
	fmt.Fprintf(&b, "decap:         %s\n", c.Decaps)
	fmt.Fprintf(&b, "counters:      per-rule %v, per-port %v, L2 bytes %v\n", c.Counters.PerRule, c.Counters.PerPort, c.Counters.BytesIncludeL2)
	fmt.Fprintf(&b, "generations:   %v (scopes %d)\n", c.Generations, c.MaxScopes)
	fmt.Fprintf(&b, "crypto:        %v (sealed frames dropped on the NIC %v)\n", c.Crypto, c.SealedDrop)
	fmt.Fprintf(&b, "exception:     %v, atomic batch %v\n", c.ExceptionPath, c.AtomicBatch)
	fmt.Fprintf(&b, "tunnel filter: %v\n", c.TunnelFilter)
	if c.TunnelMissesUnseen {
		fmt.Fprintf(&b, "tunnel misses: unseen (a tunnelled frame no rule takes never reaches the host)\n")
	}
	if c.AddressLearning {
		fmt.Fprintf(&b, "learning:      addresses the vports use are reported\n")
	}
	for _, n := range c.Notes {
		fmt.Fprintf(&b, "note:          %s\n", n)
	}
	return b.String()
}

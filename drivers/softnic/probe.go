package softnic

import (
	"fmt"

	"github.com/nicpath/nicpath/hal"
)

// What the NIC can do. softnic has nothing to probe: its capabilities follow
// from its Config alone, where the other drivers ask the kernel or the device
// (xdp/probe_linux.go, tcflower/probe_linux.go).

func (n *NIC) capabilities(cfg Config) hal.Capabilities {
	d := &cfg.Disable
	dev := cfg.Device
	if dev == "" {
		dev = fmt.Sprintf("software NIC, %d ports", len(cfg.Ports))
	}
	all := hal.EncapsOf(hal.EncapVXLAN, hal.EncapGeneve, hal.EncapNVGRE)
	c := hal.Capabilities{
		Driver:        DriverName,
		Device:        dev,
		Location:      hal.LocationUser,
		MaxRules:      n.maxRules,
		MaxBatch:      n.maxBatch,
		MatchFields:   hal.MatchAll &^ d.MatchFields,
		MaskedFields:  hal.MatchAll &^ d.MatchFields &^ d.MaskedFields,
		Priorities:    true,
		Actions:       hal.AllActions &^ d.Actions,
		Encaps:        all &^ d.Encaps,
		Decaps:        all &^ d.Decaps,
		Counters:      hal.CounterCaps{PerRule: !d.Actions.Has(hal.ActionCount), PerPort: true, BytesIncludeL2: true},
		Generations:   !d.Generations,
		Crypto:        cfg.Crypto,
		ExceptionPath: true,
		AtomicBatch:   true,
		TunnelFilter:  !d.TunnelFilter,
		// Learned from the exception path (learn.go).
		AddressLearning: true,
		// Sealed frames it cannot open or route are dropped (sealed.go).
		SealedDrop: true,
		Notes:      []string{"rules live in process memory; counters count the frame as it matched, Ethernet header included"},
	}
	if c.Generations {
		c.MaxScopes = n.maxScopes
	}
	if !c.Actions.Has(hal.ActionDecap) {
		c.Decaps = 0
	}
	if !c.Actions.Has(hal.ActionEncap) {
		c.Encaps = 0
	}
	if cfg.Crypto {
		c.Notes = append(c.Notes, "sealed addresses opened on the fast path; their clear frames never reach the exception path")
	}
	if *d != (Disable{}) {
		c.Notes = append(c.Notes, "capabilities reduced by configuration")
	}
	return c
}

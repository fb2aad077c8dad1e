package xdp

import (
	"cmp"
	"fmt"

	"github.com/nicpath/nicpath/hal"
)

// DriverName is the name the driver reports in Capabilities and errors.
const DriverName = "xdp"

// Mode is how the program is attached to an interface.
type Mode uint8

const (
	// ModeAuto tries driver (native) mode and falls back to generic mode.
	ModeAuto Mode = iota
	// ModeDriver attaches in the driver's receive path or fails.
	ModeDriver
	// ModeGeneric attaches after the kernel built an skb (any interface).
	ModeGeneric
	// ModeOffload asks the NIC to run the program itself. It is reported
	// only when the attach succeeded.
	ModeOffload
)

func (m Mode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeDriver:
		return "driver"
	case ModeGeneric:
		return "generic"
	case ModeOffload:
		return "offload"
	}
	return "mode?"
}

// PortConfig names one port of the NIC.
type PortConfig struct {
	// ID is the port's hal.PortID, 1 to MaxPorts-1; 0 picks the next free.
	ID hal.PortID
	// Name is the Linux interface. An empty name makes a port without a
	// device: rules may output to it and Run can send frames into it, but
	// no traffic ever crosses it (for tests and dry runs).
	Name string
	Kind hal.PortKind
}

// Config says what Open opens.
type Config struct {
	// NetNS is the path of the network namespace the interfaces live in
	// (e.g. /var/run/netns/NAME); empty means the caller's. The driver
	// enters it only on a locked OS thread for the calls that resolve
	// interfaces, and leaves the caller's threads alone.
	NetNS string
	Ports []PortConfig
	Mode  Mode
	// MaxRules is the size of the flow hash (entries; each holds up to two
	// rules with the same match). Default 65536. Exact rules of
	// untunnelled IPv4 frames live in table4, an mmapped array of
	// 2*MaxRules+8 slots of 64 bytes, with their second rules (shadows,
	// two priorities) in sides4, an mmapped array of MaxRules+2 of 32
	// bytes, and their actions in progs4, an mmapped array of MaxRules+2
	// programs of 160 bytes (together about 21 MB at the default,
	// allocated and mapped at Open), and in its overflow, a hash of up
	// to MaxRules entries allocated as they come. Open refuses a
	// negative value or one above MostRules.
	MaxRules int
	// MaxScopes is the size of the active-generation array. Default 4096;
	// Open refuses a value above MostScopes.
	MaxScopes int
	// ExceptionBuffer is the per-CPU size, in bytes, of the exception ring
	// (rounded up to pages). Default 1 MiB.
	ExceptionBuffer int
	// MaxBatch bounds the operations of one Apply call
	// (Capabilities.MaxBatch); a larger batch is refused whole with
	// hal.ErrBatchTooLarge. Default DefaultMaxBatch; negative is refused
	// by Open.
	MaxBatch int
}

func (c *Config) withDefaults() Config {
	d := *c
	if d.MaxRules <= 0 {
		d.MaxRules = 65536
	}
	if d.MaxScopes <= 0 {
		d.MaxScopes = 4096
	}
	if d.ExceptionBuffer <= 0 {
		d.ExceptionBuffer = 1 << 20
	}
	if d.MaxBatch == 0 {
		d.MaxBatch = DefaultMaxBatch
	}
	d.Ports = append([]PortConfig(nil), c.Ports...)
	used := map[hal.PortID]bool{}
	for _, p := range d.Ports {
		used[p.ID] = true
	}
	next := hal.PortID(1)
	for i := range d.Ports {
		if d.Ports[i].ID != 0 {
			continue
		}
		for used[next] {
			next++
		}
		d.Ports[i].ID = next
		used[next] = true
	}
	for i := range d.Ports {
		if d.Ports[i].Kind == 0 {
			d.Ports[i].Kind = hal.PortVPort
		}
	}
	return d
}

// MostRules is the largest Config.MaxRules Open takes: the kernel's map
// sizes are 32-bit counts of entries (table4 holds 2*MaxRules slots), and at
// this size table4, sides4 and progs4 alone map about 20 GiB.
const MostRules = 1 << 26

// MostScopes is the largest Config.MaxScopes Open takes: a table4 slot
// holds its rule's scope in 16 bits, so that the slot is one cache line.
const MostScopes = 1 << 16

// scopesNote says why MaxScopes is bounded.
const scopesNote = "scopes: at most 65536 (Config.MaxScopes, MostScopes): a rule's scope is 16 bits in table4's 64-byte slot"

// checkScopes refuses a Config.MaxScopes Open cannot take.
func checkScopes(maxScopes int) error {
	if maxScopes > MostScopes {
		return fmt.Errorf("xdp: MaxScopes %d is above %d: table4 holds a rule's scope in 16 bits", maxScopes, MostScopes)
	}
	return nil
}

// DefaultMaxBatch bounds one Apply call unless Config.MaxBatch says
// otherwise. Batches are written with BPF batch updates; the bound only
// keeps one call's memory and latency in reason.
const DefaultMaxBatch = 1 << 20

// atomicBatchNote says why AtomicBatch is false: the rules are BPF map
// entries, written one after another.
const atomicBatchNote = "atomic batches: no (no hal.AtomicApplier): a batch's rules are BPF map entries written one after another, so each operation lands or fails on its own and its result says which; a failed batch may have applied part of itself"

// sealedNote says why Crypto is false and what becomes of sealed frames.
const sealedNote = "sealed-address frames (EtherType 0x88B5) are dropped ahead of every rule and counted under reason sealed: no crypto (the program holds no keys), so the NIC fails closed"

// baseCapabilities is what the loaded program does whatever the device: the
// probe in Open adds where the rules live and what it found per port.
func baseCapabilities(cfg *Config) hal.Capabilities {
	return hal.Capabilities{
		Driver:   DriverName,
		Location: hal.LocationKernel,
		MaxRules: cfg.MaxRules,
		MaxBatch: cmp.Or(cfg.MaxBatch, DefaultMaxBatch),
		// Tuple-space search: any field, any bit mask, up to maxMasks
		// distinct mask shapes, overlaps resolved by priority.
		MatchFields:   hal.MatchAll,
		MaskedFields:  hal.MatchAll,
		Priorities:    true,
		Actions:       hal.AllActions,
		Encaps:        hal.EncapsOf(hal.EncapVXLAN, hal.EncapGeneve, hal.EncapNVGRE),
		Decaps:        hal.EncapsOf(hal.EncapVXLAN, hal.EncapGeneve, hal.EncapNVGRE),
		Counters:      hal.CounterCaps{PerRule: true, PerPort: true, BytesIncludeL2: true},
		Generations:   true,
		MaxScopes:     cfg.MaxScopes,
		ExceptionPath: true,
		TunnelFilter:  true,
		// Learned by the exception reader (learn_linux.go).
		AddressLearning: true,
		SealedDrop:      true, // sealedNote
		Notes: []string{
			"encap: IPv4 or IPv6 outer headers (full UDP checksum over IPv6); Geneve without options",
			"IPv6 extension headers go to the host (unsupported)",
			"at most 16 distinct mask shapes; 2 rules per identical match",
			"partial TCP/UDP checksums (a sender's checksum offload) are completed on every frame that leaves, to a port or to the host",
			fmt.Sprintf("tunnel filter: at most %d addresses and groups per uplink", maxEPAddrs),
			atomicBatchNote,
			scopesNote,
			sealedNote,
		},
	}
}

package tcflower

import (
	"cmp"
	"fmt"

	"github.com/nicpath/nicpath/hal"
)

// Placement says where rules may live.
type Placement uint8

const (
	// PlaceAny lets the kernel put each rule in hardware where the device
	// takes it and in software otherwise (no skip flag). On a device without
	// tc offload the driver programs skip_hw rules instead, so that each
	// rule's place is known rather than left to chance.
	PlaceAny Placement = iota
	// PlaceHardware allows hardware only (skip_sw). Open fails with
	// hal.ErrNotSupported when the device has no tc offload.
	PlaceHardware
	// PlaceSoftware allows the kernel's software path only (skip_hw).
	PlaceSoftware
)

func (p Placement) String() string {
	switch p {
	case PlaceAny:
		return "any"
	case PlaceHardware:
		return "hardware"
	case PlaceSoftware:
		return "software"
	}
	return "placement(?)"
}

// PortConfig names one port.
type PortConfig struct {
	Name string       // the Linux interface
	Kind hal.PortKind // hal.PortVPort or hal.PortUplink
	// ID is the port's hal ID; 0 means its position in Config.Ports plus 1.
	ID hal.PortID
}

// Config says what Open attaches to.
type Config struct {
	// Ports are the interfaces the rules are for. Each gets a clsact qdisc
	// whose ingress is the driver's shared block; none may have a clsact
	// qdisc already.
	Ports []PortConfig
	// Tunnels names flow-based ("external") tunnel devices by kind, e.g.
	// {hal.EncapVXLAN: "vx0", hal.EncapGeneve: "gnv0", hal.EncapNVGRE:
	// "gt0"}: encapsulated frames leave through them (tunnel_key set +
	// mirred) and decapsulated ones arrive on their ingress, where the
	// block sees them with the outer headers as metadata. The user creates
	// them; without one the kind is neither an encap nor a decap
	// capability. NVGRE's device is a gretap one and an encap only (see
	// the package doc).
	Tunnels map[hal.EncapKind]string
	// Placement says where rules may live.
	Placement Placement
	// NetNS is the path of the network namespace the interfaces are in
	// (e.g. /run/netns/blue); empty means the caller's.
	NetNS string
	// Block is the index of the shared tc block; 0 picks a free one.
	Block uint32
	// MaxRules is the table size (Capabilities.MaxRules): an add beyond it
	// is refused with hal.ErrTableFull and nothing installed is touched.
	// Default DefaultMaxRules; negative is refused by Open.
	MaxRules int
	// MaxBatch bounds the operations of one Apply call
	// (Capabilities.MaxBatch); a larger batch is refused whole with
	// hal.ErrBatchTooLarge. Default DefaultMaxBatch; negative is refused
	// by Open.
	MaxBatch int
}

// DefaultMaxRules is the table size unless Config.MaxRules says otherwise.
// Software filters have no table size, only kernel memory; the bound keeps
// one NIC from exhausting it and gives callers a table size to plan with.
const DefaultMaxRules = 1 << 20

// DefaultMaxBatch bounds one Apply call unless Config.MaxBatch says
// otherwise: Apply holds the NIC's lock for its whole batch, and a batch of
// a million filters already takes the kernel seconds.
const DefaultMaxBatch = 1 << 20

// checkLimits refuses limits Open cannot take.
func (c *Config) checkLimits() error {
	if c.MaxRules < 0 {
		return fmt.Errorf("tcflower: MaxRules %d is negative", c.MaxRules)
	}
	if c.MaxBatch < 0 {
		return fmt.Errorf("tcflower: MaxBatch %d is negative", c.MaxBatch)
	}
	return nil
}

func (c *Config) maxRules() int { return cmp.Or(c.MaxRules, DefaultMaxRules) }
func (c *Config) maxBatch() int { return cmp.Or(c.MaxBatch, DefaultMaxBatch) }

// atomicBatchNote says why Capabilities.AtomicBatch is false.
const atomicBatchNote = "atomic batches: no (no hal.AtomicApplier): tc has no transaction over filters; the kernel runs each filter message of a batch on its own and answers it on its own, so a failed batch may have applied part of itself, and its results say which operations landed. Rolling back would be more messages, each of which can fail in turn, and packets would meet the partial batch meanwhile"

package tcflower

import "github.com/nicpath/nicpath/hal"

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
}

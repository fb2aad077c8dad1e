package devices

import (
	"fmt"

	"github.com/nicpath/nicpath/hal"
)

// Ports names a device NIC's ports and their far sides.
type Ports struct {
	// NetNS is the path of the namespace the interfaces are in; empty
	// means the caller's.
	NetNS string
	// VPorts and Uplinks are the interfaces the driver attaches to.
	VPorts  []string
	Uplinks []string
	// Peers are the far sides, in the order VPorts then Uplinks; empty
	// means each interface's veth peer.
	Peers []string
	// Tunnels names flow-based tunnel devices by kind (tcflower).
	Tunnels map[hal.EncapKind]string
	// MaxRules sizes the table where the driver takes a size, so that the
	// full-table case can fill it (0: the driver's default).
	MaxRules int
	// MaxBatch bounds one Apply call where the driver takes a bound, so
	// that the too-large case can build a batch one larger (0: the
	// driver's default).
	MaxBatch int
}

// port is one interface with its hal ID and kind.
type port struct {
	id   hal.PortID
	name string
	kind hal.PortKind
	peer string
}

// list numbers the ports 1, 2, … (vports first) and finds their peers.
func (p *Ports) list(vethPeer func(ns, name string) (string, error)) ([]port, error) {
	var out []port
	for _, n := range p.VPorts {
		out = append(out, port{id: hal.PortID(len(out) + 1), name: n, kind: hal.PortVPort})
	}
	for _, n := range p.Uplinks {
		out = append(out, port{id: hal.PortID(len(out) + 1), name: n, kind: hal.PortUplink})
	}
	if len(out) < 2 {
		return nil, fmt.Errorf("the suite needs at least two ports; got %d", len(out))
	}
	if len(p.Peers) != 0 && len(p.Peers) != len(out) {
		return nil, fmt.Errorf("%d peers for %d ports", len(p.Peers), len(out))
	}
	for i := range out {
		if len(p.Peers) > 0 {
			out[i].peer = p.Peers[i]
			continue
		}
		peer, err := vethPeer(p.NetNS, out[i].name)
		if err != nil {
			return nil, err
		}
		out[i].peer = peer
	}
	return out, nil
}

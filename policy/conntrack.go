package policy

import (
	"net/netip"
	"sync"
)

// ConnTable is a reference connection tracker for stateful ACLs: Record the
// verdict of every packet that passed, and pass Options (or Established) to
// EvaluateWith for later packets. It never expires entries; a vswitch
// keeps its own table with timeouts and uses this one as the model of the
// semantics:
//
// When a stateful allow passed packet p through layer (VM, D), a packet q
// is established at layer (VM, D.Opposite()) if q's addresses, ports and
// protocol are p's swapped (q = p.Reverse() on those fields).
type ConnTable struct {
	mu    sync.Mutex
	conns map[connKey]struct{}
}

type connKey struct {
	vm               string
	dir              Direction
	src, dst         netip.Addr
	proto            uint8
	srcPort, dstPort uint16
}

// NewConnTable returns an empty table.
func NewConnTable() *ConnTable { return &ConnTable{conns: map[connKey]struct{}{}} }

func keyOf(layer ACLLayer, p Packet) connKey {
	k := connKey{vm: layer.VM, dir: layer.Direction, src: p.Src, dst: p.Dst, proto: p.Protocol}
	if p.HasPorts() {
		k.srcPort, k.dstPort = p.SrcPort, p.DstPort
	}
	return k
}

// Record remembers the connections that v's stateful allows opened for pkt
// (the packet as evaluated, before v's rewrites). It returns how many
// layers it recorded.
func (t *ConnTable) Record(pkt Packet, v Verdict) int {
	if v.Action == Drop {
		return 0
	}
	n := 0
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, d := range v.ACLs {
		if !d.Stateful || d.Established {
			continue
		}
		// The inbound layer saw the packet after source NAT was undone;
		// the reply it must recognize is the reverse of that packet.
		p := pkt
		if d.Direction == In && v.Rewrite.Src.IsValid() {
			p.Src = v.Rewrite.Src
		}
		reply := ACLLayer{VM: d.VM, Direction: d.Direction.Opposite()}
		t.conns[keyOf(reply, p.Reverse())] = struct{}{}
		n++
	}
	return n
}

// Established reports whether pkt belongs to a recorded connection at layer.
func (t *ConnTable) Established(layer ACLLayer, pkt Packet) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.conns[keyOf(layer, pkt)]
	return ok
}

// Len returns the number of recorded (layer, connection) entries.
func (t *ConnTable) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

// Options returns EvalOptions that consult t.
func (t *ConnTable) Options() EvalOptions { return EvalOptions{Established: t.Established} }

// Package vswitchtest simulates hosts in process: each a NIC programmed by
// its vswitch, with the far sides of its ports at hand, and an in-memory
// underlay between the hosts' uplinks keyed by provider address. A send
// carries a frame to the end of its walk, like a poll-mode datapath:
// through exception paths, vswitches and the underlay, until every frame
// it caused has landed on a vport or left on an uplink toward an address
// that is no host. A host may be a virtualization gateway (NewGatewayHost)
// with an external port. The in-process demo and the multi-host migration
// bed are built on it.
//
// The NIC comes from a Factory: Softnic, the reference NIC, by default, or
// a vendor's own model of its NIC, so that the same stories (the demo's,
// a migration's) run on it. A Factory's NIC must run its datapath in the
// caller's goroutine, as softnic does: a frame sent into a far port has
// been forwarded, or queued on the exception path, when Send returns, and
// ReadExceptions with a context that is already done returns what is
// queued.
package vswitchtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/gateway"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/vswitch"
)

// FarPort is the far end of one of a NIC's ports: the VM's side of a vport,
// the wire's side of an uplink.
type FarPort interface {
	// Send hands frames to the NIC's port, as if the VM (or the wire)
	// transmitted them, and returns how many it took.
	Send(frames [][]byte) (int, error)
	// Recv fills bufs with the frames the NIC sent out of the port, their
	// lengths into sizes, and returns how many; 0 when none waits.
	Recv(bufs [][]byte, sizes []int) (int, error)
}

// PortSpec is one port a Factory gives the NIC it builds.
type PortSpec struct {
	Name string // the VM's name for a vport; "uplink" for the uplink
	Kind hal.PortKind
	MAC  hal.MAC
	MTU  int // 0: the NIC's default
}

// Factory builds the NIC of host with ports (in order), and returns it with
// the far side of each of its ports by port ID.
type Factory func(host string, ports []PortSpec) (hal.NIC, map[hal.PortID]FarPort, error)

// Softnic is the Factory of the reference NIC (drivers/softnic).
func Softnic(host string, ports []PortSpec) (hal.NIC, map[hal.PortID]FarPort, error) {
	pcs := make([]softnic.PortConfig, len(ports))
	for i, p := range ports {
		pcs[i] = softnic.PortConfig{Name: p.Name, Kind: p.Kind, MAC: p.MAC, MTU: p.MTU}
	}
	nic, err := softnic.New(softnic.Config{Device: host, Ports: pcs})
	if err != nil {
		return nil, nil, err
	}
	far := map[hal.PortID]FarPort{}
	for _, p := range nic.Ports() {
		fp, err := nic.Port(p.ID)
		if err != nil {
			nic.Close()
			return nil, nil, err
		}
		far[p.ID] = fp
	}
	return nic, far, nil
}

// Host is one simulated machine: a host with VMs (Switch set) or a
// virtualization gateway (Gateway set, see NewGatewayHost).
type Host struct {
	Name    string
	PA      netip.Addr
	NIC     hal.NIC
	Switch  *vswitch.Switch
	Gateway *gateway.Gateway
	Ports   map[string]hal.PortID // VM name → vport
	VMOf    map[hal.PortID]string
	Uplink  hal.PortID
	Far     map[hal.PortID]FarPort // the far side of every port
	// Handler, when set, takes the host's exceptions instead of Switch: a
	// layer in front of the switch (directory/ondemand).
	Handler interface {
		HandleBatch(context.Context, []hal.Exception) error
	}
	ids   []hal.PortID // Far's ports in order, for deterministic draining
	batch []hal.Exception
}

// UplinkMTU leaves room for a 1500-byte inner frame and its encapsulation.
const UplinkMTU = 1600

// NewHost builds host ph of st on the reference NIC: see NewHostOn.
func NewHost(ph policy.Host, st *policy.State, vms []policy.VM, uplinkMAC hal.MAC, log *slog.Logger) (*Host, error) {
	return NewHostOn(Softnic, ph, st, vms, uplinkMAC, log)
}

// NewHostOn builds host ph of st: a NIC from factory with a vport for each
// of vms (their MACs from the policy) and an uplink with uplinkMAC, and a
// vswitch on it running st.
func NewHostOn(factory Factory, ph policy.Host, st *policy.State, vms []policy.VM, uplinkMAC hal.MAC, log *slog.Logger) (*Host, error) {
	specs := make([]PortSpec, 0, len(vms)+1)
	for _, vm := range vms {
		specs = append(specs, PortSpec{Name: vm.Name, Kind: hal.PortVPort, MAC: hal.MAC(vm.MAC)})
	}
	specs = append(specs, PortSpec{Name: "uplink", Kind: hal.PortUplink, MAC: uplinkMAC, MTU: UplinkMTU})
	nic, far, err := factory(ph.Name, specs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ph.Name, err)
	}
	h, err := newHost(ph.Name, ph.PA, nic, far)
	if err != nil {
		return nil, err
	}
	// The underlay carries a frame to the host whose PA is its outer
	// destination, and every uplink of a fabric has uplinkMAC: that is the
	// next hop's MAC. (The vswitch's default, broadcast, is refused by a
	// receiver that accepts tunnelled frames only for its own MAC.)
	h.Switch, err = vswitch.New(vswitch.Config{NIC: nic, Host: ph.Name, State: st, Ports: h.Ports, Uplink: h.Uplink, NextHopMAC: uplinkMAC, Logger: log})
	if err != nil {
		nic.Close()
		return nil, fmt.Errorf("%s: %w", ph.Name, err)
	}
	return h, nil
}

func newHost(name string, pa netip.Addr, nic hal.NIC, far map[hal.PortID]FarPort) (*Host, error) {
	h := &Host{Name: name, PA: pa, NIC: nic, Ports: map[string]hal.PortID{}, VMOf: map[hal.PortID]string{},
		Far: map[hal.PortID]FarPort{}}
	for _, p := range nic.Ports() {
		fp := far[p.ID]
		if fp == nil {
			nic.Close()
			return nil, fmt.Errorf("%s: the factory gave no far side for port %d (%s)", name, p.ID, p.Name)
		}
		h.Far[p.ID] = fp
		h.ids = append(h.ids, p.ID)
		if p.Kind == hal.PortUplink {
			h.Uplink = p.ID
			continue
		}
		h.Ports[p.Name], h.VMOf[p.ID] = p.ID, p.Name
	}
	sort.Slice(h.ids, func(i, j int) bool { return h.ids[i] < h.ids[j] })
	h.batch = make([]hal.Exception, 64)
	for i := range h.batch {
		h.batch[i].Buf = make([]byte, 2048)
	}
	return h, nil
}

// ExternalPort is the name a gateway host's external port has in Ports:
// Send(gw, ExternalPort, frame) puts a non-virtualized host's frame on it,
// and what the gateway sends there is a Delivery with VM ExternalPort.
const ExternalPort = "external"

// NewGatewayHost builds a gateway host on the reference NIC: see
// NewGatewayHostOn.
func NewGatewayHost(gw policy.Gateway, st *policy.State, uplinkMAC, externalMAC hal.MAC, cfg gateway.Config) (*Host, error) {
	return NewGatewayHostOn(Softnic, gw, st, uplinkMAC, externalMAC, cfg)
}

// NewGatewayHostOn builds a gateway host playing policy gateway gw of st: a
// NIC from factory with an external port (externalMAC) on the physical
// network of non-virtualized hosts and an uplink (uplinkMAC, which is also
// the underlay next hop's MAC, as for NewHost), and a gateway.Gateway on
// it. cfg gives the gateway's external settings (Address, Router,
// Neighbors, ports); its NIC, State, Name, Uplink, External and NextHopMAC
// are set here.
func NewGatewayHostOn(factory Factory, gw policy.Gateway, st *policy.State, uplinkMAC, externalMAC hal.MAC, cfg gateway.Config) (*Host, error) {
	nic, far, err := factory(gw.Name, []PortSpec{
		{Name: ExternalPort, Kind: hal.PortVPort, MAC: externalMAC},
		{Name: "uplink", Kind: hal.PortUplink, MAC: uplinkMAC, MTU: UplinkMTU},
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", gw.Name, err)
	}
	h, err := newHost(gw.Name, gw.PA, nic, far)
	if err != nil {
		return nil, err
	}
	cfg.NIC, cfg.State, cfg.Name = nic, st, gw.Name
	cfg.Uplink, cfg.External, cfg.NextHopMAC = h.Uplink, h.Ports[ExternalPort], uplinkMAC
	if h.Gateway, err = gateway.New(cfg); err != nil {
		nic.Close()
		return nil, fmt.Errorf("%s: %w", gw.Name, err)
	}
	return h, nil
}

// Close closes the host's switch (or gateway) and NIC.
func (h *Host) Close() {
	if h.Switch != nil {
		h.Switch.Close()
	}
	if h.Gateway != nil {
		h.Gateway.Close(context.Background())
	}
	h.NIC.Close()
}

// Pump hands the host's queued exception packets to its vswitch until none
// is left: what vswitch.Run does, made synchronous.
func (h *Host) Pump() error {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for {
		n, err := h.NIC.ReadExceptions(done, h.batch)
		if n == 0 || err != nil {
			return nil
		}
		var hb interface {
			HandleBatch(context.Context, []hal.Exception) error
		}
		switch {
		case h.Handler != nil:
			hb = h.Handler
		case h.Switch == nil:
			hb = h.Gateway
		default:
			hb = h.Switch
		}
		if err := hb.HandleBatch(context.Background(), h.batch[:n]); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
	}
}

// Delivery is a frame that left the fabric on a vport (VM set) or on an
// uplink toward an address that is no host (VM empty).
type Delivery struct {
	Host  *Host
	VM    string
	Frame []byte
}

func (d Delivery) String() string {
	if d.VM == "" {
		return d.Host.Name + " uplink"
	}
	return d.VM + " on " + d.Host.Name
}

// Underlay is the wire between the hosts' uplinks.
type Underlay struct {
	byPA  map[netip.Addr]*Host
	bufs  [][]byte
	sizes []int
}

// NewUnderlay returns an underlay without hosts.
func NewUnderlay() *Underlay {
	u := &Underlay{byPA: map[netip.Addr]*Host{}, bufs: make([][]byte, 32)}
	for i := range u.bufs {
		u.bufs[i] = make([]byte, 2048)
	}
	u.sizes = make([]int, len(u.bufs))
	return u
}

// Add cables h's uplink to the underlay at its provider address.
func (u *Underlay) Add(h *Host) { u.byPA[h.PA] = h }

// MaxHops bounds how often frames may cross the underlay for one send; a
// loop between hosts is reported, not spun on.
const MaxHops = 16

// Send has vm, on host from, transmit frame, and carries the frame to the
// end of its walk; it returns where it (and anything it caused) landed. One
// goroutine at a time.
func (u *Underlay) Send(from *Host, vm string, frame []byte) ([]Delivery, error) {
	if _, err := from.Far[from.Ports[vm]].Send([][]byte{frame}); err != nil {
		return nil, err
	}
	return u.Settle(from)
}

// Settle runs the fabric from host first (whose ports were just given
// frames) until every frame has landed somewhere: exceptions go to the
// host's vswitch, encapsulated frames on an uplink travel the underlay to
// the host whose provider address they are for.
func (u *Underlay) Settle(first *Host) ([]Delivery, error) {
	var out []Delivery
	queue := []*Host{first}
	for hops := 0; len(queue) > 0; hops++ {
		if hops > MaxHops {
			return out, errors.New("frames loop between hosts")
		}
		h := queue[0]
		queue = queue[1:]
		if err := h.Pump(); err != nil {
			return out, err
		}
		for _, id := range h.ids {
			fp := h.Far[id]
			for {
				n, err := fp.Recv(u.bufs, u.sizes)
				if err != nil {
					return out, err
				}
				for i := range n {
					fr := append([]byte(nil), u.bufs[i][:u.sizes[i]]...)
					if id != h.Uplink {
						out = append(out, Delivery{Host: h, VM: h.VMOf[id], Frame: fr})
						continue
					}
					var k hal.FlowKey
					var l wire.Layout
					if err := wire.Parse(fr, id, &k, &l); err == nil && k.TunKind != hal.EncapNone {
						if h2 := u.byPA[hal.AddrFrom16(k.TunDst)]; h2 != nil {
							if _, err := h2.Far[h2.Uplink].Send([][]byte{fr}); err != nil {
								return out, err
							}
							queue = append(queue, h2)
							continue
						}
					}
					out = append(out, Delivery{Host: h, Frame: fr})
				}
				if n < len(u.bufs) {
					break
				}
			}
		}
	}
	return out, nil
}

package main

import (
	"context"
	"fmt"
	"net/netip"
	"sort"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/vswitch"
)

// host is one simulated machine of the in-process story: a software NIC, the
// vswitch programming it, and the far sides of its ports (the VMs' virtual
// network cards and the uplink's cable).
type host struct {
	name   string
	pa     netip.Addr
	nic    *softnic.NIC
	sw     *vswitch.Switch
	ports  map[string]hal.PortID // VM name → vport
	vmOf   map[hal.PortID]string
	uplink hal.PortID
	far    map[hal.PortID]*softnic.Port
	batch  []hal.Exception
}

// delivery is a frame that left the topology on a VM's vport (or on an
// uplink toward an address that is no host of the story, such as a gateway).
type delivery struct {
	host  *host
	vm    string // empty for an uplink
	frame []byte
}

func (d delivery) String() string {
	if d.vm == "" {
		return d.host.name + " uplink"
	}
	return d.vm + " on " + d.host.name
}

// fabric is the hosts and the in-memory underlay wire between their uplinks.
type fabric struct {
	st    *policy.State
	hosts []*host
	byPA  map[netip.Addr]*host
	byNm  map[string]*host
	// Counts of the NIC-side exception path, so that the story can show
	// how many packets reached a host's vswitch.
}

// uplinkMAC is the uplink's own address on every simulated host; the
// underlay is one segment, so it only needs to be well formed.
var uplinkMAC = hal.MustMAC("02:00:00:00:ff:01")

// newFabric builds one softnic NIC and one vswitch per host of st. Every VM
// that runs on a host, or has a shadow location there (a migration target),
// gets a vport on it, as vswitch.Config.Ports asks.
func newFabric(st *policy.State) (*fabric, error) {
	fb := &fabric{st: st, byPA: map[netip.Addr]*host{}, byNm: map[string]*host{}}
	for _, h := range st.Hosts() {
		var pcs []softnic.PortConfig
		for _, vm := range st.VMs() {
			here := vm.Host == h.Name
			if sh, ok := st.Shadow(vm.Name); ok && sh.Host == h.Name {
				here = true
			}
			if here {
				pcs = append(pcs, softnic.PortConfig{Name: vm.Name, Kind: hal.PortVPort, MAC: hal.MAC(vm.MAC)})
			}
		}
		// The uplink carries encapsulated frames: room for the outer headers.
		pcs = append(pcs, softnic.PortConfig{Name: "uplink", Kind: hal.PortUplink, MAC: uplinkMAC, MTU: 1600})
		nic, err := softnic.New(softnic.Config{Device: h.Name, Ports: pcs})
		if err != nil {
			fb.close()
			return nil, fmt.Errorf("%s: %w", h.Name, err)
		}
		hs := &host{name: h.Name, pa: h.PA, nic: nic, ports: map[string]hal.PortID{},
			vmOf: map[hal.PortID]string{}, far: map[hal.PortID]*softnic.Port{}}
		for _, p := range nic.Ports() {
			fp, err := nic.Port(p.ID)
			if err != nil {
				nic.Close()
				fb.close()
				return nil, err
			}
			hs.far[p.ID] = fp
			if p.Kind == hal.PortUplink {
				hs.uplink = p.ID
				continue
			}
			hs.ports[p.Name], hs.vmOf[p.ID] = p.ID, p.Name
		}
		hs.batch = make([]hal.Exception, 64)
		for i := range hs.batch {
			hs.batch[i].Buf = make([]byte, 2048)
		}
		sw, err := vswitch.New(vswitch.Config{NIC: nic, Host: h.Name, State: st, Ports: hs.ports, Uplink: hs.uplink})
		if err != nil {
			nic.Close()
			fb.close()
			return nil, fmt.Errorf("%s: %w", h.Name, err)
		}
		hs.sw = sw
		fb.hosts = append(fb.hosts, hs)
		fb.byPA[h.PA] = hs
		fb.byNm[h.Name] = hs
	}
	return fb, nil
}

func (fb *fabric) close() {
	for _, h := range fb.hosts {
		h.sw.Close()
		h.nic.Close()
	}
}

// vmHost returns the host where vm runs now.
func (fb *fabric) vmHost(vm string) (*host, error) {
	name, _, _, ok := fb.st.Location(vm)
	if !ok {
		return nil, fmt.Errorf("no VM %q in the policy", vm)
	}
	h := fb.byNm[name]
	if h == nil {
		return nil, fmt.Errorf("VM %q runs on %s, which is not simulated", vm, name)
	}
	return h, nil
}

// send has vm transmit frame and runs the fabric until every frame has
// landed somewhere: exceptions go to the host's vswitch (as its Run loop
// would take them), encapsulated frames on an uplink travel the wire to the
// host whose PA they are addressed to.
func (fb *fabric) send(vm string, frame []byte) ([]delivery, error) {
	h, err := fb.vmHost(vm)
	if err != nil {
		return nil, err
	}
	if _, err := h.far[h.ports[vm]].Send([][]byte{frame}); err != nil {
		return nil, err
	}
	return fb.settle(h)
}

// maxHops bounds how often frames may cross the wire for one send; a loop
// between hosts is a bug the story reports rather than spins on.
const maxHops = 16

func (fb *fabric) settle(first *host) ([]delivery, error) {
	var out []delivery
	queue := []*host{first}
	bufs := make([][]byte, 16)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	sizes := make([]int, len(bufs))
	for hops := 0; len(queue) > 0; hops++ {
		if hops > maxHops {
			return out, fmt.Errorf("frames loop between hosts")
		}
		h := queue[0]
		queue = queue[1:]
		if err := h.pump(); err != nil {
			return out, err
		}
		ids := make([]hal.PortID, 0, len(h.far))
		for id := range h.far {
			ids = append(ids, id)
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		for _, id := range ids {
			fp := h.far[id]
			for {
				n, err := fp.Recv(bufs, sizes)
				if err != nil {
					return out, err
				}
				for i := 0; i < n; i++ {
					fr := append([]byte(nil), bufs[i][:sizes[i]]...)
					if id != h.uplink {
						out = append(out, delivery{host: h, vm: h.vmOf[id], frame: fr})
						continue
					}
					var k hal.FlowKey
					var l wire.Layout
					if err := wire.Parse(fr, id, &k, &l); err == nil && k.TunKind != hal.EncapNone {
						if h2 := fb.byPA[hal.AddrFrom16(k.TunDst)]; h2 != nil {
							if _, err := h2.far[h2.uplink].Send([][]byte{fr}); err != nil {
								return out, err
							}
							queue = append(queue, h2)
							continue
						}
					}
					out = append(out, delivery{host: h, frame: fr})
				}
				if n < len(bufs) {
					break
				}
			}
		}
	}
	return out, nil
}

// pump hands the host's queued exception packets to its vswitch until none
// is left: what vswitch.Run does, made synchronous so that the story is
// deterministic.
func (h *host) pump() error {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for {
		n, err := h.nic.ReadExceptions(done, h.batch)
		if n == 0 || err != nil {
			return nil
		}
		if err := h.sw.HandleBatch(context.Background(), h.batch[:n]); err != nil {
			return fmt.Errorf("%s: %w", h.name, err)
		}
	}
}

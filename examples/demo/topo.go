package main

import (
	"fmt"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/vswitch/vswitchtest"
)

// host is one simulated machine of the in-process story: a software NIC,
// the vswitch programming it, and the far sides of its ports (the VMs'
// virtual network cards and the uplink's cable).
type host = vswitchtest.Host

// delivery is a frame that left the topology on a VM's vport (or on an
// uplink toward an address that is no host of the story, such as a gateway).
type delivery = vswitchtest.Delivery

// fabric is the hosts and the in-memory underlay wire between their uplinks.
type fabric struct {
	st    *policy.State
	hosts []*host
	byNm  map[string]*host
	wire  *vswitchtest.Underlay
}

// uplinkMAC is the uplink's own address on every simulated host; the
// underlay is one segment, so it only needs to be well formed.
var uplinkMAC = hal.MustMAC("02:00:00:00:ff:01")

// newFabric builds one softnic NIC and one vswitch per host of st. Every VM
// that runs on a host, or has a shadow location there (a migration target),
// gets a vport on it, as vswitch.Config.Ports asks.
func newFabric(st *policy.State) (*fabric, error) {
	fb := &fabric{st: st, byNm: map[string]*host{}, wire: vswitchtest.NewUnderlay()}
	for _, h := range st.Hosts() {
		hs, err := vswitchtest.NewHost(h, st, st.HostedVMs(h.Name), uplinkMAC, nil)
		if err != nil {
			fb.close()
			return nil, err
		}
		fb.hosts = append(fb.hosts, hs)
		fb.byNm[h.Name] = hs
		fb.wire.Add(hs)
	}
	return fb, nil
}

func (fb *fabric) close() {
	for _, h := range fb.hosts {
		h.Close()
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
	return fb.wire.Send(h, vm, frame)
}

// Package ondemandtest is a bed of simulated hosts (vswitch/vswitchtest)
// whose vswitches resolve mappings on demand (directory/ondemand): each
// host runs its own policy and VMs, and looks every other destination up
// through the resolver it is given.
package ondemandtest

import (
	"context"
	"fmt"
	"net/netip"
	"sort"

	"github.com/nicpath/nicpath/directory"
	"github.com/nicpath/nicpath/directory/ondemand"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/vswitch/vswitchtest"
)

// Bed is the simulated hosts, their layers and the underlay.
type Bed struct {
	U      *vswitchtest.Underlay
	Hosts  map[string]*vswitchtest.Host
	Layers map[string]*ondemand.Layer
	names  []string
}

// UplinkMAC is every host's uplink MAC.
var UplinkMAC = hal.MustMAC("02:00:00:00:ff:01")

// New builds a host for each of st's hosts, with a vport for every VM of
// st (a VM can migrate to any host), its switch on the host's part of st
// and a layer resolving through resolver(host). cfg's Switch, Host, VMOf
// and Uplink are filled in per host.
func New(ctx context.Context, st *policy.State, resolver func(host string) directory.Resolver, cfg ondemand.Config) (*Bed, error) {
	b := &Bed{U: vswitchtest.NewUnderlay(), Hosts: map[string]*vswitchtest.Host{}, Layers: map[string]*ondemand.Layer{}}
	for _, ph := range st.Hosts() {
		local, err := ondemand.Local(st, ph.Name)
		if err != nil {
			b.Close()
			return nil, err
		}
		h, err := vswitchtest.NewHost(ph, local, st.VMs(), UplinkMAC, nil)
		if err != nil {
			b.Close()
			return nil, err
		}
		b.Hosts[ph.Name] = h
		b.names = append(b.names, ph.Name)
		b.U.Add(h)
		c := cfg
		c.Switch, c.Host, c.VMOf, c.Uplink, c.Resolver = h.Switch, ph.Name, h.VMOf, h.Uplink, resolver(ph.Name)
		l, err := ondemand.New(ctx, c, st)
		if err != nil {
			b.Close()
			return nil, err
		}
		h.Handler = l
		b.Layers[ph.Name] = l
	}
	sort.Strings(b.names)
	return b, nil
}

// Close closes every host.
func (b *Bed) Close() {
	for _, h := range b.Hosts {
		h.Close()
	}
}

// Send has vm on host transmit frame and carries it, and everything it
// causes, to the end: through lookups (each host's layer settles) and the
// underlay. It returns where frames landed.
func (b *Bed) Send(ctx context.Context, host, vm string, frame []byte) ([]vswitchtest.Delivery, error) {
	ds, err := b.U.Send(b.Hosts[host], vm, frame)
	if err != nil {
		return ds, err
	}
	for range 32 {
		busy := false
		for _, n := range b.names {
			l := b.Layers[n]
			if !l.Pending() {
				continue
			}
			busy = true
			if err := l.Settle(ctx); err != nil {
				return ds, fmt.Errorf("%s: %w", n, err)
			}
			more, err := b.U.Settle(b.Hosts[n])
			ds = append(ds, more...)
			if err != nil {
				return ds, err
			}
		}
		if !busy {
			return ds, nil
		}
	}
	return ds, fmt.Errorf("lookups did not settle")
}

// Update gives every layer the store's new state.
func (b *Bed) Update(ctx context.Context, st *policy.State) error {
	for _, n := range b.names {
		if err := b.Layers[n].Update(ctx, st); err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
	}
	return nil
}

// Frame is a UDP frame from VM from to VM to of st, with ports sport→dport.
func Frame(st *policy.State, from, to string, sport uint16, payload string) []byte {
	f, _ := st.VM(from)
	t, _ := st.VM(to)
	return FrameTo(f, t.CAs[0], hal.MAC(t.MAC), sport, payload)
}

// FrameTo is a UDP frame from VM f to address dst (MAC mac).
func FrameTo(f policy.VM, dst netip.Addr, mac hal.MAC, sport uint16, payload string) []byte {
	return wire.Build(wire.FrameSpec{SrcMAC: hal.MAC(f.MAC), DstMAC: mac, Src: f.CAs[0], Dst: dst,
		Proto: hal.ProtoUDP, SrcPort: sport, DstPort: 2000, Payload: []byte(payload)})
}

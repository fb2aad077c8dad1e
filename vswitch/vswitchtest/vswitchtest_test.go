package vswitchtest

import (
	"context"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/haltest"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/store/storetest"
)

// countingNIC is a NIC other than the reference one, as far as vswitchtest
// knows: a decorator that counts the rule operations reaching its NIC.
type countingNIC struct {
	haltest.Decorator
	ops *int
}

func (c *countingNIC) Apply(ctx context.Context, ops []hal.Op, res []hal.OpResult) error {
	*c.ops += len(ops)
	return c.Inner.Apply(ctx, ops, res)
}

// A frame from the streamer (host-c) to the mover (host-a) crosses the
// underlay encapsulated and lands once, on the mover's vport on host-a; a
// frame to an address no VM has lands nowhere. The same on the reference
// NIC and on a NIC from another factory (here, a decorator over it, whose
// operations are counted to show that the hosts really run on it).
func TestSendCrossesTheUnderlay(t *testing.T) {
	t.Run("softnic", func(t *testing.T) { sendCrossesTheUnderlay(t, Softnic, nil) })
	ops := 0
	counted := func(host string, ports []PortSpec) (hal.NIC, map[hal.PortID]FarPort, error) {
		nic, far, err := Softnic(host, ports)
		if err != nil {
			return nil, nil, err
		}
		return haltest.Wrap(&countingNIC{Decorator: haltest.Decorator{Inner: nic}, ops: &ops}), far, nil
	}
	t.Run("decorated", func(t *testing.T) { sendCrossesTheUnderlay(t, counted, &ops) })
}

func sendCrossesTheUnderlay(t *testing.T, factory Factory, ops *int) {
	st := storetest.ThreeHosts(0)
	u := NewUnderlay()
	hosts := map[string]*Host{}
	for _, ph := range st.Hosts() {
		h, err := NewHostOn(factory, ph, st, st.VMs(), hal.MustMAC("02:00:00:00:ff:01"), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.Close)
		u.Add(h)
		hosts[ph.Name] = h
	}
	streamer, _ := st.VM("streamer")
	mover, _ := st.VM("mover")
	frame := func(dst netip.Addr, mac hal.MAC) []byte {
		return wire.Build(wire.FrameSpec{SrcMAC: hal.MAC(streamer.MAC), DstMAC: mac, Src: streamer.CAs[0], Dst: dst,
			Proto: hal.ProtoUDP, SrcPort: 1000, DstPort: 2000, Payload: []byte("over the underlay")})
	}
	for i := range 3 { // the first through the slow paths, then the offloaded flows
		ds, err := u.Send(hosts["host-c"], "streamer", frame(mover.CAs[0], hal.MAC(mover.MAC)))
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != 1 || ds[0].Host != hosts["host-a"] || ds[0].VM != "mover" {
			t.Fatalf("packet %d landed %v, want once on mover on host-a", i, ds)
		}
		var k hal.FlowKey
		var l wire.Layout
		if err := wire.Parse(ds[0].Frame, 0, &k, &l); err != nil || k.TunKind != hal.EncapNone || hal.AddrFrom16(k.IPDst) != mover.CAs[0] {
			t.Fatalf("delivered frame: %v %v", k, err)
		}
	}
	if ds, err := u.Send(hosts["host-c"], "streamer", frame(netip.MustParseAddr("10.9.9.9"), hal.MAC(mover.MAC))); err != nil || len(ds) != 0 {
		t.Fatalf("a frame to no VM landed %v (%v)", ds, err)
	}
	if ops != nil && *ops == 0 {
		t.Fatal("no rule operation reached the factory's NIC")
	}
}

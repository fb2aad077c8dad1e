package gateway_test

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/gateway"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/policy/policytest"
)

// gwUnderTest is one gateway of a generated policy on its own softnic.
type gwUnderTest struct {
	g      *gateway.Gateway
	nic    *softnic.NIC
	ext    *softnic.Port
	up     *softnic.Port
	upMAC  hal.MAC
	policy policy.Gateway
}

func pacKind(k policy.EncapKind) hal.EncapKind {
	switch k {
	case policy.EncapGeneve:
		return hal.EncapGeneve
	case policy.EncapNVGRE:
		return hal.EncapNVGRE
	}
	return hal.EncapVXLAN
}

func frameOf(p policy.Packet) []byte {
	spec := wire.FrameSpec{SrcMAC: hal.MAC(p.SrcMAC), DstMAC: hal.MAC(p.DstMAC), Src: p.Src, Dst: p.Dst, Proto: p.Protocol,
		SrcPort: p.SrcPort, DstPort: p.DstPort, ICMPType: p.ICMPType, ICMPCode: p.ICMPCode, TTL: p.TTL}
	if p.Protocol == policy.ProtoICMP {
		spec.Payload = []byte{0x12, 0x34, 0, 1} // identifier, sequence
	}
	return wire.Build(spec)
}

// TestDifferential holds every gateway of random policies to the reference
// (policy.State.EvaluateAtGateway): what a VM's host sends to a gateway
// (policy.State.Evaluate's ToGateway verdicts, the NAT applied) is let out,
// and of random frames forged from any host to any gateway exactly those
// the reference allows are; the others are refused and counted.
func TestDifferential(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		cfg := policytest.Config{Seed: seed, Routes: true, ACLsPerTenant: -1}
		st := policytest.MustGenerate(cfg)
		gws := map[netip.Addr]*gwUnderTest{}
		router := netip.MustParseAddr("203.0.113.254")
		// Every host of the external network is a known neighbour, so that
		// what is let out leaves at once (ARP has its own tests).
		neigh := map[netip.Addr]hal.MAC{}
		for a := extAddr.Masked().Addr(); extAddr.Contains(a); a = a.Next() {
			neigh[a] = remoteMAC
		}
		for i, pg := range st.Gateways() {
			upMAC := hal.MAC{2, 0x75, 0, 0, 0, byte(i + 1)}
			nic, err := softnic.New(softnic.Config{Device: pg.Name, Ports: []softnic.PortConfig{
				{Name: "ext", Kind: hal.PortVPort, MAC: extMAC}, {Name: "uplink", Kind: hal.PortUplink, MAC: upMAC, MTU: 1600}}})
			if err != nil {
				t.Fatal(err)
			}
			defer nic.Close()
			g, err := gateway.New(gateway.Config{NIC: nic, State: st, Name: pg.Name, Uplink: 2, External: 1, Address: extAddr,
				Router: router, Neighbors: neigh})
			if err != nil {
				t.Fatal(err)
			}
			ext, _ := nic.Port(1)
			up, _ := nic.Port(2)
			gws[pg.PA] = &gwUnderTest{g: g, nic: nic, ext: ext, up: up, upMAC: upMAC, policy: pg}
		}
		r := rand.New(rand.NewPCG(seed, 7))
		vms := st.VMs()
		var sent, allowed int
		check := func(gw *gwUnderTest, in policy.InPort, pkt policy.Packet, mustAllow bool) {
			t.Helper()
			if !pkt.Src.Is4() {
				return
			}
			want := st.EvaluateAtGateway(gw.policy.Name, in, pkt)
			if mustAllow && !want.Allow {
				t.Fatalf("seed %d: the reference refuses at %s what a host sends there: %s\n%v", seed, gw.policy.Name, want, want.Trace)
			}
			frame := wire.BuildEncap(&hal.Encap{Kind: pacKind(in.Encap), VNI: in.VNI, Src: in.OuterSrc, Dst: gw.policy.PA,
				SrcMAC: hal.MAC{2, 0, 0, 0, 0, 0x99}, DstMAC: gw.upMAC}, frameOf(pkt))
			before := gw.g.Stats()
			if _, err := gw.up.Send([][]byte{frame}); err != nil {
				t.Fatal(err)
			}
			batch := make([]hal.Exception, 8)
			for i := range batch {
				batch[i].Buf = make([]byte, 2048)
			}
			done, cancel := context.WithCancel(context.Background())
			cancel()
			n, _ := gw.nic.ReadExceptions(done, batch)
			if n > 0 {
				if err := gw.g.HandleBatch(context.Background(), batch[:n]); err != nil {
					t.Fatal(err)
				}
			}
			bufs, sizes := [][]byte{make([]byte, 2048), make([]byte, 2048)}, []int{0, 0}
			out, _ := gw.ext.Recv(bufs, sizes)
			after := gw.g.Stats()
			var refused uint64
			for k, v := range after.Refused {
				refused += v - before.Refused[k]
			}
			sent++
			if want.Allow {
				allowed++
			}
			// What the gateway forwards (a routed hop: TTL above 1) and
			// translates (TCP, UDP, ICMP echo requests).
			supported := pkt.TTL > 1 && (pkt.Protocol == policy.ProtoTCP || pkt.Protocol == policy.ProtoUDP || pkt.Protocol == policy.ProtoICMP && pkt.ICMPType == 8)
			switch {
			case !want.Allow && (out != 0 || refused != 1):
				t.Fatalf("seed %d: %s let out %d frames (refused %d) of %s from %s, which the reference drops: %s\n%v",
					seed, gw.policy.Name, out, refused, pkt, in, want, want.Trace)
			case want.Allow && refused != 0:
				t.Fatalf("seed %d: %s refused %s from %s, which the reference allows:\n%v", seed, gw.policy.Name, pkt, in, want.Trace)
			case want.Allow && supported && out != 1:
				t.Fatalf("seed %d: %s let out %d frames of %s from %s (allowed by the reference), stats %+v", seed, gw.policy.Name, out, pkt, in, after)
			case !supported && out != 0:
				t.Fatalf("seed %d: %s let out %s from %s, which it neither forwards nor translates", seed, gw.policy.Name, pkt, in)
			case out == 1:
				var k hal.FlowKey
				var l wire.Layout
				if err := wire.Parse(bufs[0][:sizes[0]], 0, &k, &l); err != nil || k.Src() != extAddr.Addr() || k.Dst() != pkt.Dst {
					t.Fatalf("seed %d: %s from %s left as %+v (%v)", seed, pkt, in, k, err)
				}
			}
		}
		for range 400 {
			vm := vms[r.IntN(len(vms))]
			host, hostPA, _, _ := st.Location(vm.Name)
			pkt := policytest.RandomOutbound(r, cfg, vm)
			v := st.Evaluate(host, policy.FromVM(vm.Name), pkt)
			if v.Action == policy.ToGateway {
				check(gws[v.PA], policy.FromTunnel(v.Encap, v.VNI, hostPA), v.Rewrite.Apply(pkt), true)
			}
			in, fp := policytest.RandomInbound(r, cfg)
			gs := st.Gateways()
			check(gws[gs[r.IntN(len(gs))].PA], in, fp, false)
		}
		if allowed == 0 || allowed == sent {
			t.Fatalf("seed %d: %d of %d frames allowed: the test does not tell allowing from refusing", seed, allowed, sent)
		}
		t.Logf("seed %d: %d frames, %d allowed", seed, sent, allowed)
	}
}

package vswitch

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/policy/policytest"
)

// expectation is where the reference evaluator says a packet ends up.
type expectation struct {
	host *testHost
	port hal.PortID
	pkt  policy.Packet
	// For packets leaving toward a gateway: the outer destination, VNI
	// and encapsulation.
	outer netip.Addr
	vni   uint32
	encap hal.EncapKind
}

// expect walks the oracle across hosts: the verdict at the first host, and
// for an encapsulation, the verdict at the receiving host. Every verdict is
// recorded in ct, the reference connection tracker.
func (tp *topo) expect(h *testHost, in policy.InPort, p policy.Packet, ct *policy.ConnTable) []expectation {
	v := tp.st.EvaluateWith(h.name, in, p, ct.Options())
	ct.Record(p, v)
	switch v.Action {
	case policy.Deliver:
		return []expectation{{host: h, port: h.ports[v.VM], pkt: v.Rewrite.Apply(p)}}
	case policy.Encap:
		h2 := tp.byPA[v.PA]
		if h2 == nil {
			tp.t.Fatalf("oracle encapsulates toward %s, which is no host", v.PA)
		}
		return tp.expect(h2, policy.FromTunnel(v.Encap, v.VNI, h.pa), v.Rewrite.Apply(p), ct)
	case policy.ToGateway:
		return []expectation{{host: h, port: h.uplink, pkt: v.Rewrite.Apply(p), outer: v.PA, vni: v.VNI, encap: encapOf(v.Encap)}}
	}
	return nil
}

func (tp *topo) check(t *testing.T, what string, got []delivery, want []expectation) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d frames delivered, the reference says %d (%+v)", what, len(got), len(want), want)
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.host != w.host || g.port != w.port {
			t.Fatalf("%s: delivered on %s port %d, want %s port %d", what, g.host.name, g.port, w.host.name, w.port)
		}
		pkt, k := packetFrom(t, g.frame)
		if w.outer.IsValid() {
			if k.TunKind != w.encap || hal.AddrFrom16(k.TunDst) != w.outer || k.VNI != w.vni {
				t.Fatalf("%s: to gateway %s in %s vni %d, got frame %v", what, w.outer, w.encap, w.vni, k)
			}
		} else if k.TunKind != hal.EncapNone {
			t.Fatalf("%s: delivered to a VM still encapsulated: %v", what, k)
		}
		if pkt != w.pkt {
			t.Fatalf("%s: delivered\n  %s\nwant\n  %s", what, describe(pkt), describe(w.pkt))
		}
	}
}

type sentPacket struct {
	host *testHost
	vm   string
	pkt  policy.Packet // as the receiving VM saw it
}

// runDifferential sends random traffic (outbound from every VM, replies to
// delivered packets, random tunnelled packets from the uplink) through the
// topology and holds every outcome to the reference evaluator.
func runDifferential(t *testing.T, o topoOpts, seed uint64, packets int) *topo {
	cfg := policytest.Config{Seed: seed, Hosts: 3, Tenants: 2, VNETsPerTenant: 2, VMsPerVNET: 3, IPv6: true, Routes: true, ACLsPerTenant: 6}
	if o.proactive {
		cfg.ACLsPerTenant = -1 // per-destination rules are for VMs without outbound ACLs
	}
	return runDifferentialWith(t, o, cfg, seed, packets)
}

func runDifferentialWith(t *testing.T, o topoOpts, cfg policytest.Config, seed uint64, packets int) *topo {
	return runDifferentialOn(t, o, cfg, policytest.MustGenerate(cfg), seed, packets)
}

// runDifferentialOn is runDifferentialWith on a given state, generated
// from cfg (its addresses) and possibly changed since.
func runDifferentialOn(t *testing.T, o topoOpts, cfg policytest.Config, st *policy.State, seed uint64, packets int) *topo {
	tp := newTopo(t, st, o)
	ct := policy.NewConnTable()
	r := rand.New(rand.NewPCG(seed, 99))
	vms := st.VMs()
	var delivered []sentPacket
	type sent struct {
		h    *testHost
		port hal.PortID
		in   policy.InPort
		p    policy.Packet
	}
	var history []sent
	for i := 0; i < packets; i++ {
		if o.activateAt > 0 && i == o.activateAt {
			// Live migration of every VM with a shadow, in the middle of
			// the traffic: each switch flips the VM's scope at once.
			for _, sh := range st.Shadows() {
				ns, err := st.Activate(sh.VM, sh.Generation)
				if err != nil {
					t.Fatal(err)
				}
				st = ns
				for _, h := range tp.hosts {
					if err := h.sw.ActivateShadow(context.Background(), sh.VM); err != nil {
						t.Fatal(err)
					}
				}
			}
			tp.st = st
		}
		if o.activateAt > 0 && i == (o.activateAt+packets)/2 {
			// Retire the old generations half-way through the rest.
			for _, h := range tp.hosts {
				if err := h.sw.Maintain(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
		}
		var h *testHost
		var port hal.PortID
		var in policy.InPort
		var p policy.Packet
		var frame []byte
		switch n := r.IntN(10); {
		case n < 2 && len(history) > 0:
			// The same flow again: now it hits the NIC's rule (or the
			// host's cache) instead of walking the layers.
			x := history[r.IntN(len(history))]
			h, port, in, p = x.h, x.port, x.in, x.p
			if o.newPorts && hasPorts(p.Protocol) && r.IntN(2) == 0 {
				// A new connection between the same endpoints.
				p.SrcPort, p.DstPort = uint16(r.IntN(1<<16)), uint16(r.IntN(1100))
			}
			if in.Uplink {
				e := hal.Encap{Kind: encapOf(in.Encap), VNI: in.VNI, Src: in.OuterSrc, Dst: h.pa, SrcMAC: uplinkMAC, DstMAC: uplinkMAC}
				frame = wire.BuildEncap(&e, frameOf(p))
			} else {
				frame = frameOf(p)
			}
		case n < 5 && len(delivered) > 0:
			d := delivered[r.IntN(len(delivered))]
			p = d.pkt.Reverse()
			p.TTL = uint8(2 + r.IntN(62))
			h, port, in = d.host, d.host.ports[d.vm], policy.FromVM(d.vm)
			frame = frameOf(p)
		case n < 7:
			var inner policy.Packet
			in, inner = policytest.RandomInbound(r, cfg)
			h = tp.hosts[r.IntN(len(tp.hosts))]
			p = inner
			port = h.uplink
			e := hal.Encap{Kind: encapOf(in.Encap), VNI: in.VNI, Src: in.OuterSrc, Dst: h.pa, SrcMAC: uplinkMAC, DstMAC: uplinkMAC}
			frame = wire.BuildEncap(&e, frameOf(inner))
		default:
			vm := vms[r.IntN(len(vms))]
			host, _, _, _ := st.Location(vm.Name)
			h = tp.byNm[host]
			port, in = h.ports[vm.Name], policy.FromVM(vm.Name)
			p = policytest.RandomOutbound(r, cfg, vm)
			frame = frameOf(p)
		}
		history = append(history, sent{h, port, in, p})
		want := tp.expect(h, in, p, ct)
		got := tp.send(h, port, frame)
		if len(got) != len(want) {
			v := tp.st.Evaluate(h.name, in, p)
			t.Logf("packet %d (activation at %d); oracle without conntrack:\n%s", i, o.activateAt, v.Explain())
			for _, d := range got {
				_, k := packetFrom(t, d.frame)
				t.Logf("delivered on %s port %d (%s): %v", d.host.name, d.port, d.host.portVM[d.port], k)
			}
			t.Logf("switch explain on %s:\n%s", h.name, h.sw.ExplainFrame(port, frame))
		}
		tp.check(t, describe(p)+" from "+in.String()+" on "+h.name, got, want)
		for _, w := range want {
			if !w.outer.IsValid() {
				delivered = append(delivered, sentPacket{host: w.host, vm: w.host.portVM[w.port], pkt: w.pkt})
			}
		}
	}
	return tp
}

func TestDifferentialSoftnic(t *testing.T) {
	n := 3000
	if testing.Short() {
		n = 600
	}
	for _, seed := range []uint64{1, 2} {
		tp := runDifferential(t, topoOpts{}, seed, n)
		var nicFlows, hostExc uint64
		for _, h := range tp.hosts {
			st := h.sw.Stats()
			nicFlows += uint64(st.FlowsNIC)
			hostExc += st.Packets
			if st.FlowsNIC == 0 {
				t.Errorf("%s: no flow offloaded:\n%s", h.name, st)
			}
		}
		// Offloaded flows keep later packets away from the host.
		if hostExc >= uint64(2*n) {
			t.Errorf("seed %d: %d exceptions for %d packets: offloaded flows still reach the host", seed, hostExc, n)
		}
		t.Logf("seed %d: %d flows on NICs, %d exceptions for %d packets", seed, nicFlows, hostExc, n)
	}
}

// TestDifferentialFewerCapabilities runs the same traffic on NICs that
// cannot encapsulate, decapsulate, decrement TTLs or rewrite addresses: the
// flows that need those stay in the host, and every packet still ends
// where the reference says.
func TestDifferentialFewerCapabilities(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 500
	}
	dis := softnic.Disable{
		Actions: hal.ActionsOf(hal.ActionEncap, hal.ActionDecTTL, hal.ActionSetIPDst, hal.ActionSetIPSrc),
		Decaps:  hal.EncapsOf(hal.EncapVXLAN),
	}
	tp := runDifferential(t, topoOpts{disable: dis}, 3, n)
	var fallback, offloaded int
	for _, h := range tp.hosts {
		st := h.sw.Stats()
		fallback += int(st.Fallbacks[WhyNotSupported.String()])
		offloaded += st.FlowsNIC
	}
	if fallback == 0 {
		t.Error("no flow fell back to the host for a missing capability")
	}
	if offloaded == 0 {
		t.Error("nothing was offloaded: local delivery and drops need none of the missing capabilities")
	}
	// Every host-path flow says why.
	for _, h := range tp.hosts {
		for _, f := range h.sw.Flows() {
			if f.Path == PathHost && f.Why == WhyNotSupported && f.Err == nil {
				t.Fatalf("host flow without its refusal: %+v", f)
			}
		}
	}
}

// TestDifferentialHostOnly is the baseline: offload disabled, everything
// runs through the host path.
func TestDifferentialHostOnly(t *testing.T) {
	tp := runDifferential(t, topoOpts{noOffload: true}, 4, 800)
	for _, h := range tp.hosts {
		if st := h.sw.Stats(); st.FlowsNIC != 0 {
			t.Fatalf("%s: %d flows offloaded with offload disabled", h.name, st.FlowsNIC)
		}
	}
}

// TestDifferentialProactive: with per-destination rules programmed ahead
// of traffic, outcomes still match the reference, and first packets to
// remote VMs stop reaching the host. The same traffic without them is the
// comparison.
func TestDifferentialProactive(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 500
	}
	exc := map[bool]uint64{}
	for _, pro := range []bool{false, true} {
		cfg := policytest.Config{Seed: 5, Hosts: 3, Tenants: 2, VNETsPerTenant: 2, VMsPerVNET: 3, IPv6: true, Routes: true, ACLsPerTenant: -1}
		tp := runDifferentialWith(t, topoOpts{proactive: pro}, cfg, 5, n)
		for _, h := range tp.hosts {
			exc[pro] += h.sw.Stats().Packets
		}
		if pro {
			rules := 0
			for _, h := range tp.hosts {
				rules += h.sw.Stats().ProactiveRules
			}
			if rules == 0 {
				t.Fatal("no per-destination rule programmed")
			}
		}
	}
	t.Logf("exceptions for %d packets: %d reactive, %d with per-destination rules", n, exc[false], exc[true])
	if exc[true] >= exc[false] {
		t.Fatalf("per-destination rules did not keep packets from the host: %d vs %d exceptions", exc[true], exc[false])
	}
}

// TestDifferentialMigration migrates VMs (their shadows, installed inactive
// from the start) in the middle of random traffic: before and after, every
// packet ends where the reference says, so none goes to an old location
// after the activation.
func TestDifferentialMigration(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 600
	}
	cfg := policytest.Config{Seed: 6, Hosts: 3, Tenants: 2, VNETsPerTenant: 2, VMsPerVNET: 3, IPv6: true, Routes: true, ACLsPerTenant: 4, Shadows: 3}
	for _, seed := range []uint64{6, 7, 8} {
		cfg.Seed = seed
		tp := runDifferentialWith(t, topoOpts{activateAt: n / 2}, cfg, seed, n)
		var acts uint64
		for _, h := range tp.hosts {
			acts += h.sw.Stats().Activations
			h.sw.Maintain(context.Background())
		}
		if acts == 0 {
			t.Fatal("no activation happened")
		}
	}
}

// TestDifferentialStatelessACLs runs the traffic with ACLs that are all
// stateless, many of them on port ranges: the connection table stays empty,
// so the walks that read no port are remembered (walkmemo.go) and answer
// the first packets of later connections between the same endpoints. Every
// outcome is still the reference's, so a remembered verdict never stands in
// for a walk that an ACL's ports decide.
func TestDifferentialStatelessACLs(t *testing.T) {
	n := 3000
	if testing.Short() {
		n = 800
	}
	for _, seed := range []uint64{11, 12} {
		cfg := policytest.Config{Seed: seed, Hosts: 3, Tenants: 2, VNETsPerTenant: 2, VMsPerVNET: 3, IPv6: true, Routes: true, ACLsPerTenant: -1}
		with := cfg
		with.ACLsPerTenant = 8
		withACLs := policytest.MustGenerate(with)
		b := policytest.MustGenerate(cfg).Builder()
		ports := 0
		for _, tn := range withACLs.Tenants() {
			for _, a := range withACLs.ACLs(tn.Name) {
				a.Stateful = false
				if len(a.DstPorts) > 0 || len(a.SrcPorts) > 0 {
					ports++
				}
				b.AddACL(a)
			}
		}
		st, err := b.Build()
		if err != nil {
			t.Fatal(err)
		}
		if ports == 0 {
			t.Fatalf("seed %d: no ACL on ports: the test would not check that such walks are not remembered", seed)
		}
		tp := runDifferentialOn(t, topoOpts{newPorts: true}, cfg, st, seed, n)
		var remembered, wild uint64
		for _, h := range tp.hosts {
			h.sw.mu.Lock()
			remembered += h.sw.stats.walksRemembered
			wild += h.sw.stats.wildFlows
			h.sw.mu.Unlock()
		}
		if remembered == 0 {
			t.Errorf("seed %d: no walk was remembered", seed)
		}
		// The same port-independent walks made port-wildcard flows: the
		// new connections they carried were checked against the reference
		// like every other packet.
		if wild == 0 {
			t.Errorf("seed %d: no port-wildcard flow", seed)
		}
		t.Logf("seed %d: %d ACLs on ports, %d walks remembered, %d port-wildcard flows", seed, ports, remembered, wild)
	}
}

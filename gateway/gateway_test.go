package gateway_test

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/gateway"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/haltest"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/vswitch/vswitchtest"
)

var (
	fabricMAC = hal.MustMAC("02:00:00:00:ff:01")
	extMAC    = hal.MustMAC("02:00:00:00:fe:01")
	remoteMAC = hal.MustMAC("02:00:00:00:fe:10")
	blueMAC   = policy.MAC{0x02, 0, 0, 0x0b, 0, 1}
	redMAC    = policy.MAC{0x02, 0, 0, 0x0c, 0, 1}
	remote    = netip.MustParseAddr("203.0.113.10")
	extAddr   = netip.MustParsePrefix("203.0.113.1/24")
	sharedPA  = netip.MustParseAddr("198.18.0.100")
	bluePA    = netip.MustParseAddr("198.18.0.101")
	vmCA      = netip.MustParseAddr("10.0.0.10") // both tenants' VM: the addresses overlap
)

// testPolicy: tenants blue and red, both on 10.0.0.0/24, a VM each (same
// CA) on hosts a and b; a shared gateway both reach (blue through a gateway
// rule translating 192.0.2.0/24 into 203.0.113.0/24, red by a plain route
// to 203.0.113.0/24) and a gateway dedicated to blue.
func testPolicy(t testing.TB) *policy.State { return testPolicyWith(t, true) }

// testPolicyWith is testPolicy, without red's route to the shared gateway
// when !redRoute.
func testPolicyWith(t testing.TB, redRoute bool) *policy.State {
	t.Helper()
	p := netip.MustParsePrefix
	b := policy.NewBuilder()
	b.AddHost(policy.Host{Name: "host-a", PA: netip.MustParseAddr("198.18.0.1")})
	b.AddHost(policy.Host{Name: "host-b", PA: netip.MustParseAddr("198.18.0.2")})
	b.AddGateway(policy.Gateway{Name: "gw-shared", PA: sharedPA})
	b.AddGateway(policy.Gateway{Name: "gw-blue", PA: bluePA, Tenant: "blue"})
	for _, tn := range []struct {
		name string
		vni  uint32
		mac  policy.MAC
		host string
	}{{"blue", 1001, blueMAC, "host-a"}, {"red", 2001, redMAC, "host-b"}} {
		b.AddTenant(policy.Tenant{Name: tn.name})
		b.AddVNET(policy.VNET{Tenant: tn.name, Name: "web", VNI: tn.vni, Subnets: []netip.Prefix{p("10.0.0.0/24")}})
		b.AddVM(policy.VM{Name: tn.name + "-web-1", Tenant: tn.name, VNET: "web", MAC: tn.mac, CAs: []netip.Addr{vmCA}, Host: tn.host})
	}
	b.AddGatewayRule(policy.GatewayRule{Tenant: "blue", Name: "storage", Prefix: p("192.0.2.0/24"), Gateway: "gw-shared", NAT: p("203.0.113.0/24")})
	b.AddGatewayRule(policy.GatewayRule{Tenant: "blue", Name: "backup", Prefix: p("198.51.100.0/24"), Gateway: "gw-blue"})
	if redRoute {
		b.AddRoute(policy.Route{Tenant: "red", Prefix: p("203.0.113.0/24"), NextHop: policy.NextHop{Kind: policy.NextHopGateway, Gateway: "gw-shared"}})
	}
	st, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

type bed struct {
	t       *testing.T
	st      *policy.State
	u       *vswitchtest.Underlay
	a, b    *vswitchtest.Host
	gw, gwb *vswitchtest.Host
}

// newBed builds the hosts and both gateways; nic adjusts the gateway
// settings of those named in only (all when only is empty).
func newBed(t *testing.T, nic func(*gateway.Config), only ...string) *bed {
	st := testPolicy(t)
	bd := &bed{t: t, st: st, u: vswitchtest.NewUnderlay()}
	var err error
	for _, h := range []struct {
		name string
		dst  **vswitchtest.Host
	}{{"host-a", &bd.a}, {"host-b", &bd.b}} {
		ph, _ := st.Host(h.name)
		if *h.dst, err = vswitchtest.NewHost(ph, st, st.LocalVMs(h.name), fabricMAC, nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup((*h.dst).Close)
		bd.u.Add(*h.dst)
	}
	for _, g := range []struct {
		name string
		dst  **vswitchtest.Host
	}{{"gw-shared", &bd.gw}, {"gw-blue", &bd.gwb}} {
		pg, _ := st.Gateway(g.name)
		cfg := gateway.Config{Address: extAddr}
		if nic != nil && (len(only) == 0 || slices.Contains(only, g.name)) {
			nic(&cfg)
		}
		if *g.dst, err = vswitchtest.NewGatewayHost(pg, st, fabricMAC, extMAC, cfg); err != nil {
			t.Fatal(err)
		}
		t.Cleanup((*g.dst).Close)
		bd.u.Add(*g.dst)
	}
	return bd
}

func vmFrame(mac policy.MAC, dst netip.Addr, proto uint8, sport, dport uint16) []byte {
	return wire.Build(wire.FrameSpec{SrcMAC: hal.MAC(mac), DstMAC: hal.MAC(policy.DefaultRouterMAC), Src: vmCA, Dst: dst,
		Proto: proto, SrcPort: sport, DstPort: dport, ICMPType: 8, Payload: []byte("gateway test payload")})
}

// send has vm send frame and returns what left on the gateway's external
// port and what reached VMs.
func (bd *bed) send(from *vswitchtest.Host, vm string, frame []byte) (ext [][]byte, vms []vswitchtest.Delivery) {
	bd.t.Helper()
	ds, err := bd.u.Send(from, vm, frame)
	if err != nil {
		bd.t.Fatal(err)
	}
	for _, d := range ds {
		if d.VM == vswitchtest.ExternalPort {
			ext = append(ext, d.Frame)
		} else {
			vms = append(vms, d)
		}
	}
	return ext, vms
}

func parse(t *testing.T, f []byte) (hal.FlowKey, wire.Layout) {
	t.Helper()
	var k hal.FlowKey
	var l wire.Layout
	if err := wire.Parse(f, 0, &k, &l); err != nil {
		t.Fatalf("parse: %v", err)
	}
	return k, l
}

// resolve answers the gateway's ARP request for the remote host, which the
// first packet toward it causes, and returns the frames that then leave.
func (bd *bed) resolve(gw *vswitchtest.Host, ext [][]byte) [][]byte {
	bd.t.Helper()
	if len(ext) != 1 {
		bd.t.Fatalf("want one ARP request on the external port, got %d frames", len(ext))
	}
	op, sha, spa, tpa, ok := gateway.ParseARP(ext[0])
	if !ok || op != 1 || sha != extMAC || spa != extAddr.Addr() || tpa != remote {
		bd.t.Fatalf("want an ARP request for %s from %s, got op %d %s %s -> %s", remote, extAddr.Addr(), op, sha, spa, tpa)
	}
	out, vms := bd.send(gw, vswitchtest.ExternalPort, gateway.BuildARP(2, remoteMAC, remote, extMAC, extAddr.Addr()))
	if len(vms) != 0 {
		bd.t.Fatalf("an ARP reply reached VMs: %v", vms)
	}
	return out
}

func answer(k hal.FlowKey, payload string) []byte {
	spec := wire.FrameSpec{SrcMAC: remoteMAC, DstMAC: extMAC, Src: k.Dst(), Dst: k.Src(), Proto: k.Proto,
		SrcPort: k.L4Dst, DstPort: k.L4Src, Payload: []byte(payload)}
	return wire.Build(spec)
}

func TestSharedGatewayOverlappingTenants(t *testing.T) {
	bd := newBed(t, nil)
	ctx := context.Background()

	// blue addresses the storage host as 192.0.2.10; its host translates
	// that to 203.0.113.10 and sends it to the shared gateway.
	ext, vms := bd.send(bd.a, "blue-web-1", vmFrame(blueMAC, netip.MustParseAddr("192.0.2.10"), hal.ProtoUDP, 40000, 53))
	if len(vms) != 0 {
		t.Fatalf("frames reached VMs: %v", vms)
	}
	ext = bd.resolve(bd.gw, ext)
	if len(ext) != 1 {
		t.Fatalf("want the held frame out after ARP, got %d", len(ext))
	}
	bk, _ := parse(t, ext[0])
	if bk.Src() != extAddr.Addr() || bk.Dst() != remote || bk.L4Dst != 53 || bk.EthSrc != extMAC || bk.EthDst != remoteMAC || bk.Proto != hal.ProtoUDP {
		t.Fatalf("blue's frame left as %+v", bk)
	}

	// red, same CA and port, to the same remote: another external port.
	ext, _ = bd.send(bd.b, "red-web-1", vmFrame(redMAC, remote, hal.ProtoUDP, 40000, 53))
	if len(ext) != 1 {
		t.Fatalf("red: want one frame out, got %d", len(ext))
	}
	rk, _ := parse(t, ext[0])
	if rk.Src() != extAddr.Addr() || rk.L4Src == bk.L4Src {
		t.Fatalf("red's frame left from %s:%d, blue's from port %d: the tenants must not share a translation", rk.Src(), rk.L4Src, bk.L4Src)
	}
	// The first keeps its own port (in the external range and free), so
	// its rules rewrite no port; the second, colliding, is given another.
	if bk.L4Src != 40000 || rk.L4Src == 40000 {
		t.Fatalf("blue left from port %d (want its own 40000 kept), red from %d (want another)", bk.L4Src, rk.L4Src)
	}

	// The answers go back, each to its own tenant's VM, translated back.
	for _, c := range []struct {
		k      hal.FlowKey
		vm     string
		src    netip.Addr
		vmMAC  policy.MAC
		target *vswitchtest.Host
	}{{bk, "blue-web-1", netip.MustParseAddr("192.0.2.10"), blueMAC, bd.a}, {rk, "red-web-1", remote, redMAC, bd.b}} {
		ext, vms = bd.send(bd.gw, vswitchtest.ExternalPort, answer(c.k, "answer for "+c.vm))
		if len(ext) != 0 || len(vms) != 1 || vms[0].VM != c.vm || vms[0].Host != c.target {
			t.Fatalf("answer for %s: external %d, VMs %v", c.vm, len(ext), vms)
		}
		k, l := parse(t, vms[0].Frame)
		if k.Src() != c.src || k.Dst() != vmCA || k.L4Src != 53 || k.L4Dst != 40000 || k.EthDst != hal.MAC(c.vmMAC) {
			t.Fatalf("answer for %s arrived as %+v", c.vm, k)
		}
		if got := string(vms[0].Frame[l.Payload:l.End]); got != "answer for "+c.vm {
			t.Fatalf("answer for %s carries %q", c.vm, got)
		}
	}

	// Both directions are on the gateway's NIC: later packets never reach
	// the gateway's host.
	before := bd.gw.Gateway.Stats()
	if before.Offloaded != 2 || before.Conns != 2 {
		t.Fatalf("want 2 offloaded connections, stats %+v", before)
	}
	ext, _ = bd.send(bd.a, "blue-web-1", vmFrame(blueMAC, netip.MustParseAddr("192.0.2.10"), hal.ProtoUDP, 40000, 53))
	if len(ext) != 1 {
		t.Fatalf("second blue packet: %d frames out", len(ext))
	}
	if k2, _ := parse(t, ext[0]); k2 != bk {
		t.Fatalf("second packet left as %+v, first as %+v", k2, bk)
	}
	_, vms = bd.send(bd.gw, vswitchtest.ExternalPort, answer(rk, "again"))
	if len(vms) != 1 || vms[0].VM != "red-web-1" {
		t.Fatalf("second red answer: %v", vms)
	}
	if after := bd.gw.Gateway.Stats(); after.HostPackets != before.HostPackets {
		t.Fatalf("packets of offloaded connections went through the host: %d -> %d", before.HostPackets, after.HostPackets)
	}
	var found int
	bd.gw.NIC.Dump(ctx, func(ri *hal.RuleInfo) error {
		if ri.Counters.Packets > 0 {
			found++
		}
		return nil
	})
	if found < 2 {
		t.Fatalf("want the gateway's rules to have counted packets, %d did", found)
	}
	x := bd.gw.Gateway.Explain(bd.gw.Ports[vswitchtest.ExternalPort], answer(bk, "x"))
	if x.Verdict != "answer" || !strings.HasPrefix(x.Handled, "nic") || !strings.Contains(x.String(), "blue") {
		t.Fatalf("explain of blue's answer:\n%s", x)
	}

	// An answer for no connection is dropped and counted.
	stray := bk
	stray.L4Src = 9
	if _, vms = bd.send(bd.gw, vswitchtest.ExternalPort, answer(stray, "stray")); len(vms) != 0 {
		t.Fatalf("a stray answer reached %v", vms)
	}
	if n := bd.gw.Gateway.Stats().Drops["no-connection"]; n != 1 {
		t.Fatalf("no-connection drops %d", n)
	}
}

func TestGatewayTCPAndPing(t *testing.T) {
	bd := newBed(t, func(c *gateway.Config) { c.Neighbors = map[netip.Addr]hal.MAC{remote: remoteMAC} })
	ext, _ := bd.send(bd.b, "red-web-1", vmFrame(redMAC, remote, hal.ProtoTCP, 33000, 80))
	if len(ext) != 1 {
		t.Fatalf("TCP: %d frames out", len(ext))
	}
	k, _ := parse(t, ext[0])
	_, vms := bd.send(bd.gw, vswitchtest.ExternalPort, answer(k, "HTTP/1.1 200 OK"))
	if len(vms) != 1 || vms[0].VM != "red-web-1" {
		t.Fatalf("TCP answer: %v", vms)
	}
	if rk, _ := parse(t, vms[0].Frame); rk.L4Dst != 33000 || rk.Dst() != vmCA {
		t.Fatalf("TCP answer arrived as %+v", rk)
	}

	// ICMP echo: both tenants ping with the same identifier; the gateway
	// gives each its own, on the host path, and says why.
	var ids []uint16
	for _, s := range []struct {
		h   *vswitchtest.Host
		vm  string
		mac policy.MAC
		dst string
	}{{bd.a, "blue-web-1", blueMAC, "192.0.2.10"}, {bd.b, "red-web-1", redMAC, "203.0.113.10"}} {
		f := vmFrame(s.mac, netip.MustParseAddr(s.dst), hal.ProtoICMP, 0, 0)
		_, l := parse(t, f)
		binary.BigEndian.PutUint16(f[l.L4+4:], 0x4242) // identifier
		binary.BigEndian.PutUint16(f[l.L4+2:], 0)
		binary.BigEndian.PutUint16(f[l.L4+2:], wire.Checksum(f[l.L4:l.End], 0))
		ext, _ := bd.send(s.h, s.vm, f)
		if len(ext) != 1 {
			t.Fatalf("ping from %s: %d frames out", s.vm, len(ext))
		}
		_, el := parse(t, ext[0])
		if wire.Checksum(ext[0][el.L4:el.End], 0) != 0 {
			t.Fatalf("ping from %s left with a bad ICMP checksum", s.vm)
		}
		ids = append(ids, binary.BigEndian.Uint16(ext[0][el.L4+4:]))
		// The echo reply, as the remote host would send it.
		rep := append([]byte(nil), ext[0]...)
		copy(rep[0:6], extMAC[:])
		copy(rep[6:12], remoteMAC[:])
		copy(rep[el.L3+12:el.L3+16], ext[0][el.L3+16:el.L3+20])
		copy(rep[el.L3+16:el.L3+20], ext[0][el.L3+12:el.L3+16])
		rep[el.L4] = 0
		binary.BigEndian.PutUint16(rep[el.L4+2:], 0)
		binary.BigEndian.PutUint16(rep[el.L4+2:], wire.Checksum(rep[el.L4:el.End], 0))
		_, vms := bd.send(bd.gw, vswitchtest.ExternalPort, rep)
		if len(vms) != 1 || vms[0].VM != s.vm {
			t.Fatalf("echo reply for %s reached %v", s.vm, vms)
		}
		_, vl := parse(t, vms[0].Frame)
		if got := binary.BigEndian.Uint16(vms[0].Frame[vl.L4+4:]); got != 0x4242 {
			t.Fatalf("echo reply for %s has identifier %#x, want the VM's 0x4242", s.vm, got)
		}
	}
	if ids[0] == ids[1] {
		t.Fatalf("both tenants' pings left with identifier %d", ids[0])
	}
	conns := bd.gw.Gateway.Conns()
	var onHost int
	for _, c := range conns {
		if c.Proto == hal.ProtoICMP {
			if !strings.Contains(c.Where, "ICMP echo") {
				t.Fatalf("ICMP connection %+v does not say why it is on the host", c)
			}
			onHost++
		}
	}
	if onHost != 2 || len(conns) != 3 {
		t.Fatalf("connections: %+v", conns)
	}
}

func TestDedicatedGatewayRefusesOtherTenants(t *testing.T) {
	router := netip.MustParseAddr("203.0.113.20")
	bd := newBed(t, func(c *gateway.Config) {
		c.Router = router
		c.Neighbors = map[netip.Addr]hal.MAC{router: remoteMAC}
	})
	// blue may use its own gateway: 198.51.100.0/24 without NAT, reached
	// through a router on the external network.
	ext, _ := bd.send(bd.a, "blue-web-1", vmFrame(blueMAC, netip.MustParseAddr("198.51.100.7"), hal.ProtoUDP, 40000, 53))
	if len(ext) != 1 {
		t.Fatalf("blue through its own gateway: %d frames out", len(ext))
	}
	if k, _ := parse(t, ext[0]); k.Dst() != netip.MustParseAddr("198.51.100.7") || k.EthDst != remoteMAC || k.Src() != extAddr.Addr() {
		t.Fatalf("blue's frame left as %+v", k)
	}
	// red's host has no route to gw-blue (the policy forbids one), so the
	// frame is forged as host-b would send it: red's VNI, red's VM.
	inner := vmFrame(redMAC, netip.MustParseAddr("203.0.113.20"), hal.ProtoUDP, 40000, 53)
	forged := wire.BuildEncap(&hal.Encap{Kind: hal.EncapVXLAN, VNI: 2001, Src: netip.MustParseAddr("198.18.0.2"), Dst: bluePA,
		SrcMAC: fabricMAC, DstMAC: fabricMAC}, inner)
	up := bd.gwb.Far[bd.gwb.Uplink]
	for range 3 {
		if _, err := up.Send([][]byte{forged}); err != nil {
			t.Fatal(err)
		}
		ds, err := bd.u.Settle(bd.gwb)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != 0 {
			t.Fatalf("red's frame through blue's dedicated gateway landed: %v", ds)
		}
	}
	st := bd.gwb.Gateway.Stats()
	if st.Refused["tenant-isolation"] != 1 || st.Conns != 1 {
		t.Fatalf("want the first frame refused on the host and the next ones by the NIC, stats %+v", st)
	}
	var dropped uint64
	bd.gwb.NIC.Dump(context.Background(), func(ri *hal.RuleInfo) error {
		if tm := ri.Rule.Terminal(); tm != nil && tm.Kind == hal.ActionDrop {
			dropped += ri.Counters.Packets
		}
		return nil
	})
	if dropped != 2 {
		t.Fatalf("the drop rule counted %d packets, want 2", dropped)
	}
	x := bd.gwb.Gateway.Explain(bd.gwb.Uplink, forged)
	if x.Verdict != "drop (tenant-isolation)" || !strings.Contains(x.String(), "dedicated to tenant blue") || !strings.HasPrefix(x.Handled, "nic (drop rule") {
		t.Fatalf("explain of red's frame:\n%s", x)
	}
}

// A non-virtualized host opens connections to published addresses, one
// per tenant, both standing for 10.0.0.10: each reaches its own tenant's
// VM, and the VMs' answers leave from the published addresses, the second
// packet of each direction on the gateway's NIC.
func TestPublishedAddresses(t *testing.T) {
	pubBlue, pubRed := netip.MustParseAddr("203.0.113.21"), netip.MustParseAddr("203.0.113.22")
	bd := newBed(t, func(c *gateway.Config) {
		c.Neighbors = map[netip.Addr]hal.MAC{remote: remoteMAC}
		c.Publish = map[netip.Addr]gateway.Target{pubBlue: {Tenant: "blue", CA: vmCA}, pubRed: {Tenant: "red", CA: vmCA}}
	}, "gw-shared")
	for _, c := range []struct {
		pub     netip.Addr
		vm      string
		host    *vswitchtest.Host
		mac     policy.MAC
		seenSrc netip.Addr // the remote as the VM sees it
	}{{pubBlue, "blue-web-1", bd.a, blueMAC, netip.MustParseAddr("192.0.2.10")}, {pubRed, "red-web-1", bd.b, redMAC, remote}} {
		// The remote host asks the gateway for the published address's MAC.
		out, _ := bd.send(bd.gw, vswitchtest.ExternalPort, gateway.BuildARP(1, remoteMAC, remote, hal.MAC{}, c.pub))
		if len(out) != 1 {
			t.Fatalf("ARP for %s: %d answers", c.pub, len(out))
		}
		if op, sha, spa, _, ok := gateway.ParseARP(out[0]); !ok || op != 2 || sha != extMAC || spa != c.pub {
			t.Fatalf("ARP answer for %s: op %d %s %s", c.pub, op, sha, spa)
		}
		req := wire.Build(wire.FrameSpec{SrcMAC: remoteMAC, DstMAC: extMAC, Src: remote, Dst: c.pub, Proto: hal.ProtoUDP,
			SrcPort: 50000, DstPort: 53, Payload: []byte("query for " + c.vm)})
		ext, vms := bd.send(bd.gw, vswitchtest.ExternalPort, req)
		if len(ext) != 0 || len(vms) != 1 || vms[0].VM != c.vm || vms[0].Host != c.host {
			t.Fatalf("query to %s: external %d, VMs %v", c.pub, len(ext), vms)
		}
		k, _ := parse(t, vms[0].Frame)
		if k.Src() != c.seenSrc || k.Dst() != vmCA || k.L4Src != 50000 || k.L4Dst != 53 {
			t.Fatalf("query to %s arrived as %+v", c.pub, k)
		}
		for i := range 2 {
			before := bd.gw.Gateway.Stats().HostPackets
			ans := vmFrame(c.mac, c.seenSrc, hal.ProtoUDP, 53, 50000)
			ext, _ = bd.send(c.host, c.vm, ans)
			if len(ext) != 1 {
				t.Fatalf("answer %d from %s: %d frames out", i, c.vm, len(ext))
			}
			ak, _ := parse(t, ext[0])
			if ak.Src() != c.pub || ak.Dst() != remote || ak.L4Src != 53 || ak.L4Dst != 50000 || ak.EthDst != remoteMAC {
				t.Fatalf("answer %d from %s left as %+v", i, c.vm, ak)
			}
			after := bd.gw.Gateway.Stats().HostPackets
			if i == 1 && after != before {
				t.Fatalf("the second answer from %s went through the gateway's host", c.vm)
			}
		}
		_, vms = bd.send(bd.gw, vswitchtest.ExternalPort, req)
		if len(vms) != 1 || vms[0].VM != c.vm {
			t.Fatalf("second query to %s: %v", c.pub, vms)
		}
	}
	if s := bd.gw.Gateway.Stats(); s.Inbound != 2 || s.Offloaded != 2 {
		t.Fatalf("stats %+v", s)
	}
	// A dedicated gateway may not publish another tenant's address.
	st := testPolicy(t)
	pg, _ := st.Gateway("gw-blue")
	_, err := vswitchtest.NewGatewayHost(pg, st, fabricMAC, extMAC, gateway.Config{Address: extAddr,
		Publish: map[netip.Addr]gateway.Target{pubRed: {Tenant: "red", CA: vmCA}}})
	if !errors.Is(err, gateway.ErrConfig) || !strings.Contains(err.Error(), "dedicated to tenant blue") {
		t.Fatalf("red published on blue's gateway: %v", err)
	}
}

func ruleCount(t *testing.T, nic hal.NIC) int {
	t.Helper()
	n := 0
	if err := nic.Dump(context.Background(), func(*hal.RuleInfo) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// Connections end: idle ones when Expire finds no packet on their rules for
// Config.Idle, and those a new policy no longer allows on Update; their
// rules leave the NIC with them, and traffic seen on the NIC keeps a
// connection alive.
func TestExpireAndUpdate(t *testing.T) {
	now := time.Unix(1000, 0)
	bd := newBed(t, func(c *gateway.Config) {
		c.Neighbors = map[netip.Addr]hal.MAC{remote: remoteMAC}
		c.Idle = time.Minute
		c.Clock = func() time.Time { return now }
	}, "gw-shared")
	ctx := context.Background()
	g := bd.gw.Gateway
	bd.send(bd.a, "blue-web-1", vmFrame(blueMAC, netip.MustParseAddr("192.0.2.10"), hal.ProtoUDP, 40000, 53))
	bd.send(bd.b, "red-web-1", vmFrame(redMAC, remote, hal.ProtoUDP, 40000, 53))
	if g.Stats().Conns != 2 || ruleCount(t, bd.gw.NIC) != 4 {
		t.Fatalf("want 2 connections and 4 rules: %+v, %d rules", g.Stats(), ruleCount(t, bd.gw.NIC))
	}
	// red keeps sending, on the NIC; blue is silent.
	now = now.Add(40 * time.Second)
	if err := g.Expire(ctx); err != nil {
		t.Fatal(err)
	}
	bd.send(bd.b, "red-web-1", vmFrame(redMAC, remote, hal.ProtoUDP, 40000, 53))
	now = now.Add(40 * time.Second)
	if err := g.Expire(ctx); err != nil {
		t.Fatal(err)
	}
	conns := g.Conns()
	if len(conns) != 1 || conns[0].Tenant != "red" || ruleCount(t, bd.gw.NIC) != 2 {
		t.Fatalf("after blue's idle minute: %+v, %d rules", conns, ruleCount(t, bd.gw.NIC))
	}
	// A policy without red's route to the gateway ends red's connection.
	if err := g.Update(ctx, testPolicyWith(t, false)); err != nil {
		t.Fatal(err)
	}
	if n := g.Stats().Conns; n != 0 || ruleCount(t, bd.gw.NIC) != 0 {
		t.Fatalf("after the policy change: %d connections, %d rules", n, ruleCount(t, bd.gw.NIC))
	}
	for _, port := range []uint16{20000, 20001} {
		k := hal.FlowKey{IPSrc: hal.Addr16(extAddr.Addr()), IPDst: hal.Addr16(remote), Proto: hal.ProtoUDP, L4Src: port, L4Dst: 53}
		if _, vms := bd.send(bd.gw, vswitchtest.ExternalPort, answer(k, "late")); len(vms) != 0 {
			t.Fatalf("an answer for an ended connection reached %v", vms)
		}
	}
}

// nicBed is one host (host-a: blue-web-1, or host-b: red-web-1) and the
// shared gateway on the NIC factory makes, configured with cfg.
func nicBed(t *testing.T, host string, factory vswitchtest.Factory, cfg gateway.Config) *bed {
	t.Helper()
	st := testPolicy(t)
	bd := &bed{t: t, st: st, u: vswitchtest.NewUnderlay()}
	ph, _ := st.Host(host)
	h, err := vswitchtest.NewHost(ph, st, st.LocalVMs(host), fabricMAC, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	bd.u.Add(h)
	if host == "host-a" {
		bd.a = h
	} else {
		bd.b = h
	}
	pg, _ := st.Gateway("gw-shared")
	if bd.gw, err = vswitchtest.NewGatewayHostOn(factory, pg, st, fabricMAC, extMAC, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bd.gw.Close)
	bd.u.Add(bd.gw)
	return bd
}

// faultyNIC is a softnic whose operations fail as fail says (nil: none).
func faultyNIC(fail func(op *hal.Op) error) vswitchtest.Factory {
	return func(host string, ports []vswitchtest.PortSpec) (hal.NIC, map[hal.PortID]vswitchtest.FarPort, error) {
		nic, far, err := vswitchtest.Softnic(host, ports)
		if err != nil {
			return nil, nil, err
		}
		f := haltest.NewFaultNIC(nic)
		if fail != nil {
			f.FailOps(fail)
		}
		return f.NIC(), far, nil
	}
}

// staticRemote is the shared gateway's configuration knowing remote
// statically.
func staticRemote() gateway.Config {
	return gateway.Config{Address: extAddr, Neighbors: map[netip.Addr]hal.MAC{remote: remoteMAC}}
}

// faultyBed is host-b (red-web-1) and the shared gateway, whose NIC fails
// the operations fail fails (nil: none) and which knows remote statically.
func faultyBed(t *testing.T, fail func(op *hal.Op) error) *bed {
	t.Helper()
	return nicBed(t, "host-b", faultyNIC(fail), staticRemote())
}

// A NIC that cannot rewrite transport ports keeps the gateway's
// connections on the host path: traffic still flows, translated by the
// host, and the gateway says why.
func TestHostPathWhenTheNICCannot(t *testing.T) {
	noPorts := func(host string, ports []vswitchtest.PortSpec) (hal.NIC, map[hal.PortID]vswitchtest.FarPort, error) {
		pcs := make([]softnic.PortConfig, len(ports))
		for i, p := range ports {
			pcs[i] = softnic.PortConfig{Name: p.Name, Kind: p.Kind, MAC: p.MAC, MTU: p.MTU}
		}
		nic, err := softnic.New(softnic.Config{Device: host, Ports: pcs, Disable: softnic.Disable{Actions: hal.ActionsOf(hal.ActionSetL4Src)}})
		if err != nil {
			return nil, nil, err
		}
		far := map[hal.PortID]vswitchtest.FarPort{}
		for _, p := range nic.Ports() {
			far[p.ID], _ = nic.Port(p.ID)
		}
		return nic, far, nil
	}
	bd := nicBed(t, "host-a", noPorts, staticRemote())
	a, gw := bd.a, bd.gw
	for i := range 2 {
		// Source port 1000 is outside the external range (20000-59999), so
		// the gateway must rewrite it (a port in the range is kept).
		ext, _ := bd.send(a, "blue-web-1", vmFrame(blueMAC, netip.MustParseAddr("192.0.2.10"), hal.ProtoUDP, 1000, 53))
		if len(ext) != 1 {
			t.Fatalf("packet %d: %d frames out", i, len(ext))
		}
		k, _ := parse(t, ext[0])
		_, vms := bd.send(gw, vswitchtest.ExternalPort, answer(k, "ok"))
		if len(vms) != 1 || vms[0].VM != "blue-web-1" {
			t.Fatalf("answer %d: %v", i, vms)
		}
		x := gw.Gateway.Explain(gw.Ports[vswitchtest.ExternalPort], answer(k, "ok"))
		if !strings.HasPrefix(x.Handled, "host: NIC refuses the rule from the tenant") || !strings.Contains(x.Handled, "set_l4_src") {
			t.Fatalf("explain:\n%s", x)
		}
	}
	if s := gw.Gateway.Stats(); s.HostPackets != 4 || s.Offloaded != 0 || s.HostPath != 1 || ruleCount(t, gw.NIC) != 0 {
		t.Fatalf("want every packet of the one connection on the host path: %+v, %d rules", s, ruleCount(t, gw.NIC))
	}
}

// A NIC that takes the rule from the tenant but fails the answer's: the
// landed rule is taken back and the connection runs on the host path,
// whole, saying why.
func TestHalfLandedConnectionGoesToTheHost(t *testing.T) {
	bd := faultyBed(t, func(op *hal.Op) error {
		for _, a := range op.Rule.Actions {
			if op.Kind == hal.OpAdd && a.Kind == hal.ActionEncap {
				return hal.ErrTableFull
			}
		}
		return nil
	})
	b, gw := bd.b, bd.gw
	for i := range 2 {
		ext, _ := bd.send(b, "red-web-1", vmFrame(redMAC, remote, hal.ProtoUDP, 40000, 53))
		if len(ext) != 1 {
			t.Fatalf("packet %d: %d frames out", i, len(ext))
		}
		k, _ := parse(t, ext[0])
		if _, vms := bd.send(gw, vswitchtest.ExternalPort, answer(k, "ok")); len(vms) != 1 || vms[0].VM != "red-web-1" {
			t.Fatalf("answer %d: %v", i, vms)
		}
	}
	conns := gw.Gateway.Conns()
	if len(conns) != 1 || !strings.Contains(conns[0].Where, "NIC did not take the rule") || ruleCount(t, gw.NIC) != 0 {
		t.Fatalf("connections %+v, %d rules on the NIC", conns, ruleCount(t, gw.NIC))
	}
	if s := gw.Gateway.Stats(); s.HostPackets != 4 {
		t.Fatalf("want all 4 packets on the host path: %+v", s)
	}
}

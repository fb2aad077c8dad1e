package main

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/vswitch"
)

// defaultPolicy is the embedded default: a copy of
// examples/policies/two-tenants.yaml (go:embed cannot reach a parent
// directory; TestEmbeddedPolicyIsTheExample keeps the two identical).
//
//go:embed default-policy.yaml
var defaultPolicy []byte

const defaultPolicyName = "examples/policies/two-tenants.yaml (embedded)"

// story prints the demo and keeps score of its checks: the demo is also a
// smoke test, and exits non-zero when any check fails.
type story struct {
	w      io.Writer
	checks int
	failed []string
}

func (s *story) title(format string, a ...any) {
	fmt.Fprintf(s.w, "\n== "+format+"\n", a...)
}

func (s *story) say(format string, a ...any) {
	fmt.Fprintf(s.w, format+"\n", a...)
}

// check records one claim of the story.
func (s *story) check(ok bool, format string, a ...any) {
	s.checks++
	msg := fmt.Sprintf(format, a...)
	if ok {
		fmt.Fprintf(s.w, "   ok    %s\n", msg)
		return
	}
	fmt.Fprintf(s.w, "   FAIL  %s\n", msg)
	s.failed = append(s.failed, msg)
}

func indent(text, pre string) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	return pre + strings.Join(lines, "\n"+pre)
}

// vmInfo is what the story needs to know of a VM to build its frames.
type vmInfo struct {
	name string
	mac  hal.MAC
	ca   netip.Addr
}

func vmOf(st *policy.State, name string) (vmInfo, error) {
	vm, ok := st.VM(name)
	if !ok {
		return vmInfo{}, fmt.Errorf("the policy has no VM %q", name)
	}
	for _, ca := range vm.CAs {
		if ca.Is4() {
			return vmInfo{name: name, mac: hal.MAC(vm.MAC), ca: ca}, nil
		}
	}
	return vmInfo{}, fmt.Errorf("VM %q has no IPv4 customer address", name)
}

// traffic kinds the story sends.
func pingFrame(from, to vmInfo, dstMAC hal.MAC, seq int, reply bool) []byte {
	typ := uint8(8) // echo request
	if reply {
		typ = 0
	}
	return wire.Build(wire.FrameSpec{SrcMAC: from.mac, DstMAC: dstMAC, Src: from.ca, Dst: to.ca,
		Proto: hal.ProtoICMP, ICMPType: typ, Payload: fmt.Appendf(nil, "nicpath ping %d", seq)})
}

func udpFrame(from, to vmInfo, dstMAC hal.MAC, sport, dport uint16, payload string) []byte {
	return wire.Build(wire.FrameSpec{SrcMAC: from.mac, DstMAC: dstMAC, Src: from.ca, Dst: to.ca,
		Proto: hal.ProtoUDP, SrcPort: sport, DstPort: dport, Payload: []byte(payload)})
}

// tcpFrame builds one segment; flags 0 means ACK, as wire.FrameSpec says.
func tcpFrame(from, to vmInfo, dstMAC hal.MAC, sport, dport uint16, flags uint8, payload string) []byte {
	return wire.Build(wire.FrameSpec{SrcMAC: from.mac, DstMAC: dstMAC, Src: from.ca, Dst: to.ca,
		Proto: hal.ProtoTCP, SrcPort: sport, DstPort: dport, TCPFlags: flags, Payload: []byte(payload)})
}

const (
	tcpSYN = 0x02
	tcpACK = 0x10
	tcpSA  = tcpSYN | tcpACK
)

// exceptions returns how many packets reached h's vswitch on the exception path.
func exceptions(h *host) uint64 { return h.Switch.Stats().Packets }

// deliveredOnly reports whether got is exactly one frame, to vm on h, with
// the inner addresses as sent.
func deliveredOnly(got []delivery, h *host, vm string, src, dst netip.Addr) bool {
	if len(got) != 1 || got[0].Host != h || got[0].VM != vm {
		return false
	}
	var k hal.FlowKey
	var l wire.Layout
	if err := wire.Parse(got[0].Frame, 0, &k, &l); err != nil {
		return false
	}
	return k.TunKind == hal.EncapNone && k.Src() == src && k.Dst() == dst
}

func where(got []delivery) string {
	if len(got) == 0 {
		return "nowhere"
	}
	s := make([]string, len(got))
	for i, d := range got {
		s[i] = d.String()
	}
	return strings.Join(s, ", ")
}

// flowTable prints a host's flows the way `vswitchctl flows` does.
func flowTable(h *host) string {
	var b strings.Builder
	fs := h.Switch.Flows()
	if len(fs) == 0 {
		return "(no flows)\n"
	}
	for _, f := range fs {
		acts := make([]string, len(f.Actions))
		for i, a := range f.Actions {
			acts[i] = a.String()
		}
		fmt.Fprintf(&b, "%-4s rule=%-3d packets=%-3d bytes=%-5d %s actions=%s\n",
			f.Path, f.ID, f.Packets, f.Bytes, shortMatch(f.Match), strings.Join(acts, ","))
	}
	return b.String()
}

// shortMatch prints the fields of an exact flow match a reader cares about.
func shortMatch(m hal.Match) string {
	k := m.Key
	s := fmt.Sprintf("in_port=%d", k.InPort)
	if k.TunKind != hal.EncapNone {
		s += fmt.Sprintf(" vni=%d tun_src=%s", k.VNI, hal.AddrFrom16(k.TunSrc))
	}
	if k.IsIP() {
		s += fmt.Sprintf(" %s %s→%s", protoName(k.Proto), k.Src(), k.Dst())
		if k.Proto == hal.ProtoTCP || k.Proto == hal.ProtoUDP {
			s += fmt.Sprintf(" %d→%d", k.L4Src, k.L4Dst)
		}
	} else {
		s += fmt.Sprintf(" eth_type=%#04x", k.EthType)
	}
	return s
}

func protoName(p uint8) string {
	switch p {
	case hal.ProtoICMP:
		return "icmp"
	case hal.ProtoTCP:
		return "tcp"
	case hal.ProtoUDP:
		return "udp"
	case hal.ProtoICMPv6:
		return "icmp6"
	}
	return fmt.Sprintf("proto%d", p)
}

// runInProcess tells the demo's story with simulated hosts and VMs: two
// software NICs joined by an in-memory wire, VMs as the far sides of their
// vports. It returns an error when the story could not be told, and the
// failed checks otherwise.
func runInProcess(w io.Writer) (failed []string, err error) {
	s := &story{w: w}
	st, err := policy.Parse(defaultPolicyName, defaultPolicy)
	if err != nil {
		return nil, err
	}
	fb, err := newFabric(st)
	if err != nil {
		return nil, err
	}
	defer fb.close()
	ctx := context.Background()

	names := []string{"blue-web-1", "blue-web-2", "blue-db-1", "red-app-1", "red-app-2"}
	vms := map[string]vmInfo{}
	for _, n := range names {
		if vms[n], err = vmOf(st, n); err != nil {
			return nil, err
		}
	}
	web1, web2, db1, red1, red2 := vms["blue-web-1"], vms["blue-web-2"], vms["blue-db-1"], vms["red-app-1"], vms["red-app-2"]
	ha, hb := fb.byNm["host-a"], fb.byNm["host-b"]
	if ha == nil || hb == nil {
		return nil, fmt.Errorf("the policy does not name host-a and host-b")
	}
	routerMAC := hal.MAC(st.RouterMAC())

	s.title("Topology (in process: simulated hosts and VMs, software NICs)")
	s.say("policy: %s", defaultPolicyName)
	for _, h := range fb.hosts {
		var local []string
		for _, vm := range st.LocalVMs(h.Name) {
			local = append(local, fmt.Sprintf("%s (%s %v)", vm.Name, vm.Tenant, vm.CAs[0]))
		}
		s.say("%s  PA %s  softnic, uplink port %d; VMs: %s", h.Name, h.PA, h.Uplink, strings.Join(local, ", "))
	}
	s.say("tenants blue (VNI 1001, 1002) and red (VNI 2001) both use 10.0.0.0/24: 10.0.0.10 and 10.0.0.11 exist twice.")

	s.title("Flows before any traffic")
	for _, h := range fb.hosts {
		s.say("%s:", h.Name)
		s.say("%s", indent(flowTable(h), "  "))
	}

	// 1. ping across hosts, inside tenant blue.
	s.title("ping blue-web-1 (host-a) → blue-web-2 (host-b), 5 echo requests and replies")
	excA, excB := exceptions(ha), exceptions(hb)
	for i := 1; i <= 5; i++ {
		got, err := fb.send(web1.name, pingFrame(web1, web2, web2.mac, i, false))
		if err != nil {
			return nil, err
		}
		s.check(deliveredOnly(got, hb, web2.name, web1.ca, web2.ca), "echo request %d delivered to blue-web-2 on host-b (got: %s)", i, where(got))
		got, err = fb.send(web2.name, pingFrame(web2, web1, web1.mac, i, true))
		if err != nil {
			return nil, err
		}
		s.check(deliveredOnly(got, ha, web1.name, web2.ca, web1.ca), "echo reply %d delivered to blue-web-1 on host-a (got: %s)", i, where(got))
		if i == 1 {
			s.say("after the first exchange (first packets walked the policy in the host, then were offloaded):")
			s.say("%s", indent("host-a:\n"+flowTable(ha), "  "))
		}
	}
	dA, dB := exceptions(ha)-excA, exceptions(hb)-excB
	s.check(dA == 2 && dB == 2, "only the first packet of each direction reached a vswitch: host-a %d, host-b %d exception packets for 20 frames", dA, dB)

	// 2. UDP across hosts.
	s.title("UDP blue-web-1:40000 → blue-web-2:53, 10 datagrams")
	excA = exceptions(ha)
	okAll := true
	for i := 0; i < 10; i++ {
		got, err := fb.send(web1.name, udpFrame(web1, web2, web2.mac, 40000, 53, "query"))
		if err != nil {
			return nil, err
		}
		okAll = okAll && deliveredOnly(got, hb, web2.name, web1.ca, web2.ca)
	}
	s.check(okAll, "10 datagrams delivered to blue-web-2 on host-b")
	s.check(exceptions(ha)-excA == 1, "host-a's vswitch saw 1 of them (the first); the NIC forwarded the other 9")

	// 3. TCP between VNETs of one tenant: the routing domain on host-b.
	s.title("TCP blue-web-2 → blue-db-1:5432 (VNET web → VNET db on host-b, through the routing domain; stateful ACL db-from-web)")
	okAll = true
	for i, fl := range []uint8{tcpSYN, tcpACK, tcpACK, tcpACK} {
		got, err := fb.send(web2.name, tcpFrame(web2, db1, routerMAC, 41000, 5432, fl, fmt.Sprint("segment ", i)))
		if err != nil {
			return nil, err
		}
		okAll = okAll && deliveredOnly(got, hb, db1.name, web2.ca, db1.ca)
		rfl := uint8(tcpACK)
		if i == 0 {
			rfl = tcpSA
		}
		got, err = fb.send(db1.name, tcpFrame(db1, web2, routerMAC, 5432, 41000, rfl, "reply"))
		if err != nil {
			return nil, err
		}
		okAll = okAll && deliveredOnly(got, hb, web2.name, db1.ca, web2.ca)
	}
	s.check(okAll, "the connection's segments reached blue-db-1 and its replies blue-web-2")
	got, err := fb.send(web2.name, tcpFrame(web2, db1, routerMAC, 41001, 22, tcpSYN, "ssh?"))
	if err != nil {
		return nil, err
	}
	s.check(len(got) == 0, "blue-web-2 → blue-db-1:22 is dropped by ACL db-default-deny (delivered: %s)", where(got))

	// 4. TCP inside tenant red, across hosts.
	s.title("TCP red-app-2 (host-a) → red-app-1:22 (host-b), and its replies (stateful ACLs ssh-in, out-all)")
	okAll = true
	for i, fl := range []uint8{tcpSYN, tcpACK, tcpACK} {
		got, err := fb.send(red2.name, tcpFrame(red2, red1, red1.mac, 42000, 22, fl, fmt.Sprint("ssh ", i)))
		if err != nil {
			return nil, err
		}
		okAll = okAll && deliveredOnly(got, hb, red1.name, red2.ca, red1.ca)
		rfl := uint8(tcpACK)
		if i == 0 {
			rfl = tcpSA
		}
		got, err = fb.send(red1.name, tcpFrame(red1, red2, red2.mac, 22, 42000, rfl, "banner"))
		if err != nil {
			return nil, err
		}
		okAll = okAll && deliveredOnly(got, ha, red2.name, red1.ca, red2.ca)
	}
	s.check(okAll, "red-app-2 reached red-app-1 at 10.0.0.10 on host-b, not blue-web-1, which has 10.0.0.10 on host-a")

	// Counters: the NIC's per-rule counts merge into the flows.
	for _, h := range fb.hosts {
		if err := h.Switch.Maintain(ctx); err != nil {
			return nil, err
		}
	}
	s.title("Flows after the traffic (counters merged from the NIC)")
	nicFlows := 0
	for _, h := range fb.hosts {
		s.say("%s:", h.Name)
		s.say("%s", indent(flowTable(h), "  "))
		for _, f := range h.Switch.Flows() {
			if f.Path == vswitch.PathNIC {
				nicFlows++
			}
		}
		st := h.Switch.Stats()
		s.say("  %s: %d flows on the NIC, %d in the host; %d exception packets handled", h.Name, st.FlowsNIC, st.FlowsHost, st.Packets)
	}
	s.check(nicFlows > 0, "flows moved from the host to the NIC (%d on the NICs)", nicFlows)
	var udpFlow *vswitch.FlowInfo
	for _, f := range ha.Switch.Flows() {
		// Exact, or a port-wildcard flow (every connection between the
		// two VMs, port 53 included).
		if f.Match.Key.Proto == hal.ProtoUDP && (f.Match.Key.L4Dst == 53 || f.Wildcard) {
			udpFlow = &f
			break
		}
	}
	s.check(udpFlow != nil && udpFlow.Path == vswitch.PathNIC && udpFlow.Packets == 10,
		"host-a's UDP flow is on the NIC and counts all 10 datagrams")

	s.title("explain: what host-a does with blue-web-1 → blue-web-2 UDP 40000→53")
	ex := ha.Switch.Explain(vswitch.Description{VM: web1.name, Packet: policy.Packet{SrcMAC: policy.MAC(web1.mac),
		DstMAC: policy.MAC(web2.mac), EtherType: policy.EtherTypeIPv4, Src: web1.ca, Dst: web2.ca,
		Protocol: policy.ProtoUDP, SrcPort: 40000, DstPort: 53, TTL: 64}})
	s.say("%s", indent(ex.String(), "  "))
	s.check(ex.Where == vswitch.PathNIC, "explain says the flow is handled on the NIC")

	// 5. Isolation.
	s.title("Isolation: the tenants share addresses, never packets")
	got, err = fb.send(web1.name, udpFrame(web1, red2, web2.mac, 40001, 9, "to 10.0.0.11"))
	if err != nil {
		return nil, err
	}
	s.check(deliveredOnly(got, hb, web2.name, web1.ca, web2.ca),
		"blue-web-1 → 10.0.0.11 reaches blue-web-2 (host-b), never red-app-2 (10.0.0.11 on host-a, the sender's own host) (got: %s)", where(got))

	// A blue VM addressing red's VM directly, by its MAC.
	forged := udpFrame(web1, red2, red2.mac, 40002, 9, "cross-tenant")
	got, err = fb.send(web1.name, forged)
	if err != nil {
		return nil, err
	}
	reached := false
	for _, d := range got {
		reached = reached || strings.HasPrefix(d.VM, "red-")
	}
	s.check(!reached, "blue-web-1 → red-app-2's MAC 02:00:00:0e:00:02 at 10.0.0.11 reaches no red VM (got: %s)", where(got))
	s.say("   why (host-a's explain):")
	s.say("%s", indent(ha.Switch.ExplainFrame(ha.Ports[web1.name], forged).String(), "     "))

	// A frame forged on the wire: blue's VNI, red's VM behind it.
	wireForged := wire.BuildEncap(&hal.Encap{Kind: hal.EncapVXLAN, VNI: 1001,
		Src: ha.PA, Dst: hb.PA, SrcMAC: uplinkMAC, DstMAC: uplinkMAC},
		udpFrame(web1, red1, red1.mac, 40003, 22, "vni 1001 to red"))
	if _, err := hb.Far[hb.Uplink].Send([][]byte{wireForged}); err != nil {
		return nil, err
	}
	got, err = fb.wire.Settle(hb)
	if err != nil {
		return nil, err
	}
	reached = false
	for _, d := range got {
		reached = reached || strings.HasPrefix(d.VM, "red-")
	}
	s.check(!reached, "a VXLAN frame with blue's VNI 1001 addressed to red-app-1's MAC and CA reaches no red VM (got: %s)", where(got))
	s.say("   why (host-b's explain):")
	s.say("%s", indent(hb.Switch.ExplainFrame(hb.Uplink, wireForged).String(), "     "))

	if err := gatewayStory(s, fb); err != nil {
		return nil, err
	}
	if err := sealedStory(s); err != nil {
		return nil, err
	}

	s.title("Summary")
	if len(s.failed) == 0 {
		s.say("all %d checks held", s.checks)
	} else {
		s.say("%d of %d checks FAILED:", len(s.failed), s.checks)
		for _, f := range s.failed {
			s.say("  - %s", f)
		}
	}
	return s.failed, nil
}

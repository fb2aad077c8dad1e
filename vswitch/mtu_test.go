package vswitch

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/ip4defrag"
	"github.com/gopacket/gopacket/layers"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
)

// mtus gives every vport and uplink of every host the same MTUs, with
// exceptions by port name ("h2/va2").
func mtus(vport, uplink int, except map[string]int) func(host, port string) int {
	return func(host, port string) int {
		if m, ok := except[host+"/"+port]; ok {
			return m
		}
		if port == "uplink" {
			return uplink
		}
		return vport
	}
}

// bigFrame builds a frame from src to dst whose IP packet takes ipLen
// bytes: an ICMP echo request, or a UDP datagram when udp is set.
func bigFrame(srcMAC, dstMAC policy.MAC, src, dst netip.Addr, ipLen int, df, udp bool) []byte {
	spec := wire.FrameSpec{SrcMAC: hal.MAC(srcMAC), DstMAC: hal.MAC(dstMAC), Src: src, Dst: dst, DontFragment: df, IPID: 0x1234}
	hdr := wire.IPv4HeaderLen
	spec.Proto, spec.ICMPType = hal.ProtoICMP, 8
	if src.Is6() {
		hdr = wire.IPv6HeaderLen
		spec.Proto, spec.ICMPType = hal.ProtoICMPv6, 128
	}
	if udp {
		spec.Proto, spec.SrcPort, spec.DstPort = hal.ProtoUDP, 33000, 9
	}
	spec.Payload = make([]byte, ipLen-hdr-8)
	for i := range spec.Payload {
		spec.Payload[i] = byte(i*13 + 1)
	}
	return wire.Build(spec)
}

// ipOf is a frame's IP packet (after an untagged Ethernet header, without
// padding).
func ipOf(t testing.TB, frame []byte) []byte {
	t.Helper()
	var k hal.FlowKey
	var l wire.Layout
	if err := wire.Parse(frame, 0, &k, &l); err != nil {
		t.Fatal(err)
	}
	return frame[l.L3:l.End]
}

// checkFragNeeded holds an answer against gopacket: an ICMP destination
// unreachable / fragmentation needed from src to dst announcing mtu,
// with valid IPv4 and ICMP checksums, quoting orig's IP packet as far as
// 576 bytes of answer allow.
func checkFragNeeded(t *testing.T, ans, orig []byte, srcMAC, dstMAC policy.MAC, src, dst netip.Addr, mtu int) {
	t.Helper()
	pkt := gopacket.NewPacket(ans, layers.LayerTypeEthernet, gopacket.Default)
	eth, _ := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	icmp, _ := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if eth == nil || ip == nil || icmp == nil {
		t.Fatalf("gopacket decodes %v", pkt)
	}
	if !bytes.Equal(eth.SrcMAC, srcMAC[:]) || !bytes.Equal(eth.DstMAC, dstMAC[:]) {
		t.Errorf("Ethernet %s -> %s, want %s -> %s", eth.SrcMAC, eth.DstMAC, srcMAC, dstMAC)
	}
	if !ip.SrcIP.Equal(src.AsSlice()) || !ip.DstIP.Equal(dst.AsSlice()) || ip.Protocol != layers.IPProtocolICMPv4 {
		t.Errorf("IP %s -> %s proto %d, want %s -> %s ICMP", ip.SrcIP, ip.DstIP, ip.Protocol, src, dst)
	}
	if _, r := ip.VerifyChecksum(); !r.Valid {
		t.Errorf("IPv4 checksum %#04x, want %#04x", r.Actual, r.Correct)
	}
	if _, r := icmp.VerifyChecksum(); !r.Valid {
		t.Errorf("ICMP checksum %#04x, want %#04x", r.Actual, r.Correct)
	}
	if icmp.TypeCode != layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded) {
		t.Errorf("ICMP %v, want fragmentation needed", icmp.TypeCode)
	}
	if int(icmp.Seq) != mtu { // the next-hop MTU field (RFC 1191) is where an echo has its sequence
		t.Errorf("next-hop MTU %d, want %d", icmp.Seq, mtu)
	}
	oip := ipOf(t, orig)
	want := oip[:min(len(oip), wire.MaxICMPv4Error-28)]
	if !bytes.Equal(icmp.Payload, want) {
		t.Errorf("quote of %d bytes, want the first %d bytes of the packet", len(icmp.Payload), len(want))
	}
}

// checkPacketTooBig is checkFragNeeded for ICMPv6 packet too big (1280
// bytes of answer at most).
func checkPacketTooBig(t *testing.T, ans, orig []byte, src, dst netip.Addr, mtu int) {
	t.Helper()
	pkt := gopacket.NewPacket(ans, layers.LayerTypeEthernet, gopacket.Default)
	ip, _ := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	icmp, _ := pkt.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	if ip == nil || icmp == nil {
		t.Fatalf("gopacket decodes %v", pkt)
	}
	if !ip.SrcIP.Equal(src.AsSlice()) || !ip.DstIP.Equal(dst.AsSlice()) {
		t.Errorf("IPv6 %s -> %s, want %s -> %s", ip.SrcIP, ip.DstIP, src, dst)
	}
	if err := icmp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	if _, r := icmp.VerifyChecksum(); !r.Valid {
		t.Errorf("ICMPv6 checksum %#04x, want %#04x", r.Actual, r.Correct)
	}
	if icmp.TypeCode != layers.CreateICMPv6TypeCode(layers.ICMPv6TypePacketTooBig, 0) {
		t.Errorf("ICMPv6 %v, want packet too big", icmp.TypeCode)
	}
	body := icmp.Payload
	if len(body) < 4 || int(binary.BigEndian.Uint32(body)) != mtu {
		t.Fatalf("MTU field % x, want %d", body[:min(len(body), 4)], mtu)
	}
	oip := ipOf(t, orig)
	want := oip[:min(len(oip), wire.MaxICMPv6Error-48)]
	if !bytes.Equal(body[4:], want) || len(ip.Contents)+len(ip.Payload) > wire.MaxICMPv6Error {
		t.Errorf("quote of %d bytes, want the first %d bytes of the packet", len(body)-4, len(want))
	}
}

// answerTo returns the one frame delivered, which must be on vm's port of h.
func answerTo(t *testing.T, got []delivery, h *testHost, vm string) []byte {
	t.Helper()
	if len(got) != 1 || got[0].host != h || got[0].port != h.ports[vm] {
		for _, d := range got {
			t.Logf("delivered on %s port %d: %d bytes", d.host.name, d.port, len(d.frame))
		}
		t.Fatalf("%d frames delivered, want one answer on %s's port on %s", len(got), vm, h.name)
	}
	return got[0].frame
}

// TestMTUFragNeeded: with vports and uplinks of MTU 1500, VXLAN's 50 bytes
// leave 1450 for a VM's packet toward another host. A 1500-byte ping with
// DF is answered with ICMP fragmentation needed, MTU 1450, from the ping's
// destination, on the sender's vport: the first packet (walked and
// offloaded in the host) and the next one (which the NIC hands over with
// ReasonMTU) alike. 1450 bytes pass; 1451 do not.
func TestMTUFragNeeded(t *testing.T) {
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{mtu: mtus(1500, 1500, nil)})
	h1, h2 := tp.byNm["h1"], tp.byNm["h2"]
	ping := bigFrame(macVA1, macVA2, caVA1, caVA2, 1500, true, false)
	for i := range 2 {
		ans := answerTo(t, tp.send(h1, h1.ports["va1"], ping), h1, "va1")
		checkFragNeeded(t, ans, ping, macVA2, macVA1, caVA2, caVA1, 1450)
		if i == 0 && h1.sw.Stats().FlowsNIC != 1 {
			t.Fatalf("the first packet's flow is not offloaded:\n%s", h1.sw.Stats())
		}
	}
	st := h1.sw.Stats()
	if st.Exceptions[hal.ReasonMTU] != 1 || st.MTU.FragNeeded != 2 || st.MTU.TooBig != 2 || st.Drops["mtu"] != 2 ||
		st.HitOffloaded != 0 || st.Injected != 2 {
		t.Fatalf("h1 after two pings:\n%s", st)
	}
	if !strings.Contains(st.String(), "icmp frag-needed 2") {
		t.Errorf("stats do not show the answers:\n%s", st)
	}
	if s := h2.sw.Stats(); s.Packets != 0 {
		t.Fatalf("a packet too big reached h2:\n%s", s)
	}
	// The boundary: 1450 bytes of IP packet fit the uplink after
	// encapsulation (on the NIC: the flow is another ping size, same key).
	ok := bigFrame(macVA1, macVA2, caVA1, caVA2, 1450, true, false)
	deliveredTo(t, tp.send(h1, h1.ports["va1"], ok), h2, "va2")
	over := bigFrame(macVA1, macVA2, caVA1, caVA2, 1451, true, false)
	checkFragNeeded(t, answerTo(t, tp.send(h1, h1.ports["va1"], over), h1, "va1"), over, macVA2, macVA1, caVA2, caVA1, 1450)
}

// TestMTUFragNeededRouted: a routed packet (between VNETs) is answered
// from the router's MAC, the Ethernet destination it was sent to.
func TestMTUFragNeededRouted(t *testing.T) {
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{mtu: mtus(1500, 1500, nil)})
	h1 := tp.byNm["h1"]
	router := policy.DefaultRouterMAC
	ping := bigFrame(macVB1, router, caVB1, caVA2, 1480, true, false)
	ans := answerTo(t, tp.send(h1, h1.ports["vb1"], ping), h1, "vb1")
	checkFragNeeded(t, ans, ping, router, macVB1, caVA2, caVB1, 1450)
}

// v6Policy adds VNET c (2001:db8:c::/64, VNI 400) with vc1 on h1 and vc2
// on h2.
func v6Policy(t *testing.T) *policy.State {
	return smallPolicy(t, func(b *policy.Builder) {
		b.AddVNET(policy.VNET{Tenant: "t", Name: "c", VNI: 400, Subnets: []netip.Prefix{netip.MustParsePrefix("2001:db8:c::/64")}})
		b.AddVM(policy.VM{Name: "vc1", Tenant: "t", VNET: "c", MAC: macVC1, CAs: []netip.Addr{caVC1}, Host: "h1"})
		b.AddVM(policy.VM{Name: "vc2", Tenant: "t", VNET: "c", MAC: macVC2, CAs: []netip.Addr{caVC2}, Host: "h2"})
	})
}

var (
	macVC1 = policy.MAC{0x02, 0, 0, 0, 0x04, 0x11}
	macVC2 = policy.MAC{0x02, 0, 0, 0, 0x04, 0x12}
	caVC1  = netip.MustParseAddr("2001:db8:c::11")
	caVC2  = netip.MustParseAddr("2001:db8:c::12")
)

// TestMTUPacketTooBig: an IPv6 packet too big for the uplink after VXLAN
// is answered with ICMPv6 packet too big, MTU 1450, quoting 1232 bytes.
// Where the uplink leaves less than IPv6's 1280 bytes, 1280 is announced
// and a packet of 1280 bytes, which no answer can help, is dropped and
// counted as such.
func TestMTUPacketTooBig(t *testing.T) {
	tp := newTopo(t, v6Policy(t), topoOpts{mtu: mtus(1500, 1500, nil)})
	h1 := tp.byNm["h1"]
	ping := bigFrame(macVC1, macVC2, caVC1, caVC2, 1500, false, false)
	for range 2 {
		checkPacketTooBig(t, answerTo(t, tp.send(h1, h1.ports["vc1"], ping), h1, "vc1"), ping, caVC2, caVC1, 1450)
	}
	if st := h1.sw.Stats(); st.MTU.PacketTooBig != 2 || st.Exceptions[hal.ReasonMTU] != 1 {
		t.Fatalf("h1:\n%s", st)
	}

	tp = newTopo(t, v6Policy(t), topoOpts{mtu: mtus(1500, 1300, nil)})
	h1 = tp.byNm["h1"]
	ping = bigFrame(macVC1, macVC2, caVC1, caVC2, 1300, false, false)
	checkPacketTooBig(t, answerTo(t, tp.send(h1, h1.ports["vc1"], ping), h1, "vc1"), ping, caVC2, caVC1, 1280)
	ping = bigFrame(macVC1, macVC2, caVC1, caVC2, 1280, false, false)
	if got := tp.send(h1, h1.ports["vc1"], ping); len(got) != 0 {
		t.Fatalf("a 1280-byte packet over a 1250-byte path: %d frames delivered", len(got))
	}
	st := h1.sw.Stats()
	if st.MTU.Unanswered["below_minimum_mtu"] != 1 || st.Drops["mtu"] != 2 || st.MTU.PacketTooBig != 1 {
		t.Fatalf("h1:\n%s", st)
	}
	e := h1.sw.ExplainFrame(h1.ports["vc1"], ping)
	if !strings.Contains(e.Detail, "cannot carry the IP minimum MTU") {
		t.Errorf("explain:\n%s", e)
	}
}

// sendCapture sends frame into h on port and returns what leaves h's
// uplink (not carried to other hosts).
func sendCapture(t *testing.T, h *testHost, port hal.PortID, frame []byte) [][]byte {
	t.Helper()
	if _, err := h.far[port].Send([][]byte{frame}); err != nil {
		t.Fatal(err)
	}
	h.pump(t)
	var out [][]byte
	bufs := [][]byte{make([]byte, 16384)}
	sizes := make([]int, 1)
	for {
		n, err := h.far[h.uplink].Recv(bufs, sizes)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return out
		}
		out = append(out, append([]byte(nil), bufs[0][:sizes[0]]...))
	}
}

// reassemble decapsulates (when tunnelled) and reassembles frames with
// gopacket's ip4defrag, checking every fragment's header checksum, and
// returns the datagram and how many fragments made it.
func reassemble(t *testing.T, frames [][]byte, tunnelled bool) (*layers.IPv4, int) {
	t.Helper()
	d := ip4defrag.NewIPv4Defragmenter()
	var whole *layers.IPv4
	for i, f := range frames {
		pkt := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
		var ip *layers.IPv4
		for _, l := range pkt.Layers() {
			if x, ok := l.(*layers.IPv4); ok {
				ip = x // the last one: the inner packet of a tunnelled frame
			}
		}
		if ip == nil {
			t.Fatalf("frame %d: gopacket decodes %v", i, pkt)
		}
		if tunnelled && pkt.Layer(layers.LayerTypeVXLAN) == nil {
			t.Fatalf("frame %d is not VXLAN", i)
		}
		if _, r := ip.VerifyChecksum(); !r.Valid {
			t.Errorf("fragment %d: header checksum %#04x, want %#04x", i, r.Actual, r.Correct)
		}
		if ip.Flags&layers.IPv4DontFragment != 0 {
			t.Errorf("fragment %d has DF", i)
		}
		out, err := d.DefragIPv4(ip)
		if err != nil {
			t.Fatal(err)
		}
		if out != nil {
			whole = out
		}
	}
	if whole == nil {
		t.Fatalf("%d fragments do not reassemble", len(frames))
	}
	return whole, len(frames)
}

// TestMTUFragmentsWithoutDF: a 1500-byte UDP datagram without DF leaves the
// uplink as two VXLAN frames toward h2 whose outer packets fit the uplink's
// 1500 bytes and whose inner fragments reassemble to the datagram; from
// the first packet (host) and from the NIC's ReasonMTU alike.
func TestMTUFragmentsWithoutDF(t *testing.T) {
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{mtu: mtus(1500, 1500, nil)})
	h1 := tp.byNm["h1"]
	dgram := bigFrame(macVA1, macVA2, caVA1, caVA2, 1500, false, true)
	orig := ipOf(t, dgram)
	for i := range 2 {
		out := sendCapture(t, h1, h1.ports["va1"], dgram)
		for j, f := range out {
			pkt := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
			outer, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			vx, _ := pkt.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN)
			if outer == nil || vx == nil || !outer.DstIP.Equal(pa2.AsSlice()) || vx.VNI != 100 {
				t.Fatalf("frame %d is not VXLAN with VNI 100 toward h2: %v", j, pkt)
			}
			if outer.Length > 1500 {
				t.Errorf("frame %d: outer IP packet of %d bytes over the uplink's MTU", j, outer.Length)
			}
		}
		whole, n := reassemble(t, out, true)
		if n != 2 {
			t.Errorf("%d fragments, want 2", n)
		}
		if !bytes.Equal(whole.Payload, orig[wire.IPv4HeaderLen:]) || whole.Id != 0x1234 || whole.TTL != 64 ||
			!whole.SrcIP.Equal(caVA1.AsSlice()) || !whole.DstIP.Equal(caVA2.AsSlice()) {
			t.Fatalf("reassembled datagram differs from the one sent (%d)", i)
		}
	}
	st := h1.sw.Stats()
	if st.MTU.Fragmented != 2 || st.MTU.Fragments != 4 || st.Drops["mtu"] != 0 || st.Exceptions[hal.ReasonMTU] != 1 ||
		st.Injected != 4 {
		t.Fatalf("h1:\n%s", st)
	}
	e := h1.sw.ExplainFrame(h1.ports["va1"], dgram)
	if !strings.Contains(e.Detail, "split into fragments of at most 1450 bytes") ||
		!strings.Contains(strings.Join(e.Trace, "\n"), "MTU: 1500-byte packet over 1450") {
		t.Errorf("explain:\n%s", e)
	}
}

// TestMTUSmallVport: a VM whose vport is smaller than what reaches it. A
// remote sender's DF packet is answered the way the receiving VM would
// answer it: from its address, through the policy and the tunnel back to
// the sender's host. Without DF the packet is fragmented onto the vport,
// and the VM gets fragments that reassemble to it. A local sender gets
// its answer on its own vport.
func TestMTUSmallVport(t *testing.T) {
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{mtu: mtus(9000, 9000, map[string]int{"h2/va2": 1400, "h1/vb1": 1300})})
	h1, h2 := tp.byNm["h1"], tp.byNm["h2"]
	ping := bigFrame(macVA1, macVA2, caVA1, caVA2, 1500, true, false)
	ans := answerTo(t, tp.send(h1, h1.ports["va1"], ping), h1, "va1")
	checkFragNeeded(t, ans, ping, macVA2, macVA1, caVA2, caVA1, 1400)
	if st := h2.sw.Stats(); st.MTU.FragNeeded != 1 || st.Drops["mtu"] != 1 {
		t.Fatalf("h2:\n%s", st)
	}

	dgram := bigFrame(macVA1, macVA2, caVA1, caVA2, 2000, false, true)
	got := tp.send(h1, h1.ports["va1"], dgram)
	var frames [][]byte
	for _, d := range got {
		if d.host != h2 || d.port != h2.ports["va2"] {
			t.Fatalf("a fragment on %s port %d", d.host.name, d.port)
		}
		frames = append(frames, d.frame)
	}
	whole, n := reassemble(t, frames, false)
	if n != 2 || !bytes.Equal(whole.Payload, ipOf(t, dgram)[wire.IPv4HeaderLen:]) {
		t.Fatalf("%d fragments reassemble to a different datagram", n)
	}

	// Local delivery, routed from va1 (VNET a) to vb1 (VNET b, vport 1300).
	ping = bigFrame(macVA1, policy.DefaultRouterMAC, caVA1, caVB1, 1500, true, false)
	ans = answerTo(t, tp.send(h1, h1.ports["va1"], ping), h1, "va1")
	checkFragNeeded(t, ans, ping, policy.DefaultRouterMAC, macVA1, caVB1, caVA1, 1300)
}

// TestMTURateLimit: answers to one sender stop after its burst, come back
// at its rate, and another sender is not held back by the first.
func TestMTURateLimit(t *testing.T) {
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{mtu: mtus(1500, 1500, nil)})
	h1 := tp.byNm["h1"]
	ping := bigFrame(macVA1, macVA2, caVA1, caVA2, 1500, true, false)
	answered := func(vm string, frame []byte, n int) int {
		got := 0
		for range n {
			switch d := tp.send(h1, h1.ports[vm], frame); len(d) {
			case 0:
			case 1:
				if d[0].port != h1.ports[vm] {
					t.Fatalf("delivered on port %d", d[0].port)
				}
				got++
			default:
				t.Fatalf("%d frames for one ping", len(d))
			}
		}
		return got
	}
	if got := answered("va1", ping, 2*icmpSenderBurst); got != icmpSenderBurst {
		t.Fatalf("%d of %d pings answered at once, want the burst %d", got, 2*icmpSenderBurst, icmpSenderBurst)
	}
	tp.clock.Advance(time.Second / 2)
	if got := answered("va1", ping, icmpSenderRate); got != icmpSenderRate/2 {
		t.Fatalf("%d pings answered half a second later, want %d", got, icmpSenderRate/2)
	}
	u := bigFrame(macU1, macU2, caU1, caU2, 1500, true, false)
	if got := answered("u1", u, 3); got != 3 {
		t.Fatalf("another sender: %d of 3 answered", got)
	}
	st := h1.sw.Stats()
	want := uint64(icmpSenderBurst + icmpSenderRate/2)
	if st.MTU.Suppressed != want || st.MTU.FragNeeded != want+3 || st.Drops["mtu"] != 2*want+3 {
		t.Fatalf("h1:\n%s", st)
	}
}

// TestICMPLimiter: the per-sender table keeps its size whatever the number
// of senders, and the global bucket bounds the answers of many senders.
func TestICMPLimiter(t *testing.T) {
	var lim icmpLimiter
	now := int64(1e18)
	n := 0
	for i := range 10 * icmpSenders {
		k := senderKey{port: 1, ip: netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}).As16()}
		if lim.allow(k, now) {
			n++
		}
	}
	if n != icmpGlobalBurst || len(lim.sets) != icmpSenders/icmpWays {
		t.Fatalf("%d answers to new senders at once (want the global burst %d), %d sets", n, icmpGlobalBurst, len(lim.sets))
	}
	now += int64(time.Second)
	k := senderKey{port: 2}
	n = 0
	for range 2 * icmpSenderBurst {
		if lim.allow(k, now) {
			n++
		}
	}
	if n != icmpSenderBurst {
		t.Fatalf("%d answers to one sender, want its burst %d", n, icmpSenderBurst)
	}
	if lim.allow(k, now+senderInterval-1) || !lim.allow(k, now+senderInterval) {
		t.Fatal("the sender's bucket does not refill at its rate")
	}
	if lim.allow(k, now-int64(time.Second)) {
		t.Fatal("a clock going back refilled the bucket")
	}
}

// TestMTUUnanswered: a packet the RFCs forbid answering is dropped and
// counted with its reason, and Explain says why.
func TestMTUUnanswered(t *testing.T) {
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{mtu: mtus(1500, 1500, nil)})
	h1 := tp.byNm["h1"]
	spec := wire.FrameSpec{SrcMAC: hal.MAC(macVA1), DstMAC: hal.MAC(macVA2), Src: caVA1, Dst: caVA2, DontFragment: true,
		Proto: hal.ProtoICMP, ICMPType: 11, Payload: make([]byte, 1472)}
	f := wire.Build(spec)
	if got := tp.send(h1, h1.ports["va1"], f); len(got) != 0 {
		t.Fatalf("%d frames for an oversized ICMP error", len(got))
	}
	st := h1.sw.Stats()
	if st.Drops["mtu"] != 1 || st.MTU.Unanswered["icmp_error"] != 1 || st.MTU.FragNeeded != 0 {
		t.Fatalf("h1:\n%s", st)
	}
	if !strings.Contains(st.String(), "unanswered icmp_error 1") {
		t.Errorf("stats:\n%s", st)
	}
	e := h1.sw.ExplainFrame(h1.ports["va1"], f)
	if !strings.Contains(e.Detail, "dropped without an answer: it is an ICMP error itself") {
		t.Errorf("explain:\n%s", e)
	}
	ping := bigFrame(macVA1, macVA2, caVA1, caVA2, 1500, true, false)
	e = h1.sw.ExplainFrame(h1.ports["va1"], ping)
	if !strings.Contains(e.Detail, "answered with ICMP fragmentation needed, MTU 1450, from the packet's destination 10.1.0.12") {
		t.Errorf("explain:\n%s", e)
	}
	small := bigFrame(macVA1, macVA2, caVA1, caVA2, 1000, true, false)
	if e := h1.sw.ExplainFrame(h1.ports["va1"], small); strings.Contains(e.String(), "MTU") {
		t.Errorf("explain of a packet that fits:\n%s", e)
	}
}

// BenchmarkTooBigFragment measures the host's share of a packet too big
// for the uplink without DF: a batch of 64 packets of one offloaded flow
// that the NIC handed over with ReasonMTU (1500-byte datagrams, 1500-byte
// uplink), each split into two fragments, encapsulated and reinjected.
// ns/op is per packet.
func BenchmarkTooBigFragment(b *testing.B) {
	h := newBenchHost(b, smallPolicy(b, nil), 0)
	f := bigFrame(macVA1, macVA2, caVA1, caVA2, 1500, false, true)
	batch := make([]hal.Exception, 64)
	for i := range batch {
		batch[i] = hal.Exception{InPort: h.va1, Reason: hal.ReasonMTU, Buf: f, Len: len(f)}
	}
	ctx := context.Background()
	run := func() {
		if err := h.sw.HandleBatch(ctx, batch); err != nil {
			b.Fatal(err)
		}
		h.uplink.Discard()
	}
	run()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += len(batch) {
		run()
	}
	b.StopTimer()
	if st := h.sw.Stats(); st.MTU.Fragments != 2*st.MTU.Fragmented || st.MTU.Fragmented < uint64(b.N) {
		b.Fatalf("%d packets fragmented into %d", st.MTU.Fragmented, st.MTU.Fragments)
	}
}

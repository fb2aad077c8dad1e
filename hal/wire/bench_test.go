package wire

import (
	"testing"

	"github.com/nicpath/nicpath/hal"
)

// udp4Frame64 is the benchmark's packet: a 64-byte Ethernet/IPv4/UDP frame
// (without FCS), the smallest frame the software NIC budget is stated for.
func udp4Frame64() []byte {
	return Build(FrameSpec{SrcMAC: macA, DstMAC: macB, Src: caA4, Dst: caB4, Proto: hal.ProtoUDP,
		SrcPort: 1000, DstPort: 2000, Payload: make([]byte, 64-EthHeaderLen-IPv4HeaderLen-UDPHeaderLen)})
}

// parseCases are the frame shapes whose parsing must not allocate and whose
// speed we track.
func parseCases() []struct {
	name  string
	frame []byte
} {
	vx := encapOf(hal.EncapVXLAN, false)
	gn := encapOf(hal.EncapGeneve, true)
	gn.GeneveOptions = []byte{0, 1, 2, 1, 1, 2, 3, 4}
	nv := encapOf(hal.EncapNVGRE, false)
	vlan := udp4Spec()
	vlan.VLAN = 100
	qinq := vlan
	qinq.OuterVLAN = 200
	ext := tcp6Spec()
	ext.ExtHeaders = []uint8{ProtoHopByHop, ProtoFragment}
	opts := udp4Spec()
	opts.IPOptions = []byte{0x94, 4, 0, 0}
	icmp := FrameSpec{SrcMAC: macA, DstMAC: macB, Src: caA4, Dst: caB4, Proto: hal.ProtoICMP, ICMPType: 8}
	bad := udp4Spec()
	bad.BadIPChecksum = true
	return []struct {
		name  string
		frame []byte
	}{
		{"udp4-64B", udp4Frame64()},
		{"vlan-udp4", Build(vlan)},
		{"qinq-udp4", Build(qinq)},
		{"udp4-options", Build(opts)},
		{"icmp4", Build(icmp)},
		{"tcp6", Build(tcp6Spec())},
		{"tcp6-ext", Build(ext)},
		{"vxlan4-udp4", BuildEncap(&vx, udp4Frame64())},
		{"geneve6-opts-tcp6", BuildEncap(&gn, Build(tcp6Spec()))},
		{"nvgre4-udp4", BuildEncap(&nv, udp4Frame64())},
		{"error-bad-checksum", Build(bad)},
	}
}

func BenchmarkParse(b *testing.B) {
	for _, c := range parseCases() {
		b.Run(c.name, func(b *testing.B) {
			var k hal.FlowKey
			var l Layout
			b.ReportAllocs()
			b.SetBytes(int64(len(c.frame)))
			for b.Loop() {
				_ = Parse(c.frame, 1, &k, &l)
			}
		})
	}
}

func BenchmarkPush(b *testing.B) {
	f := udp4Frame64()
	for _, e := range encaps() {
		b.Run(e.name, func(b *testing.B) {
			tpl, err := NewEncapTemplate(&e.e)
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, MaxEncapHeadroom+len(f))
			copy(buf[MaxEncapHeadroom:], f)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tpl.Push(buf, MaxEncapHeadroom, len(buf), 0x12345678); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPipeline is the per-packet work of the software NIC without its
// table lookup: a frame arrives (copied into a buffer with headroom, as a
// receive ring would), is parsed, has its MACs and destination address
// rewritten and its TTL decremented, and is VXLAN-encapsulated with the
// inner flow's hash.
func BenchmarkPipeline(b *testing.B) {
	for _, v6 := range []bool{false, true} {
		name := "vxlan4"
		if v6 {
			name = "vxlan6"
		}
		b.Run(name, func(b *testing.B) {
			f := udp4Frame64()
			e := encapOf(hal.EncapVXLAN, v6)
			tpl, err := NewEncapTemplate(&e)
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, MaxEncapHeadroom+len(f))
			nat := caB4.As16()
			nat[10], nat[11], nat[15] = 0xff, 0xff, 99
			var k hal.FlowKey
			var l Layout
			b.ReportAllocs()
			for b.Loop() {
				copy(buf[MaxEncapHeadroom:], f)
				frame := buf[MaxEncapHeadroom:]
				if err := Parse(frame, 1, &k, &l); err != nil {
					b.Fatal(err)
				}
				SetEthSrc(frame, &l, macC)
				SetEthDst(frame, &l, macD)
				if err := SetIPDst(frame, &l, nat); err != nil {
					b.Fatal(err)
				}
				if _, err := DecTTL(frame, &l); err != nil {
					b.Fatal(err)
				}
				if _, err := tpl.Push(buf, MaxEncapHeadroom, MaxEncapHeadroom+l.End, FlowHash(&k)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkFlowHash(b *testing.B) {
	var k hal.FlowKey
	var l Layout
	if err := Parse(udp4Frame64(), 1, &k, &l); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var sink uint32
	for b.Loop() {
		sink += FlowHash(&k)
	}
	_ = sink
}

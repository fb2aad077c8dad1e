package wire

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

// gsoCase is a super-frame as a Linux sender hands it to a device with
// TSO/USO, and its virtio-net header.
type gsoCase struct {
	name  string
	frame []byte
	hdr   VirtioNetHdr
}

// superFrame builds a GSO super-frame: spec with a payload of n bytes, TCP
// sequence number seq, its transport checksum left partial (the field holds
// the folded pseudo-header sum, as Linux leaves it), wrapped in e when e is
// not nil (the outer UDP checksum computed when udpSum, else 0 over IPv4).
func superFrame(t testing.TB, name string, spec FrameSpec, n int, mss uint16, e *hal.Encap, udpSum bool) gsoCase {
	r := rand.New(rand.NewSource(int64(n)))
	spec.Payload = make([]byte, n)
	r.Read(spec.Payload)
	inner := Build(spec)
	var k hal.FlowKey
	var l Layout
	if err := Parse(inner, 0, &k, &l); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if l.Proto == hal.ProtoTCP {
		binary.BigEndian.PutUint32(inner[l.L4+4:], 0xfffff000) // wraps within the frame
	}
	h := VirtioNetHdr{Flags: VirtioNetHdrFNeedsCsum, GSOSize: mss, CsumStart: uint16(l.L4), HdrLen: uint16(l.Payload)}
	off := 16
	switch {
	case l.Proto == hal.ProtoUDP:
		h.GSOType, off = VirtioNetHdrGSOUDPL4, 6
	case l.EthType == hal.EtherTypeIPv6:
		h.GSOType = VirtioNetHdrGSOTCPv6
	default:
		h.GSOType = VirtioNetHdrGSOTCPv4
	}
	h.CsumOffset = uint16(off)
	ps := pseudoSum(inner, l.L3, l.EthType == hal.EtherTypeIPv6, l.Proto, l.End-l.L4)
	binary.BigEndian.PutUint16(inner[l.L4+off:], ^Fold(ps))
	f := inner
	if e != nil {
		f = BuildEncap(e, inner)
		shift := len(f) - len(inner)
		h.CsumStart += uint16(shift)
		h.HdrLen += uint16(shift)
		if udpSum && e.Kind != hal.EncapNVGRE {
			if err := Parse(f, 0, &k, &l); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			u := f[l.OuterL4:]
			u[6], u[7] = 0x12, 0x34 // anything but 0: "has a checksum"
		}
	}
	return gsoCase{name, f, h}
}

// gsoCases are super-frames of every shape; payloads and GSO sizes are
// divided by scale (the fuzz seeds are small).
func gsoCases(t testing.TB, scale int) []gsoCase {
	var out []gsoCase
	tcp4 := FrameSpec{SrcMAC: macA, DstMAC: macB, Src: caA4, Dst: caB4, Proto: hal.ProtoTCP, SrcPort: 40000, DstPort: 5201,
		TCPFlags: 0x80 | 0x10 | 0x08 | 0x01, IPID: 0xfffe} // CWR ACK PSH FIN; the ID wraps
	tcp6 := tcp4
	tcp6.Src, tcp6.Dst = caA6, caB6
	udp4 := FrameSpec{SrcMAC: macA, DstMAC: macB, Src: caA4, Dst: caB4, Proto: hal.ProtoUDP, SrcPort: 4000, DstPort: 5000, IPID: 7}
	udp6 := udp4
	udp6.Src, udp6.Dst = caA6, caB6
	vlan := tcp4
	vlan.VLAN, vlan.IPOptions = 100, []byte{0x94, 0x04, 0x00, 0x00}
	ext6 := tcp6
	ext6.ExtHeaders = []uint8{ProtoHopByHop, ProtoDstOpts}
	for _, c := range []struct {
		name string
		spec FrameSpec
	}{{"tcp4", tcp4}, {"tcp6", tcp6}, {"udp4", udp4}, {"udp6", udp6}, {"vlan-opts-tcp4", vlan}, {"ext-tcp6", ext6}} {
		out = append(out, superFrame(t, c.name, c.spec, 5000/scale, uint16(1448/scale), nil, false),
			superFrame(t, c.name+"-odd", c.spec, 4001/scale, uint16(1000/scale), nil, false),
			superFrame(t, c.name+"-one", c.spec, 900/scale, uint16(1448/scale), nil, false))
		if c.name == "vlan-opts-tcp4" || c.name == "ext-tcp6" {
			continue
		}
		for _, ne := range encaps() {
			e := ne.e
			out = append(out, superFrame(t, c.name+"-in-"+ne.name, c.spec, 4000/scale, uint16(1398/scale), &e, false))
			if e.Kind != hal.EncapNVGRE {
				out = append(out, superFrame(t, c.name+"-in-"+ne.name+"-csum", c.spec, 3001/scale, uint16(1398/scale), &e, true))
			}
		}
	}
	// UDP segmentation of datagrams to the VXLAN port that are not VXLAN
	// (a userspace tunnel endpoint's): cut by the outer packet.
	raw := udp4
	raw.DstPort = hal.PortVXLAN
	raw.Payload = make([]byte, 3000/scale)
	rand.New(rand.NewSource(3)).Read(raw.Payload)
	raw.Payload[0] = 0x08 // VXLAN's I flag: Parse takes the payload for VXLAN
	clear(raw.Payload[8 : 8+14])
	raw.Payload[8+12] = 0x88 // an inner Ethernet header of a non-IP type
	f := Build(raw)
	binary.BigEndian.PutUint16(f[34+6:], ^Fold(pseudoSum(f, 14, false, hal.ProtoUDP, len(f)-34)))
	c := gsoCase{"udp4-to-vxlan-port", f, VirtioNetHdr{Flags: VirtioNetHdrFNeedsCsum, GSOType: VirtioNetHdrGSOUDPL4,
		GSOSize: uint16(1000 / scale), CsumStart: 34, CsumOffset: 6, HdrLen: 42}}
	out = append(out, c)
	return out
}

// segmentAll cuts c into segments (fresh slices).
func segmentAll(c *gsoCase, maxL3 int) ([][]byte, error) {
	var s Segmenter
	if err := s.Init(c.frame, &c.hdr, maxL3); err != nil {
		return nil, err
	}
	var out [][]byte
	buf := make([]byte, len(c.frame))
	for !s.Done() {
		n, err := s.Next(buf)
		if err != nil {
			return nil, err
		}
		out = append(out, append([]byte(nil), buf[:n]...))
	}
	if len(out) != s.Segments() {
		return nil, fmt.Errorf("%d segments, Segments() said %d", len(out), s.Segments())
	}
	return out, nil
}

// checkSegments checks every invariant of segs cut from c with maxL3 by
// hal/wire's own means, independently of the Segmenter's code: each
// segment parses (IPv4 header checksums valid), IP and UDP lengths end at
// the segment's end, transport checksums (and the outer UDP one when the
// super-frame had one) verify, headers equal the super-frame's but for
// the fields segmentation changes, IDs and sequence numbers advance, TCP
// flags are split as the kernel splits them, every segment but the last
// carries mss payload bytes and fits maxL3, and the payloads concatenate to
// the super-frame's.
func checkSegments(t testing.TB, c *gsoCase, segs [][]byte, maxL3 int) {
	t.Helper()
	var k hal.FlowKey
	var l0 Layout
	if err := Parse(c.frame, 0, &k, &l0); err != nil {
		t.Fatalf("%s: super-frame: %v", c.name, err)
	}
	// The segmented packet: at CsumStart; the outer one when tunnelled.
	l3, l4, hdr, end := l0.L3, l0.L4, l0.Payload, l0.End
	v6 := l0.EthType == hal.EtherTypeIPv6
	ol3, ol4 := -1, -1
	ov6 := l0.OuterEthType == hal.EtherTypeIPv6
	outerCase := l0.Tunnel >= 0 && int(c.hdr.CsumStart) == l0.OuterL4
	if outerCase {
		l3, l4, hdr, v6 = l0.OuterL3, l0.OuterL4, l0.OuterL4+8, ov6
		end = ipEnd(c.frame, l3, v6)
	} else if l0.Tunnel >= 0 {
		ol3 = l0.OuterL3
		if k.TunKind != hal.EncapNVGRE {
			ol4 = l0.OuterL4
		}
	}
	tcp := c.hdr.GSOType&^VirtioNetHdrGSOECN != VirtioNetHdrGSOUDPL4
	outerSum := ol4 >= 0 && binary.BigEndian.Uint16(c.frame[ol4+6:]) != 0
	var payload []byte
	for i, seg := range segs {
		// A datagram to a tunnel port cut by its outer packet: later
		// segments start with payload bytes, not a tunnel header.
		var l Layout
		if err := Parse(seg, 0, &k, &l); err != nil && !outerCase {
			t.Fatalf("%s: segment %d does not parse: %v", c.name, i, err)
		}
		for _, ip := range []int{l3, ol3} {
			if ip >= 0 && seg[ip]>>4 == 4 && Checksum(seg[ip:ip+int(seg[ip]&0x0f)<<2], 0) != 0 {
				t.Fatalf("%s: segment %d: IPv4 header checksum at %d does not verify", c.name, i, ip)
			}
		}
		if ipEnd(seg, l3, v6) != len(seg) || ol3 >= 0 && ipEnd(seg, ol3, ov6) != len(seg) {
			t.Fatalf("%s: segment %d: IP length does not end at the segment's end (%d)", c.name, i, len(seg))
		}
		if maxL3 > 0 {
			base := l3
			if ol3 >= 0 {
				base = ol3
			}
			if len(seg)-base > maxL3 {
				t.Fatalf("%s: segment %d: L3 of %d bytes over %d", c.name, i, len(seg)-base, maxL3)
			}
		}
		proto := hal.ProtoUDP
		if tcp {
			proto = hal.ProtoTCP
		} else if int(binary.BigEndian.Uint16(seg[l4+4:])) != len(seg)-l4 {
			t.Fatalf("%s: segment %d: UDP length %d for %d bytes", c.name, i, binary.BigEndian.Uint16(seg[l4+4:]), len(seg)-l4)
		}
		if Checksum(seg[l4:], pseudoSum(seg, l3, v6, proto, len(seg)-l4)) != 0 {
			t.Fatalf("%s: segment %d: transport checksum does not verify", c.name, i)
		}
		if ol4 >= 0 {
			u := seg[ol4:]
			if int(binary.BigEndian.Uint16(u[4:])) != len(seg)-ol4 {
				t.Fatalf("%s: segment %d: outer UDP length %d", c.name, i, binary.BigEndian.Uint16(u[4:]))
			}
			if has := binary.BigEndian.Uint16(u[6:]) != 0; has != outerSum {
				t.Fatalf("%s: segment %d: outer UDP checksum present %v, super-frame's %v", c.name, i, has, outerSum)
			}
			if outerSum && Checksum(u, pseudoSum(seg, ol3, ov6, hal.ProtoUDP, len(u))) != 0 {
				t.Fatalf("%s: segment %d: outer UDP checksum does not verify", c.name, i)
			}
		}
		for _, ip := range []struct {
			off int
			v6  bool
		}{{l3, v6}, {ol3, ov6}} {
			if ip.off < 0 || ip.v6 {
				continue
			}
			if id, want := binary.BigEndian.Uint16(seg[ip.off+4:]), binary.BigEndian.Uint16(c.frame[ip.off+4:])+uint16(i); id != want {
				t.Fatalf("%s: segment %d: IP ID %#x, want %#x", c.name, i, id, want)
			}
		}
		n := len(seg) - hdr
		if i < len(segs)-1 && n != len(segs[0])-hdr {
			t.Fatalf("%s: segment %d carries %d bytes, the first %d", c.name, i, n, len(segs[0])-hdr)
		}
		if maxL3 == 0 && i < len(segs)-1 && n != int(c.hdr.GSOSize) {
			t.Fatalf("%s: segment %d carries %d bytes, GSO size %d", c.name, i, n, c.hdr.GSOSize)
		}
		if tcp {
			th, oth := seg[l4:], c.frame[l4:]
			if seq, want := binary.BigEndian.Uint32(th[4:]), binary.BigEndian.Uint32(oth[4:])+uint32(len(payload)); seq != want {
				t.Fatalf("%s: segment %d: seq %#x, want %#x", c.name, i, seq, want)
			}
			want := oth[13]
			if i < len(segs)-1 {
				want &^= 0x09
			}
			if i > 0 {
				want &^= 0x80
			}
			if th[13] != want {
				t.Fatalf("%s: segment %d: TCP flags %#x, want %#x", c.name, i, th[13], want)
			}
		}
		// Headers equal the super-frame's outside the fields above.
		a, b := append([]byte(nil), seg[:hdr]...), append([]byte(nil), c.frame[:hdr]...)
		for _, x := range [][]byte{a, b} {
			for _, ip := range []struct {
				off int
				v6  bool
			}{{l3, v6}, {ol3, ov6}} {
				switch {
				case ip.off < 0:
				case ip.v6:
					clear(x[ip.off+4 : ip.off+6])
				default:
					clear(x[ip.off+2 : ip.off+6])
					clear(x[ip.off+10 : ip.off+12])
				}
			}
			if tcp {
				clear(x[l4+4 : l4+8])
				x[l4+13] &^= 0x89
				clear(x[l4+16 : l4+18])
			} else {
				clear(x[l4+4 : l4+8])
			}
			if ol4 >= 0 {
				clear(x[ol4+4 : ol4+8])
			}
		}
		if !bytes.Equal(a, b) {
			t.Fatalf("%s: segment %d: headers differ from the super-frame's beyond lengths, IDs, seq, flags, checksums", c.name, i)
		}
		payload = append(payload, seg[hdr:]...)
	}
	if !bytes.Equal(payload, c.frame[hdr:end]) {
		t.Fatalf("%s: the segments' payloads (%d bytes) are not the super-frame's (%d)", c.name, len(payload), end-hdr)
	}
}

func TestSegment(t *testing.T) {
	for _, c := range gsoCases(t, 1) {
		t.Run(c.name, func(t *testing.T) {
			segs, err := segmentAll(&c, 0)
			if err != nil {
				t.Fatal(err)
			}
			payload := len(c.frame) - int(c.hdr.HdrLen)
			if want := (payload + int(c.hdr.GSOSize) - 1) / int(c.hdr.GSOSize); len(segs) != want {
				t.Fatalf("%d segments, want %d", len(segs), want)
			}
			checkSegments(t, &c, segs, 0)
			// gopacket recomputes every length and checksum itself and
			// must arrive at the same bytes.
			if strings.HasPrefix(c.name, "udp4-to-vxlan-port") {
				return // gopacket would take the payload for VXLAN
			}
			for _, s := range segs {
				// Segments are not padded (a NIC pads on transmit);
				// gopacket pads what it serializes.
				reserialize(t, pad(append([]byte(nil), s...)))
			}
		})
	}
}

// TCP segments are cut smaller than the GSO size to fit the L3 bound; UDP
// datagrams cannot be and are refused.
func TestSegmentMaxL3(t *testing.T) {
	for _, c := range gsoCases(t, 1) {
		var base int
		var k hal.FlowKey
		var l Layout
		if err := Parse(c.frame, 0, &k, &l); err != nil {
			t.Fatal(err)
		}
		base = l.L3
		if l.Tunnel >= 0 && int(c.hdr.CsumStart) == l.L4 {
			base = l.OuterL3
		}
		if l.Tunnel >= 0 && int(c.hdr.CsumStart) == l.OuterL4 {
			continue
		}
		maxL3 := int(c.hdr.HdrLen) - base + 700
		segs, err := segmentAll(&c, maxL3)
		if c.hdr.GSOType == VirtioNetHdrGSOUDPL4 {
			if err != ErrSegmentTooBig {
				t.Fatalf("%s: UDP over the bound: %v, want ErrSegmentTooBig", c.name, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if len(segs[0])-base != maxL3 {
			t.Fatalf("%s: first segment L3 %d, want the bound %d", c.name, len(segs[0])-base, maxL3)
		}
		checkSegments(t, &c, segs, maxL3)
	}
}

func TestSegmentRefuses(t *testing.T) {
	cs := gsoCases(t, 1)
	c := cs[0] // tcp4
	bad := func(name string, mod func(c *gsoCase), want error) {
		t.Helper()
		x := gsoCase{c.name, append([]byte(nil), c.frame...), c.hdr}
		mod(&x)
		var s Segmenter
		if err := s.Init(x.frame, &x.hdr, 0); err != want {
			t.Errorf("%s: %v, want %v", name, err, want)
		}
	}
	bad("UFO", func(c *gsoCase) { c.hdr.GSOType = VirtioNetHdrGSOUDP }, ErrGSOType)
	bad("size 0", func(c *gsoCase) { c.hdr.GSOSize = 0 }, ErrGSOType)
	bad("TCPv6 on IPv4", func(c *gsoCase) { c.hdr.GSOType = VirtioNetHdrGSOTCPv6 }, ErrGSOType)
	bad("UDP_L4 on TCP", func(c *gsoCase) { c.hdr.GSOType = VirtioNetHdrGSOUDPL4 }, ErrGSOType)
	bad("csum start", func(c *gsoCase) { c.hdr.CsumStart = 14 }, ErrGSOFrame)
	bad("truncated", func(c *gsoCase) { c.frame = c.frame[:100] }, ErrGSOFrame)
	bad("headers only", func(c *gsoCase) {
		c.frame = c.frame[:c.hdr.HdrLen]
		binary.BigEndian.PutUint16(c.frame[16:], uint16(len(c.frame)-14))
		c.frame[24], c.frame[25] = 0, 0
		binary.BigEndian.PutUint16(c.frame[24:], Checksum(c.frame[14:34], 0))
	}, ErrGSOFrame)
	var s Segmenter
	if n, err := s.Next(make([]byte, 100)); n != 0 || err != nil || !s.Done() {
		t.Errorf("Next on an idle Segmenter: %d, %v", n, err)
	}
	if err := s.Init(c.frame, &c.hdr, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Next(make([]byte, 100)); err != ErrBounds {
		t.Errorf("Next into a short buffer: %v", err)
	}
}

func TestSegmentDoesNotAllocate(t *testing.T) {
	cs := gsoCases(t, 1)
	buf := make([]byte, 1<<16)
	var s Segmenter
	for _, c := range cs {
		a := testing.AllocsPerRun(50, func() {
			if err := s.Init(c.frame, &c.hdr, 1500); err != nil && err != ErrSegmentTooBig {
				t.Fatal(err)
			}
			for !s.Done() {
				if _, err := s.Next(buf); err != nil {
					t.Fatal(err)
				}
			}
		})
		if a != 0 {
			t.Fatalf("%s: %v allocations", c.name, a)
		}
	}
}

func TestCompleteChecksum(t *testing.T) {
	for _, c := range gsoCases(t, 1) {
		f := append([]byte(nil), c.frame...)
		if err := CompleteChecksum(f, int(c.hdr.CsumStart), int(c.hdr.CsumOffset)); err != nil {
			t.Fatal(err)
		}
		var k hal.FlowKey
		var l Layout
		if err := Parse(f, 0, &k, &l); err != nil {
			t.Fatal(err)
		}
		if int(c.hdr.CsumStart) != l.L4 {
			continue // the UDP-to-the-VXLAN-port case: its checksum is the outer one's
		}
		if checked, ok := l4ChecksumOK(f, &l); !checked || !ok {
			t.Errorf("%s: checked %v ok %v after CompleteChecksum", c.name, checked, ok)
		}
	}
	// An outer UDP checksum left partial (Linux does so when the inner one
	// is complete) is completed the same way.
	e := encaps()[0].e
	f := BuildEncap(&e, Build(FrameSpec{SrcMAC: macA, DstMAC: macB, Src: caA4, Dst: caB4, Proto: hal.ProtoUDP, SrcPort: 1, DstPort: 2, Payload: []byte("abc")}))
	var k hal.FlowKey
	var l Layout
	if err := Parse(f, 0, &k, &l); err != nil {
		t.Fatal(err)
	}
	u := f[l.OuterL4:]
	binary.BigEndian.PutUint16(u[6:], ^Fold(pseudoSum(f, l.OuterL3, false, hal.ProtoUDP, len(u))))
	if err := CompleteChecksum(f, l.OuterL4, 6); err != nil {
		t.Fatal(err)
	}
	if Checksum(u, pseudoSum(f, l.OuterL3, false, hal.ProtoUDP, len(u))) != 0 {
		t.Error("outer UDP checksum does not verify")
	}
	for _, bad := range [][2]int{{-1, 6}, {len(f), 0}, {len(f) - 7, 6}, {10, -1}} {
		if err := CompleteChecksum(f, bad[0], bad[1]); err != ErrCsumOffsets {
			t.Errorf("start %d offset %d: %v", bad[0], bad[1], err)
		}
	}
	if a := testing.AllocsPerRun(100, func() { _ = CompleteChecksum(f, l.OuterL4, 6) }); a != 0 {
		t.Errorf("%v allocations", a)
	}
}

func TestVirtioNetHdrRoundTrip(t *testing.T) {
	h := VirtioNetHdr{Flags: VirtioNetHdrFNeedsCsum, GSOType: VirtioNetHdrGSOTCPv4 | VirtioNetHdrGSOECN, HdrLen: 116, GSOSize: 1398, CsumStart: 84, CsumOffset: 16}
	var b [VirtioNetHdrLen]byte
	h.Put(b[:])
	if got := DecodeVirtioNetHdr(b[:]); got != h || !got.IsGSO() || !got.NeedsCsum() {
		t.Fatalf("%+v -> % x -> %+v", h, b, got)
	}
	if (&VirtioNetHdr{GSOType: VirtioNetHdrGSOECN}).IsGSO() {
		t.Fatal("ECN alone is not GSO")
	}
}

// Fuzz input: a virtio-net header, a 2-byte L3 bound, then the frame.
func gsoFuzzInput(c *gsoCase, maxL3 uint16) []byte {
	b := make([]byte, VirtioNetHdrLen+2, VirtioNetHdrLen+2+len(c.frame))
	c.hdr.Put(b)
	binary.BigEndian.PutUint16(b[VirtioNetHdrLen:], maxL3)
	return append(b, c.frame...)
}

// FuzzSegment: whatever the frame and header, Init refuses or every
// segment satisfies checkSegments; nothing panics or reads out of bounds.
func FuzzSegment(f *testing.F) {
	for _, s := range gsoSeeds(f) {
		f.Add(s.vals[0].([]byte))
	}
	buf, fill := make([]byte, 1<<17), bytes.Repeat([]byte{0xa5}, 1<<17)
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < VirtioNetHdrLen+2 {
			return
		}
		// Every input starts from the same buffer: Next writes each
		// segment over what the one before it left, so a byte it failed
		// to write would otherwise hold whatever an earlier input left
		// there, and the failure would not repeat when the input is
		// rerun alone. The fill is no value a header field defaults to.
		copy(buf, fill)
		c := gsoCase{"fuzz", in[VirtioNetHdrLen+2:], DecodeVirtioNetHdr(in)}
		maxL3 := int(binary.BigEndian.Uint16(in[VirtioNetHdrLen:]))
		orig := append([]byte(nil), c.frame...)
		var s Segmenter
		if err := s.Init(c.frame, &c.hdr, maxL3); err != nil {
			return
		}
		var segs [][]byte
		for !s.Done() {
			n, err := s.Next(buf)
			if err != nil {
				t.Fatal(err)
			}
			if len(segs) > s.Segments() {
				t.Fatalf("more segments than Segments() = %d", s.Segments())
			}
			segs = append(segs, append([]byte(nil), buf[:n]...))
		}
		if !bytes.Equal(orig, c.frame) {
			t.Fatal("the super-frame was modified")
		}
		checkSegments(t, &c, segs, maxL3)
	})
}

func gsoSeeds(t testing.TB) []seed {
	var out []seed
	for i, c := range gsoCases(t, 10) {
		maxL3 := uint16(0)
		if i%3 == 1 {
			maxL3 = 300 // cuts the TCP segments smaller, refuses the UDP ones
		}
		out = append(out, seed{seedName(c.name), []any{gsoFuzzInput(&c, maxL3)}})
	}
	return out
}

// TestWriteGSOCorpus regenerates testdata/fuzz/FuzzSegment when
// WIRE_WRITE_CORPUS=1; TestGSOCorpusCommitted checks it is current.
func TestWriteGSOCorpus(t *testing.T) {
	writeCorpus(t, map[string][]seed{"FuzzSegment": gsoSeeds(t)})
}

func TestGSOCorpusCommitted(t *testing.T) {
	checkCorpus(t, map[string][]seed{"FuzzSegment": gsoSeeds(t)})
}

// BenchmarkSegment cuts a 64 KB TCP super-frame (a VM's TSO frame) and a
// VXLAN-encapsulated one (a Linux peer's) into 1448-byte segments; the
// bytes are the super-frame's.
func BenchmarkSegment(b *testing.B) {
	tcp4 := FrameSpec{SrcMAC: macA, DstMAC: macB, Src: caA4, Dst: caB4, Proto: hal.ProtoTCP, SrcPort: 40000, DstPort: 5201}
	e := encaps()[0].e
	for _, c := range []gsoCase{
		superFrame(b, "tcp4", tcp4, 45*1448, 1448, nil, false),
		superFrame(b, "tcp4-in-vxlan-ip4-csum", tcp4, 45*1398, 1398, &e, true),
	} {
		b.Run(c.name, func(b *testing.B) {
			var s Segmenter
			buf := make([]byte, 2048)
			b.SetBytes(int64(len(c.frame)))
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Init(c.frame, &c.hdr, 1500); err != nil {
					b.Fatal(err)
				}
				for !s.Done() {
					if _, err := s.Next(buf); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"
	"unsafe"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/nicpath/nicpath/hal"
)

func TestNewEncapTemplateRefuses(t *testing.T) {
	ok := encapOf(hal.EncapVXLAN, false)
	cases := map[string]func(e *hal.Encap){
		"vni-25-bits":      func(e *hal.Encap) { e.VNI = 1 << 24 },
		"mixed-families":   func(e *hal.Encap) { e.Dst = paB6 },
		"no-src":           func(e *hal.Encap) { e.Src = netip.Addr{} },
		"v4-mapped":        func(e *hal.Encap) { e.Src, e.Dst = netip.AddrFrom16(paA4.As16()), netip.AddrFrom16(paB4.As16()) },
		"zone":             func(e *hal.Encap) { e.Src, e.Dst = paA6.WithZone("eth0"), paB6 },
		"options-on-vxlan": func(e *hal.Encap) { e.GeneveOptions = []byte{0, 0, 0, 0} },
		"flowid-on-vxlan":  func(e *hal.Encap) { e.FlowID = 1 },
		"unknown-kind":     func(e *hal.Encap) { e.Kind = 9 },
		"none-kind":        func(e *hal.Encap) { e.Kind = hal.EncapNone },
		"options-odd":      func(e *hal.Encap) { e.Kind, e.GeneveOptions = hal.EncapGeneve, []byte{0, 0, 0} },
		"options-256":      func(e *hal.Encap) { e.Kind, e.GeneveOptions = hal.EncapGeneve, make([]byte, 256) },
		"option-overrun":   func(e *hal.Encap) { e.Kind, e.GeneveOptions = hal.EncapGeneve, []byte{0, 0, 0, 1} },
	}
	for name, mut := range cases {
		e := ok
		mut(&e)
		if tpl, err := NewEncapTemplate(&e); err == nil {
			t.Errorf("%s: accepted (%d bytes)", name, tpl.Len())
		}
	}
	if _, err := NewEncapTemplate(&ok); err != nil {
		t.Fatal(err)
	}
}

func TestHeadroom(t *testing.T) {
	max := 0
	for _, e := range encaps() {
		tpl, err := NewEncapTemplate(&e.e)
		if err != nil {
			t.Fatal(err)
		}
		if tpl.Len() != Headroom(&e.e) {
			t.Errorf("%s: Len %d, Headroom %d", e.name, tpl.Len(), Headroom(&e.e))
		}
		// The headroom is exactly what the encapsulation added.
		inner := Build(udp4Spec())
		if f := BuildEncap(&e.e, inner); len(f)-len(inner) != tpl.Len() {
			t.Errorf("%s: added %d bytes, Len %d", e.name, len(f)-len(inner), tpl.Len())
		}
		max = maxInt(max, tpl.Len())
	}
	e := encapOf(hal.EncapGeneve, true)
	e.GeneveOptions = make([]byte, MaxGeneveOptionBytes)
	for i := 0; i < len(e.GeneveOptions); i += 4 {
		e.GeneveOptions[i+1] = 1 // class 1, type 0, no data: a valid option every 4 bytes
	}
	tpl, err := NewEncapTemplate(&e)
	if err != nil {
		t.Fatal(err)
	}
	if tpl.Len() != MaxEncapHeadroom || max > MaxEncapHeadroom {
		t.Fatalf("largest template %d, MaxEncapHeadroom %d", tpl.Len(), MaxEncapHeadroom)
	}
	if f := BuildEncap(&e, Build(udp4Spec())); true {
		var k hal.FlowKey
		var l Layout
		if err := Parse(f, 1, &k, &l); err != nil || l.L2 != MaxEncapHeadroom {
			t.Fatalf("Parse with 252 option bytes: %v, inner at %d", err, l.L2)
		}
	}
	want := map[hal.EncapKind][2]int{
		hal.EncapVXLAN:  {HeadroomVXLANIPv4, HeadroomVXLANIPv6},
		hal.EncapGeneve: {HeadroomGeneveIPv4, HeadroomGeneveIPv6},
		hal.EncapNVGRE:  {HeadroomNVGREIPv4, HeadroomNVGREIPv6},
	}
	for kind, w := range want {
		for i, v6 := range []bool{false, true} {
			e := encapOf(kind, v6)
			if Headroom(&e) != w[i] {
				t.Errorf("%s v6=%v: Headroom %d, constant %d", kind, v6, Headroom(&e), w[i])
			}
		}
	}
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

func TestPushErrorsLeaveBufferAlone(t *testing.T) {
	e := encapOf(hal.EncapVXLAN, true)
	tpl, err := NewEncapTemplate(&e)
	if err != nil {
		t.Fatal(err)
	}
	inner := Build(udp4Spec())
	buf := make([]byte, tpl.Len()-1+len(inner))
	copy(buf[tpl.Len()-1:], inner)
	orig := append([]byte(nil), buf...)
	if _, err := tpl.Push(buf, tpl.Len()-1, len(buf), 1); !errors.Is(err, ErrNoHeadroom) {
		t.Fatalf("short headroom: %v", err)
	}
	if _, err := tpl.Push(buf, 10, 5, 1); !errors.Is(err, ErrBounds) {
		t.Fatalf("start > end: %v", err)
	}
	if _, err := tpl.Push(buf, tpl.Len()-1, len(buf)+1, 1); !errors.Is(err, ErrBounds) {
		t.Fatalf("end beyond buf: %v", err)
	}
	if _, err := tpl.Push(buf, -1, 5, 1); !errors.Is(err, ErrBounds) {
		t.Fatalf("negative start: %v", err)
	}
	if !bytes.Equal(buf, orig) {
		t.Fatal("a failed Push wrote into the buffer")
	}
	big := make([]byte, tpl.Len()+65536)
	if _, err := tpl.Push(big, tpl.Len(), len(big), 1); !errors.Is(err, ErrTooBig) {
		t.Fatalf("65536-byte inner frame: %v", err)
	}
	e4 := encapOf(hal.EncapNVGRE, false)
	tpl4, _ := NewEncapTemplate(&e4)
	big4 := make([]byte, tpl4.Len()+65535-tpl4.Len()+EthHeaderLen+1)
	if _, err := tpl4.Push(big4, tpl4.Len(), len(big4), 1); !errors.Is(err, ErrTooBig) {
		t.Fatalf("IPv4 total length overflow: %v", err)
	}
}

// TestPushThenParse pushes with one template onto frames of every shape and
// many hashes: Parse must give the inner key plus the tunnel fields, and the
// entropy fields must follow the hash.
func TestPushThenParse(t *testing.T) {
	for _, e := range encaps() {
		tpl, err := NewEncapTemplate(&e.e)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, MaxEncapHeadroom+2048)
		for _, s := range plainSpecs() {
			inner := Build(s.spec)
			var ik, k hal.FlowKey
			var l Layout
			if err := Parse(inner, 3, &ik, &l); err != nil {
				t.Fatal(err)
			}
			for _, hash := range []uint32{0, 1, 0xffffffff, 0x12345678, FlowHash(&ik)} {
				end := MaxEncapHeadroom + len(inner)
				copy(buf[MaxEncapHeadroom:], inner)
				start, err := tpl.Push(buf, MaxEncapHeadroom, end, hash)
				if err != nil || start != MaxEncapHeadroom-tpl.Len() {
					t.Fatalf("Push = %d, %v", start, err)
				}
				f := buf[start:end]
				if err := Parse(f, 3, &k, &l); err != nil {
					t.Fatalf("%s/%s: %v", e.name, s.name, err)
				}
				want := ik
				want.TunKind, want.VNI = e.e.Kind, e.e.VNI
				want.TunSrc, want.TunDst = netip.AddrFrom16(e.e.Src.As16()).As16(), e.e.Dst.As16()
				if e.e.Src.Is4() {
					want.TunSrc, want.TunDst = netip.AddrFrom4(e.e.Src.As4()).As16(), netip.AddrFrom4(e.e.Dst.As4()).As16()
				}
				if k != want {
					t.Fatalf("%s/%s:\n got %v\nwant %v", e.name, s.name, k, want)
				}
				if !bytes.Equal(f[l.L2:], inner) {
					t.Fatalf("%s/%s: inner frame changed", e.name, s.name)
				}
				if e.e.Kind != hal.EncapNVGRE {
					if sp := binary.BigEndian.Uint16(f[l.OuterL4:]); sp != UDPSourcePort(hash) {
						t.Fatalf("source port %d, want %d", sp, UDPSourcePort(hash))
					}
				} else if fid := f[l.Tunnel+7]; e.e.FlowID == 0 && fid != uint8(hash) || e.e.FlowID != 0 && fid != e.e.FlowID {
					t.Fatalf("FlowID %#x for hash %#x", fid, hash)
				}
				if hash == FlowHash(&ik) && s.spec.Proto != hal.ProtoGRE {
					reserialize(t, f)
				}
			}
		}
	}
}

func TestEncapDetails(t *testing.T) {
	// A critical Geneve option sets the C bit, and Parse hands such a
	// frame to the host.
	e := encapOf(hal.EncapGeneve, false)
	e.GeneveOptions = []byte{0x01, 0x02, 0x83, 0x00}
	f := BuildEncap(&e, Build(udp4Spec()))
	tun := EthHeaderLen + IPv4HeaderLen + UDPHeaderLen
	if f[tun+1]&0x40 == 0 || f[tun] != 1 {
		t.Fatalf("Geneve header %x", f[tun:tun+8])
	}
	var k hal.FlowKey
	var l Layout
	if err := Parse(f, 1, &k, &l); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("critical option: %v", err)
	}

	// A non-default port is written, and a frame to it is not decapsulated.
	e = encapOf(hal.EncapVXLAN, false)
	e.DstPort = 8472
	e.TTL = 9
	f = BuildEncap(&e, Build(udp4Spec()))
	pkt := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
	if u, ok := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP); !ok || u.DstPort != 8472 {
		t.Fatalf("UDP layer %v", pkt.Layer(layers.LayerTypeUDP))
	}
	if ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ip.TTL != 9 {
		t.Fatalf("TTL %d", ip.TTL)
	}
	if err := Parse(f, 1, &k, &l); err != nil || k.TunKind != hal.EncapNone || k.L4Dst != 8472 {
		t.Fatalf("%v %v", err, k)
	}

	// The template owns its copy of the options.
	e = encapOf(hal.EncapGeneve, true)
	e.GeneveOptions = []byte{0, 1, 2, 0}
	tpl, err := NewEncapTemplate(&e)
	if err != nil {
		t.Fatal(err)
	}
	e.GeneveOptions[0] = 0xff
	if got := tpl.Encap(); got.GeneveOptions[0] != 0 || tpl.Kind() != hal.EncapGeneve {
		t.Fatalf("template changed with the caller's slice: %x", got.GeneveOptions)
	}
}

func TestFlowHash(t *testing.T) {
	base := hal.FlowKey{EthType: hal.EtherTypeIPv4, Proto: hal.ProtoTCP,
		IPSrc: netip.AddrFrom4(caA4.As4()).As16(), IPDst: netip.AddrFrom4(caB4.As4()).As16(), L4Dst: 443}
	seen := map[uint16]bool{}
	const flows = 10000
	for i := 0; i < flows; i++ {
		k := base
		k.L4Src = uint16(i)
		seen[UDPSourcePort(FlowHash(&k))] = true
	}
	// 10000 keys into 16384 ports: a uniform hash fills about 7490.
	if len(seen) < 7000 {
		t.Fatalf("%d flows gave only %d source ports", flows, len(seen))
	}
	for p := range seen {
		if p < 49152 {
			t.Fatalf("source port %d below 49152", p)
		}
	}
	k := base
	h := FlowHash(&k)
	k.InPort, k.TunKind, k.VNI, k.TunSrc = 9, hal.EncapVXLAN, 7, paA4.As16()
	if FlowHash(&k) != h {
		t.Fatal("the hash depends on the in-port or the tunnel")
	}
	k.IPDst[15]++
	if FlowHash(&k) == h {
		t.Fatal("the hash ignores the destination address")
	}
	arp1 := hal.FlowKey{EthType: hal.EtherTypeARP, EthSrc: macA, EthDst: macB}
	arp2 := arp1
	arp2.EthSrc = macC
	if FlowHash(&arp1) == FlowHash(&arp2) {
		t.Fatal("non-IP frames hash the same whatever the MAC")
	}
}

// TestHotLinesInsideTemplate: the spans HotLines names lie inside the
// template and cover the fields Push reads, first (ipSum) to last
// (flowID), which come right before the headers (EncapHotFields), so
// that a VXLAN-over-IPv4 template's hot part fits one cache line.
func TestHotLinesInsideTemplate(t *testing.T) {
	var tp EncapTemplate
	base, end := uintptr(unsafe.Pointer(&tp)), uintptr(unsafe.Pointer(&tp))+unsafe.Sizeof(tp)
	h, hn, f, fn := tp.HotLines()
	if h != base+unsafe.Offsetof(tp.hdr) || h+hn > end || hn < HeadroomVXLANIPv4 {
		t.Errorf("header span %#x+%d outside the template %#x-%#x", h, hn, base, end)
	}
	if f != uintptr(unsafe.Pointer(&tp.ipSum)) || f+fn > end || f+fn < uintptr(unsafe.Pointer(&tp.flowID))+1 {
		t.Errorf("fields span %#x+%d does not cover ipSum..flowID", f, fn)
	}
	if f != base || f+fn > h || EncapHotFields+HeadroomVXLANIPv4 > 64 {
		t.Errorf("fields %#x+%d, headers at %#x (template at %#x): the fields and a VXLAN-over-IPv4 header take %d bytes, want them first and in 64",
			f, fn, h, base, EncapHotFields+HeadroomVXLANIPv4)
	}
}

// TestPushUDP4 holds PushUDP4 to Push for every kind of template (those of
// VXLAN and Geneve without options over IPv4 its own way, the others
// Push's), on frames of many lengths, at many offsets, and on the
// arguments Push refuses: the same result, the same error, the same bytes
// in the whole buffer.
func TestPushUDP4(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	own := 0
	for _, e := range encaps() {
		tpl, err := NewEncapTemplate(&e.e)
		if err != nil {
			t.Fatal(err)
		}
		if tpl.Len() == HeadroomVXLANIPv4 {
			own++
		}
		for n := 0; n < 3000; n++ {
			size := r.IntN(200)
			limit := n%50 == 0
			if limit {
				// The whole buffer after the headroom, for outer IPv4 total
				// lengths of 0xffff-1 to 0xffff+2.
				size = 0xffff + EthHeaderLen - 1 + r.IntN(4)
			}
			buf := make([]byte, size)
			for i := range buf {
				buf[i] = byte(r.Uint32())
			}
			start, end := r.IntN(size+1), r.IntN(size+1)
			switch k := r.IntN(8); {
			case limit:
				start, end = tpl.Len(), size
			case k == 0:
				start = -r.IntN(3)
			case k == 1:
				end = size + r.IntN(3)
			case k < 7:
				start = min(tpl.Len()+r.IntN(20), size)
				end = start + r.IntN(size-start+1)
			}
			hash := r.Uint32()
			a, b := append([]byte(nil), buf...), append([]byte(nil), buf...)
			sa, ea := tpl.Push(a, start, end, hash)
			sb, eb := tpl.PushUDP4(b, start, end, hash)
			if sa != sb || ea != eb || !bytes.Equal(a, b) {
				t.Fatalf("%s: buffer %d, frame %d-%d: Push %d, %v; PushUDP4 %d, %v (same bytes %v)",
					e.name, size, start, end, sa, ea, sb, eb, bytes.Equal(a, b))
			}
		}
	}
	if own != 2 {
		t.Fatalf("%d templates of PushUDP4's own length, want 2 (VXLAN and Geneve over IPv4)", own)
	}
}

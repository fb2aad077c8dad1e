package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/ip4defrag"
	"github.com/gopacket/gopacket/layers"

	"github.com/nicpath/nicpath/hal"
)

// fragmentAll runs FragmentIPv4 and returns the fragments' frames.
func fragmentAll(frame []byte, l *Layout, mtu int) ([][]byte, error) {
	var out [][]byte
	n, err := FragmentIPv4(frame, l, mtu, func(n int) []byte {
		b := make([]byte, n)
		out = append(out, b)
		return b
	})
	if err == nil && n != len(out) {
		panic("count differs from the buffers asked for")
	}
	return out, err
}

// TestFragmentGopacket: a 3000-byte datagram with a copied and an uncopied
// option, split at MTU 1450, gives fragments gopacket decodes with valid
// header checksums, whose reassembly by gopacket's ip4defrag (RFC 791 as
// a receiver does it) is the original datagram with a valid UDP checksum.
func TestFragmentGopacket(t *testing.T) {
	spec := bigSpec(caA4, caB4, 3000-8)
	spec.IPID, spec.VLAN = 0x4242, 7
	// Router alert (copied, 4 bytes) and a record-route-sized uncopied
	// option (type 7, length 4, pointer 4 and one free byte).
	spec.IPOptions = []byte{0x94, 0x04, 0x00, 0x00, 0x07, 0x04, 0x04, 0x00}
	f := Build(spec)
	l := parsed(t, f)
	if l.End-l.L3 != 3000 {
		t.Fatalf("datagram of %d bytes", l.End-l.L3)
	}
	frags, err := fragmentAll(f, &l, 1450)
	if err != nil {
		t.Fatal(err)
	}
	if len(frags) != 3 {
		t.Fatalf("%d fragments, want 3 (runs of (1450-28)&^7 = 1416 bytes of 2972)", len(frags))
	}
	d := ip4defrag.NewIPv4Defragmenter()
	var whole *layers.IPv4
	for i, fr := range frags {
		pkt := gopacket.NewPacket(fr, layers.LayerTypeEthernet, gopacket.Default)
		ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if ip == nil {
			t.Fatalf("fragment %d: gopacket decodes %v", i, pkt)
		}
		if _, r := ip.VerifyChecksum(); !r.Valid {
			t.Errorf("fragment %d: header checksum %#x, want %#x", i, r.Actual, r.Correct)
		}
		if int(ip.Length) > 1450 || ip.Id != 0x4242 || ip.IHL != 7 {
			t.Errorf("fragment %d: length %d id %#x ihl %d", i, ip.Length, ip.Id, ip.IHL)
		}
		opts := fr[l.L3+20 : l.L3+28]
		want := spec.IPOptions
		if i > 0 {
			want = []byte{0x94, 0x04, 0x00, 0x00, 1, 1, 1, 1}
		}
		if !bytes.Equal(opts, want) {
			t.Errorf("fragment %d options % x, want % x", i, opts, want)
		}
		if !bytes.Equal(fr[:l.L3], f[:l.L3]) {
			t.Errorf("fragment %d: Ethernet header and tag changed", i)
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
		t.Fatal("ip4defrag did not reassemble the fragments")
	}
	if !bytes.Equal(whole.Payload, f[l.L3+28:l.End]) {
		t.Fatal("reassembled data differs from the original")
	}
	// The reassembled UDP datagram's checksum still holds: the fragmenter
	// never touches it.
	u := gopacket.NewPacket(whole.Payload, layers.LayerTypeUDP, gopacket.Default).Layer(layers.LayerTypeUDP).(*layers.UDP)
	if err := u.SetNetworkLayerForChecksum(whole); err != nil {
		t.Fatal(err)
	}
	if _, r := u.VerifyChecksum(); !r.Valid {
		t.Errorf("UDP checksum of the reassembled datagram %#x, want %#x", r.Actual, r.Correct)
	}
}

// TestFragmentAFragment: a first fragment is split into fragments that all
// keep MF; a middle fragment's pieces start at its own offset.
func TestFragmentAFragment(t *testing.T) {
	spec := bigSpec(caA4, caB4, 1000)
	spec.MoreFragments = true
	f := Build(spec)
	l := parsed(t, f)
	frags, err := fragmentAll(f, &l, 500)
	if err != nil {
		t.Fatal(err)
	}
	for i, fr := range frags {
		if fo := binary.BigEndian.Uint16(fr[l.L3+6:]); fo&0x2000 == 0 || int(fo&0x1fff) != i*60 {
			t.Errorf("fragment %d: flags/offset %#04x", i, fo)
		}
	}
	later := FrameSpec{SrcMAC: macA, DstMAC: macB, Src: caA4, Dst: caB4, Proto: hal.ProtoUDP, FragOffset: 100, Payload: make([]byte, 600)}
	f = Build(later)
	var k hal.FlowKey
	if err := Parse(f, 0, &k, &l); !errors.Is(err, ErrFragment) {
		t.Fatalf("later fragment parses: %v", err)
	}
	frags, err = fragmentAll(f, &l, 300)
	if err != nil {
		t.Fatal(err)
	}
	last := len(frags) - 1
	for i, fr := range frags {
		fo := binary.BigEndian.Uint16(fr[l.L3+6:])
		if int(fo&0x1fff) != 100+i*35 || (fo&0x2000 != 0) != (i < last) {
			t.Errorf("fragment %d of a later fragment: flags/offset %#04x", i, fo)
		}
	}
}

func TestFragmentRefusals(t *testing.T) {
	spec := bigSpec(caA4, caB4, 1500)
	spec.DontFragment = true
	f := Build(spec)
	l := parsed(t, f)
	if _, err := fragmentAll(f, &l, 1450); !errors.Is(err, ErrDontFragment) {
		t.Errorf("DF: %v", err)
	}
	if frags, err := fragmentAll(f, &l, 1500); err != nil || len(frags) != 1 || !bytes.Equal(frags[0], f[:l.End]) {
		t.Errorf("a DF packet that fits: %v, %d fragments", err, len(frags))
	}
	spec.DontFragment = false
	f = Build(spec)
	l = parsed(t, f)
	if _, err := fragmentAll(f, &l, 27); !errors.Is(err, ErrFragmentMTU) {
		t.Errorf("MTU 27: %v", err)
	}
	if frags, err := fragmentAll(f, &l, 28); err != nil || len(frags) != (1500-20+7)/8 {
		t.Errorf("MTU 28: %v, %d fragments", err, len(frags))
	}
	f6 := Build(bigSpec(caA6, caB6, 1500))
	l6 := parsed(t, f6)
	if _, err := fragmentAll(f6, &l6, 1280); !errors.Is(err, ErrNoHeader) {
		t.Errorf("IPv6: %v", err)
	}
}

// TestFragmentOptionWalk: uncopied options become no-operations, copied
// ones stay, and an option overrunning the area ends the walk.
func TestFragmentOptionWalk(t *testing.T) {
	for _, c := range []struct{ in, want []byte }{
		{[]byte{0x07, 0x03, 0x04, 0x94, 0x04, 0x00, 0x00, 0x00}, []byte{1, 1, 1, 0x94, 0x04, 0x00, 0x00, 0x00}},
		{[]byte{0x01, 0x00, 0x07, 0x03}, []byte{0x01, 0x00, 0x07, 0x03}},          // end of options: padding kept
		{[]byte{0x83, 0x09, 0x00, 0x00}, []byte{1, 1, 1, 1}},                      // overruns: not known to be copied
		{[]byte{0x83, 0x01, 0x00, 0x00}, []byte{1, 1, 1, 1}},                      // length below 2
		{[]byte{0x89, 0x04, 0xaa, 0xbb, 0x44}, []byte{0x89, 0x04, 0xaa, 0xbb, 1}}, // lone type byte at the end
	} {
		o := append([]byte(nil), c.in...)
		nopUncopiedOptions(o)
		if !bytes.Equal(o, c.want) {
			t.Errorf("% x: got % x, want % x", c.in, o, c.want)
		}
	}
}

// BenchmarkFragmentIPv4 splits a 1500-byte datagram for a 1450-byte path
// (VXLAN's overhead on a 1500-byte uplink) into buffers the caller reuses.
func BenchmarkFragmentIPv4(b *testing.B) {
	f := Build(bigSpec(caA4, caB4, 1500))
	l := parsed(b, f)
	buf := make([]byte, 4096)
	used := 0
	alloc := func(n int) []byte {
		s := buf[used : used+n]
		used += n
		return s
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(f)))
	for b.Loop() {
		used = 0
		if n, err := FragmentIPv4(f, &l, 1450, alloc); err != nil || n != 2 {
			b.Fatal(n, err)
		}
	}
}

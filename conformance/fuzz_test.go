package conformance

import (
	"testing"

	"github.com/nicpath/nicpath/hal"
)

// FuzzDecode feeds the suite's frame decoder and checksum checker whatever
// a NIC might emit: they must never panic, and a frame the suite built
// itself must decode with correct checksums.
func FuzzDecode(f *testing.F) {
	for _, fr := range [][]byte{
		build(udpSpec()), build(tcpSpec()), build(udp6Spec()),
		encapsulate(defaultTunnel(hal.EncapVXLAN, 7), build(udpSpec())),
		encapsulate(defaultTunnel(hal.EncapNVGRE, 7), build(udp6Spec())),
	} {
		f.Add(fr)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		_ = ours(frame)
		d, err := decode(frame)
		if err != nil {
			return
		}
		if d.eth == nil || len(d.l3) > len(frame) {
			t.Fatalf("decoded without Ethernet or with an L3 part longer than the frame")
		}
		_ = checkChecksums(d)
		_, _ = generationOf(frame)
	})
}

// TestBuiltFramesDecodeClean checks the builders and the checker agree on
// every frame shape the suite sends.
func TestBuiltFramesDecodeClean(t *testing.T) {
	frames := [][]byte{build(udpSpec()), build(tcpSpec()), build(udp6Spec())}
	for _, k := range allEncaps {
		frames = append(frames, encapsulate(defaultTunnel(k, 9), build(udpSpec())))
		tn := defaultTunnel(k, 9)
		tn.Src, tn.Dst = pa6Remote, pa6Local
		frames = append(frames, encapsulate(tn, build(udp6Spec())))
	}
	for i, fr := range frames {
		d, err := decode(fr)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if bad := checkChecksums(d); len(bad) > 0 {
			t.Errorf("frame %d: %v", i, bad)
		}
	}
	// And the checker sees a broken checksum.
	fr := build(tcpSpec())
	fr[len(fr)-1] ^= 0xff
	d, err := decode(fr)
	if err != nil {
		t.Fatal(err)
	}
	if bad := checkChecksums(d); len(bad) != 1 {
		t.Errorf("a flipped payload byte: %v, want one TCP checksum complaint", bad)
	}
}

// The generation check tells a mixed frame from a whole one, so that the
// atomicity cases can fail.
func TestGenerationOf(t *testing.T) {
	mk := func(src, dst hal.MAC) []byte {
		s := udpSpec()
		s.Src, s.Dst = src, dst
		return build(s)
	}
	enc := func(vni uint32, dst hal.MAC) []byte {
		return encapsulate(defaultTunnel(hal.EncapVXLAN, vni), mk(macA, dst))
	}
	for i, c := range []struct {
		frame []byte
		want  byte
	}{
		{mk(macX, macX), 'A'}, {mk(macY, macY), 'B'}, {mk(macX, macY), 0}, {mk(macY, macX), 0},
		{enc(100, macX), 'A'}, {enc(200, macY), 'B'}, {enc(100, macY), 0}, {enc(200, macX), 0},
	} {
		if got, why := generationOf(c.frame); got != c.want {
			t.Errorf("case %d: %q (%s), want %q", i, got, why, c.want)
		}
	}
}

func TestKernelChatterIsNotOurs(t *testing.T) {
	// An MLDv2 report from an interface with a test MAC: IPv6, hop-by-hop
	// with a router alert, ICMPv6 type 143.
	f := make([]byte, 14+40+8+28)
	copy(f, []byte{0x33, 0x33, 0, 0, 0, 0x16, 0x02, 0x4e, 0x50, 0, 0, 0xa1, 0x86, 0xdd})
	ip := f[14:]
	ip[0], ip[6], ip[7] = 0x60, 0, 1
	ip[40], ip[41] = hal.ProtoICMPv6, 0
	ip[48] = 143
	if ours(f) {
		t.Errorf("an MLD report counted as the suite's traffic")
	}
	// Neighbour solicitation without extension headers.
	ip[6], ip[40] = hal.ProtoICMPv6, 135
	if ours(f) {
		t.Errorf("a neighbour solicitation counted as the suite's traffic")
	}
	// The suite's own frames stay ours, ICMPv6 echo included.
	s := udp6Spec()
	s.Proto = hal.ProtoICMP
	for _, fr := range [][]byte{build(udp6Spec()), build(s), build(udpSpec())} {
		if !ours(fr) {
			t.Errorf("the suite's frame is not ours: % x", fr)
		}
	}
}

package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

var (
	natAddr4 = netip.MustParseAddr("203.0.113.7")
	natAddr6 = netip.MustParseAddr("2001:db8:99::7")
)

// TestRewrites applies every rewrite to every IP combination and has gopacket
// recompute all checksums: equal bytes mean the incremental updates are right.
func TestRewrites(t *testing.T) {
	for _, s := range plainSpecs() {
		if !s.spec.Src.IsValid() {
			continue
		}
		t.Run(s.name, func(t *testing.T) {
			f := Build(s.spec)
			var k hal.FlowKey
			var l Layout
			if err := Parse(f, 1, &k, &l); err != nil {
				t.Fatal(err)
			}
			nat := natAddr6.As16()
			if s.spec.Src.Is4() {
				nat = netip.AddrFrom4(natAddr4.As4()).As16()
			}
			SetEthSrc(f, &l, macC)
			SetEthDst(f, &l, macD)
			if err := SetIPSrc(f, &l, nat); err != nil {
				t.Fatal(err)
			}
			nat[15]++
			if err := SetIPDst(f, &l, nat); err != nil {
				t.Fatal(err)
			}
			ports := s.spec.Proto == hal.ProtoTCP || s.spec.Proto == hal.ProtoUDP
			err1, err2 := SetL4Src(f, &l, 61000), SetL4Dst(f, &l, 62000)
			if ports != (err1 == nil) || ports != (err2 == nil) {
				t.Fatalf("port rewrite on proto %d: %v, %v", s.spec.Proto, err1, err2)
			}
			if !ports && !errors.Is(err1, ErrNoHeader) {
				t.Fatalf("port rewrite error %v, want ErrNoHeader", err1)
			}
			if exp, err := DecTTL(f, &l); exp != (s.spec.TTL == 1) || err != nil {
				t.Fatalf("DecTTL = %v, %v", exp, err)
			}
			reserialize(t, f)

			var k2 hal.FlowKey
			if err := Parse(f, 1, &k2, &l); err != nil {
				t.Fatalf("re-parse: %v", err)
			}
			want := k
			want.EthSrc, want.EthDst = macC, macD
			nat[15]--
			want.IPSrc = nat
			nat[15]++
			want.IPDst = nat
			if ports {
				want.L4Src, want.L4Dst = 61000, 62000
			}
			if k2 != want {
				t.Fatalf("after rewrite\n got %v\nwant %v", k2, want)
			}
			ttlOff := l.L3 + 8
			if l.EthType == hal.EtherTypeIPv6 {
				ttlOff = l.L3 + 7
			}
			if wantTTL := ttlOf(&s.spec) - 1; s.spec.TTL != 1 && f[ttlOff] != wantTTL {
				t.Fatalf("TTL %d, want %d", f[ttlOff], wantTTL)
			}
		})
	}
}

func TestRewriteEdges(t *testing.T) {
	var k hal.FlowKey
	var l Layout

	// A UDP checksum of 0 over IPv4 means none and must stay 0.
	f := Build(udp4Spec())
	f[40], f[41] = 0, 0
	if err := Parse(f, 1, &k, &l); err != nil || l.Flags&FlagUDPZeroCsum == 0 {
		t.Fatalf("%v flags %#x", err, l.Flags)
	}
	if err := SetIPSrc(f, &l, netip.AddrFrom4(natAddr4.As4()).As16()); err != nil {
		t.Fatal(err)
	}
	if err := SetL4Dst(f, &l, 9); err != nil {
		t.Fatal(err)
	}
	if f[40] != 0 || f[41] != 0 {
		t.Fatalf("UDP checksum became %#x", binary.BigEndian.Uint16(f[40:]))
	}
	if err := Parse(f, 1, &k, &l); err != nil || k.L4Dst != 9 || k.Src() != natAddr4 {
		t.Fatalf("%v %v", err, k)
	}

	// Family mismatches and missing headers are refused without a change.
	orig := append([]byte(nil), f...)
	if err := SetIPDst(f, &l, natAddr6.As16()); !errors.Is(err, ErrFamily) {
		t.Fatalf("v6 address on v4: %v", err)
	}
	f6 := Build(tcp6Spec())
	var l6 Layout
	if err := Parse(f6, 1, &k, &l6); err != nil {
		t.Fatal(err)
	}
	if err := SetIPDst(f6, &l6, netip.AddrFrom4(natAddr4.As4()).As16()); !errors.Is(err, ErrFamily) {
		t.Fatalf("v4 address on v6: %v", err)
	}
	arp := Build(FrameSpec{SrcMAC: macA, DstMAC: macB, EthType: hal.EtherTypeARP, Payload: arpRequest()})
	var la Layout
	if err := Parse(arp, 1, &k, &la); err != nil {
		t.Fatal(err)
	}
	if err := SetIPSrc(arp, &la, natAddr6.As16()); !errors.Is(err, ErrNoHeader) {
		t.Fatalf("IP rewrite on ARP: %v", err)
	}
	if _, err := DecTTL(arp, &la); !errors.Is(err, ErrNoHeader) {
		t.Fatalf("DecTTL on ARP: %v", err)
	}
	if !bytes.Equal(f, orig) {
		t.Fatal("a refused rewrite changed the frame")
	}

	// TTL 1 and 0 expire without a change; the host answers them.
	for _, ttl := range []uint8{1, 2} {
		s := tcp6Spec()
		s.TTL = ttl
		f := Build(s)
		if err := Parse(f, 1, &k, &l); err != nil {
			t.Fatal(err)
		}
		exp, err := DecTTL(f, &l)
		if err != nil || exp != (ttl == 1) || f[l.L3+7] != 1 {
			t.Fatalf("ttl %d: expired %v err %v hop limit now %d", ttl, exp, err, f[l.L3+7])
		}
	}
}

func TestPushPopVLAN(t *testing.T) {
	for _, s := range plainSpecs() {
		if s.spec.VLAN != 0 || s.spec.OuterVLAN != 0 {
			continue
		}
		t.Run(s.name, func(t *testing.T) {
			f := Build(s.spec)
			buf := make([]byte, 8+len(f))
			copy(buf[8:], f)
			var k, k0 hal.FlowKey
			var l Layout
			if err := Parse(f, 1, &k0, &l); err != nil && !strings.Contains(s.name, "later") {
				t.Fatal(err)
			}
			start, err := PushVLAN(buf, 8, len(buf), 300)
			if err != nil || start != 4 {
				t.Fatalf("PushVLAN = %d, %v", start, err)
			}
			if err := Parse(buf[start:], 1, &k, &l); err != nil {
				t.Fatal(err)
			}
			want := k0
			want.VLAN = hal.VLANPresent | 300
			if k != want || l.VLANs != 1 {
				t.Fatalf("after push: %v, want %v", k, want)
			}
			got := buf[start:]
			if !bytes.Equal(got[:12], f[:12]) || !bytes.Equal(got[12:16], []byte{0x81, 0x00, 0x01, 0x2c}) || !bytes.Equal(got[16:], f[12:]) {
				t.Fatalf("tagged frame %x", got)
			}
			start2, err := PushVLAN(buf, start, len(buf), 400)
			if err != nil || start2 != 0 {
				t.Fatalf("second PushVLAN = %d, %v", start2, err)
			}
			if _, err := PushVLAN(buf, start2, len(buf), 500); !errors.Is(err, ErrNoHeadroom) {
				t.Fatalf("PushVLAN without headroom: %v", err)
			}
			if err := Parse(buf[start2:], 1, &k, &l); err != nil || k.VLAN != hal.VLANPresent|400 || l.VLANs != 2 {
				t.Fatalf("after two pushes: %v %v %d", err, k, l.VLANs)
			}
			s3, err := PopVLAN(buf, start2, len(buf))
			if err != nil {
				t.Fatal(err)
			}
			s4, err := PopVLAN(buf, s3, len(buf))
			if err != nil || s4 != 8 || !bytes.Equal(buf[s4:], f) {
				t.Fatalf("after two pops: %d %v\n%x\n%x", s4, err, buf[s4:], f)
			}
			if _, err := PopVLAN(buf, s4, len(buf)); !errors.Is(err, ErrNoVLAN) {
				t.Fatalf("PopVLAN untagged: %v", err)
			}
		})
	}
	if _, err := PopVLAN(make([]byte, 10), 0, 10); !errors.Is(err, ErrBounds) {
		t.Fatalf("PopVLAN on 10 bytes: %v", err)
	}
	if _, err := PushVLAN(make([]byte, 20), 4, 30, 1); !errors.Is(err, ErrBounds) {
		t.Fatalf("PushVLAN beyond the buffer: %v", err)
	}
}

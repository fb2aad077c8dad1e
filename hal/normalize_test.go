package hal_test

import (
	"math/rand/v2"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

// normalizeBytes is Normalize written field by field and byte by byte: the
// definition the word-at-a-time Normalize must agree with.
func normalizeBytes(m *hal.Match) {
	k, mk := &m.Key, &m.Mask
	for i := 0; i < 16; i++ {
		k.TunSrc[i] &= mk.TunSrc[i]
		k.TunDst[i] &= mk.TunDst[i]
		k.IPSrc[i] &= mk.IPSrc[i]
		k.IPDst[i] &= mk.IPDst[i]
	}
	for i := 0; i < 6; i++ {
		k.EthSrc[i] &= mk.EthSrc[i]
		k.EthDst[i] &= mk.EthDst[i]
	}
	k.InPort &= mk.InPort
	k.VNI &= mk.VNI
	k.EthType &= mk.EthType
	k.VLAN &= mk.VLAN
	k.L4Src &= mk.L4Src
	k.L4Dst &= mk.L4Dst
	k.Proto &= mk.Proto
	k.TunKind &= mk.TunKind
}

func randKey(r *rand.Rand) hal.FlowKey {
	var k hal.FlowKey
	for _, a := range []*[16]byte{&k.TunSrc, &k.TunDst, &k.IPSrc, &k.IPDst} {
		for i := range a {
			a[i] = byte(r.Uint32())
		}
	}
	for i := range k.EthSrc {
		k.EthSrc[i], k.EthDst[i] = byte(r.Uint32()), byte(r.Uint32())
	}
	k.InPort, k.VNI = hal.PortID(r.Uint32()), r.Uint32()
	k.EthType, k.VLAN, k.L4Src, k.L4Dst = uint16(r.Uint32()), uint16(r.Uint32()), uint16(r.Uint32()), uint16(r.Uint32())
	k.Proto, k.TunKind = uint8(r.Uint32()), hal.EncapKind(r.Uint32())
	return k
}

func TestNormalizeAgreesWithBytewise(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		m := hal.Match{Key: randKey(r), Mask: randKey(r)}
		if i%3 == 0 { // masks as rules have them: whole fields or nothing
			m.Mask = hal.Exact(&m.Key).Mask
		}
		want := m
		normalizeBytes(&want)
		got := m
		got.Normalize()
		if got != want {
			t.Fatalf("Normalize of\n key %+v\nmask %+v\n= %+v\nwant %+v", m.Key, m.Mask, got.Key, want.Key)
		}
		// Normalize is idempotent and leaves the mask alone.
		again := got
		again.Normalize()
		if again != got || got.Mask != m.Mask {
			t.Fatalf("Normalize is not idempotent or changed the mask")
		}
	}
}

func TestNormalizeAllocatesNothing(t *testing.T) {
	k := key4("198.51.100.1", "198.51.100.2", hal.ProtoUDP, 1, 2)
	m := hal.Exact(&k)
	if n := testing.AllocsPerRun(100, m.Normalize); n != 0 {
		t.Errorf("Normalize allocates %v times", n)
	}
}

// BenchmarkNormalize compares Normalize with the byte-by-byte definition,
// on the exact-match flows a vswitch offloads (an IPv4 5-tuple, tunnelled).
func BenchmarkNormalize(b *testing.B) {
	k := key4("198.51.100.1", "198.51.100.2", hal.ProtoUDP, 4000, 53)
	k.TunKind, k.VNI = hal.EncapVXLAN, 1001
	k.TunSrc, k.TunDst = k.IPSrc, k.IPDst
	mk := hal.Exact(&k).Mask
	ms := make([]hal.Match, 256)
	for i := range ms {
		ms[i].Key, ms[i].Mask = k, mk
		ms[i].Key.L4Src = uint16(i)
	}
	b.Run("hal", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			ms[i&255].Normalize()
		}
	})
	b.Run("bytewise", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			normalizeBytes(&ms[i&255])
		}
	})
}

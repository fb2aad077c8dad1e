package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

// Fuzz targets for every parser, each asserting invariants rather than
// outputs. Their seed corpora in testdata/fuzz are generated from Build for
// every protocol combination plus truncated and garbage frames:
//
//	WIRE_WRITE_CORPUS=1 go test -run TestWriteFuzzCorpus ./hal/wire

var fuzzTemplates = func() []*EncapTemplate {
	var ts []*EncapTemplate
	for _, e := range encaps() {
		t, err := NewEncapTemplate(&e.e)
		if err != nil {
			panic(err)
		}
		ts = append(ts, t)
	}
	return ts
}()

// l4ChecksumOK reports whether the frame's transport checksum is checked
// here (a whole segment with a checksum) and whether it is valid.
func l4ChecksumOK(f []byte, l *Layout) (checked, ok bool) {
	if l.L3 < 0 || l.L4 < 0 || l.Flags&FlagFragment != 0 {
		return false, false
	}
	v4 := l.EthType == hal.EtherTypeIPv4
	var src, dst []byte
	if v4 {
		src, dst = f[l.L3+12:l.L3+16], f[l.L3+16:l.L3+20]
	} else {
		src, dst = f[l.L3+8:l.L3+24], f[l.L3+24:l.L3+40]
	}
	seg := f[l.L4:l.End]
	switch {
	case l.Proto == hal.ProtoTCP:
		return true, Checksum(seg, PseudoHeaderSum(src, dst, hal.ProtoTCP, len(seg))) == 0
	case l.Proto == hal.ProtoUDP:
		seg = seg[:binary.BigEndian.Uint16(seg[4:6])]
		if v4 && seg[6] == 0 && seg[7] == 0 {
			return false, false
		}
		return true, Checksum(seg, PseudoHeaderSum(src, dst, hal.ProtoUDP, len(seg))) == 0
	case l.Proto == hal.ProtoICMPv6 && !v4:
		return true, Checksum(seg, PseudoHeaderSum(src, dst, hal.ProtoICMPv6, len(seg))) == 0
	}
	return false, false
}

func withTunnel(k hal.FlowKey, tpl *EncapTemplate) hal.FlowKey {
	e := tpl.Encap()
	k.TunKind, k.VNI = e.Kind, e.VNI
	if e.Src.Is4() {
		e.Src, e.Dst = e.Src.Unmap(), e.Dst.Unmap()
		k.TunSrc = [16]byte{10: 0xff, 11: 0xff}
		k.TunDst = k.TunSrc
		s, d := e.Src.As4(), e.Dst.As4()
		copy(k.TunSrc[12:], s[:])
		copy(k.TunDst[12:], d[:])
	} else {
		k.TunSrc, k.TunDst = e.Src.As16(), e.Dst.As16()
	}
	return k
}

func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		var k, k2 hal.FlowKey
		var l, l2 Layout
		err := Parse(data, 5, &k, &l)
		checkLayout(t, data, &l, err)
		err2 := Parse(data, 5, &k2, &l2)
		if (err == nil) != (err2 == nil) || k != k2 || l != l2 {
			t.Fatalf("Parse is not deterministic: %v / %v", err, err2)
		}
		// The fast path agrees with the general walk.
		gk := hal.FlowKey{InPort: 5}
		var gl Layout
		gerr := parseGeneral(data, &gk, &gl)
		if (err == nil) != (gerr == nil) || gk != k || (err == nil && gl != l) {
			t.Fatalf("fast path and general walk differ: %v / %v\n%v\n%v\n%+v\n%+v", err, gerr, k, gk, l, gl)
		}
		if err != nil {
			return
		}

		// The key rebuilt into a frame parses to the same key.
		if rb, berr := BuildKey(&k); berr == nil {
			if err := Parse(rb, 5, &k2, &l2); err != nil || k2 != k {
				t.Fatalf("rebuilt frame: %v\n got %v\nwant %v", err, k2, k)
			}
		} else if k.TunKind == hal.EncapNone {
			t.Fatalf("BuildKey of an untunnelled key: %v", berr)
		}

		// Push then Parse gives the same inner key plus the tunnel fields.
		if !l.Tunnelled() {
			tpl := fuzzTemplates[len(data)%len(fuzzTemplates)]
			buf := make([]byte, MaxEncapHeadroom+l.End)
			copy(buf[MaxEncapHeadroom:], data[:l.End])
			start, err := tpl.Push(buf, MaxEncapHeadroom, len(buf), FlowHash(&k))
			if err != nil {
				if !errors.Is(err, ErrTooBig) {
					t.Fatalf("Push: %v", err)
				}
			} else if err := Parse(buf[start:], 5, &k2, &l2); err != nil || k2 != withTunnel(k, tpl) {
				t.Fatalf("pushed frame: %v\n got %v\nwant %v", err, k2, withTunnel(k, tpl))
			} else if !bytes.Equal(buf[start+l2.L2:], data[:l.End]) {
				t.Fatalf("inner frame changed by Push")
			}
		}

		// Rewrites keep every checksum that was right, right.
		if l.L3 < 0 {
			return
		}
		c := append([]byte(nil), data...)
		checked, okBefore := l4ChecksumOK(c, &l)
		a := k.IPDst
		a[15] ^= 0x5a
		b := k.IPSrc
		b[14] ^= 0xa5
		if err := SetIPDst(c, &l, a); err != nil {
			t.Fatalf("SetIPDst: %v", err)
		}
		if err := SetIPSrc(c, &l, b); err != nil {
			t.Fatalf("SetIPSrc: %v", err)
		}
		ports := l.L4 >= 0 && (l.Proto == hal.ProtoTCP || l.Proto == hal.ProtoUDP)
		if err := SetL4Src(c, &l, k.L4Src^0x1234); (err == nil) != ports {
			t.Fatalf("SetL4Src on proto %d: %v", l.Proto, err)
		}
		if err := SetL4Dst(c, &l, k.L4Dst^0x4321); (err == nil) != ports {
			t.Fatalf("SetL4Dst on proto %d: %v", l.Proto, err)
		}
		expired, err := DecTTL(c, &l)
		if err != nil {
			t.Fatalf("DecTTL: %v", err)
		}
		if err := Parse(c, 5, &k2, &l2); err != nil {
			t.Fatalf("rewritten frame does not parse: %v", err)
		}
		want := k
		want.IPDst, want.IPSrc = a, b
		if ports {
			want.L4Src, want.L4Dst = k.L4Src^0x1234, k.L4Dst^0x4321
		}
		if k2 != want {
			t.Fatalf("rewritten key\n got %v\nwant %v", k2, want)
		}
		if checked && okBefore {
			if _, ok := l4ChecksumOK(c, &l2); !ok {
				t.Fatalf("transport checksum broken by the rewrites")
			}
		}
		ttl := int(data[l.L3+8])
		if l.EthType == hal.EtherTypeIPv6 {
			ttl = int(data[l.L3+7])
		}
		if expired != (ttl <= 1) {
			t.Fatalf("DecTTL expired=%v for TTL %d", expired, ttl)
		}
	})
}

func FuzzDecap(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		var k, ik hal.FlowKey
		var l, il Layout
		err := Parse(data, 5, &k, &l)
		start, derr := Decap(data, &l) // must not panic, whatever the layout
		if err != nil {
			return
		}
		if !l.Tunnelled() {
			if !errors.Is(derr, ErrNotTunnelled) {
				t.Fatalf("Decap of a plain frame: %d, %v", start, derr)
			}
			return
		}
		if derr != nil || start != l.L2 || start <= 0 || start+EthHeaderLen > l.End || l.End > len(data) {
			t.Fatalf("Decap = %d, %v (layout %+v, %d bytes)", start, derr, l, len(data))
		}
		inner := data[start:l.End]
		if err := Parse(inner, 5, &ik, &il); err != nil {
			// Only an inner frame that itself looks like a tunnel may fail
			// on its own: nested tunnels are not decapsulated.
			tunnelish := l.Proto == hal.ProtoGRE || l.Proto == hal.ProtoUDP && (k.L4Dst == hal.PortVXLAN || k.L4Dst == hal.PortGeneve)
			if !tunnelish {
				t.Fatalf("inner frame fails alone: %v", err)
			}
			return
		}
		if ik.TunKind != hal.EncapNone {
			return
		}
		want := k
		want.TunKind, want.VNI, want.TunSrc, want.TunDst = 0, 0, [16]byte{}, [16]byte{}
		if ik != want {
			t.Fatalf("inner key\n got %v\nwant %v", ik, want)
		}
	})
}

func FuzzPopVLAN(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		buf := append([]byte(nil), data...)
		start, err := PopVLAN(buf, 0, len(buf))
		if err != nil {
			if !bytes.Equal(buf, data) {
				t.Fatal("a failed PopVLAN changed the frame")
			}
			if len(data) >= EthHeaderLen+VLANTagLen {
				if et := binary.BigEndian.Uint16(data[12:]); et == hal.EtherTypeVLAN || et == hal.EtherTypeQinQ {
					t.Fatalf("PopVLAN refused a tagged frame: %v", err)
				}
			}
			return
		}
		if start != VLANTagLen || !bytes.Equal(buf[start:start+12], data[:12]) || !bytes.Equal(buf[start+12:], data[16:]) {
			t.Fatalf("PopVLAN = %d: %x from %x", start, buf, data)
		}
		var k, pk hal.FlowKey
		var l, pl Layout
		if Parse(data, 1, &k, &l) == nil && !l.Tunnelled() {
			perr := Parse(buf[start:], 1, &pk, &pl)
			if perr != nil || pl.VLANs != l.VLANs-1 {
				t.Fatalf("popped frame: %v, %d tags (was %d)", perr, pl.VLANs, l.VLANs)
			}
			pk.VLAN = k.VLAN
			if pk != k {
				t.Fatalf("popped key\n got %v\nwant %v", pk, k)
			}
		}
		vid := binary.BigEndian.Uint16(data[14:16]) & 0x0fff
		s2, err := PushVLAN(buf, start, len(buf), vid)
		if err != nil || s2 != 0 {
			t.Fatalf("PushVLAN back: %d, %v", s2, err)
		}
		if !bytes.Equal(buf[:12], data[:12]) || binary.BigEndian.Uint16(buf[12:]) != hal.EtherTypeVLAN ||
			binary.BigEndian.Uint16(buf[14:]) != vid || !bytes.Equal(buf[16:], data[16:]) {
			t.Fatalf("push after pop: %x from %x", buf, data)
		}
	})
}

func FuzzGeneveOptions(f *testing.F) {
	f.Fuzz(func(t *testing.T, opts []byte) {
		steps, off, walked, critical := 0, 0, 0, false
		var werr error
		for off < len(opts) {
			o, next, err := NextGeneveOption(opts, off)
			if err != nil {
				werr = err
				break
			}
			if next <= off || next > len(opts) || len(o.Data) != next-off-4 || (len(o.Data) > 0 && &o.Data[0] != &opts[off+4]) {
				t.Fatalf("option at %d: next %d, %d data bytes", off, next, len(o.Data))
			}
			critical = critical || o.Critical()
			walked += next - off
			off = next
			if steps++; steps > len(opts)/4 {
				t.Fatalf("%d steps over %d bytes", steps, len(opts))
			}
		}
		gotCritical, bad := walkGeneveOptions(opts)
		if (werr == nil) != (bad < 0) || (werr != nil && bad != off) || (werr == nil && walked != len(opts)) {
			t.Fatalf("walk disagrees: err %v at %d, walkGeneveOptions bad=%d", werr, off, bad)
		}
		e := encapOf(hal.EncapGeneve, len(opts)%2 == 1)
		e.GeneveOptions = opts
		tpl, err := NewEncapTemplate(&e)
		valid := werr == nil && len(opts)%4 == 0 && len(opts) <= MaxGeneveOptionBytes
		if (err == nil) != valid {
			t.Fatalf("NewEncapTemplate = %v for options valid=%v", err, valid)
		}
		if err != nil {
			return
		}
		if gotCritical != critical {
			t.Fatalf("critical %v, walk says %v", gotCritical, critical)
		}
		inner := Build(udp4Spec())
		frame := BuildEncap(&e, inner)
		var k hal.FlowKey
		var l Layout
		perr := Parse(frame, 1, &k, &l)
		if critical {
			if !errors.Is(perr, ErrUnsupported) {
				t.Fatalf("critical option parsed: %v", perr)
			}
			return
		}
		if perr != nil || k.TunKind != hal.EncapGeneve || l.L2 != tpl.Len() || (len(opts) > 0) != (l.OuterFlags&FlagGeneveOptions != 0) {
			t.Fatalf("Parse: %v, layout %+v", perr, l)
		}
	})
}

// refWalkIPv6 is a second, plain walk of an extension header chain, to hold
// walkIPv6Ext against.
func refWalkIPv6(b []byte, nh uint8) (proto uint8, l4 int, res extResult) {
	off := 0
	for n := 0; ; n++ {
		switch nh {
		case 0, 43, 44, 51, 60, 135, 139, 140:
		default:
			return nh, off, extOK
		}
		if n == MaxIPv6ExtHeaders {
			return nh, off, extTooMany
		}
		if nh == 0 && n > 0 {
			return nh, off, extHopByHopNotFirst
		}
		if len(b)-off < 8 {
			return nh, off, extTruncated
		}
		hl := 8 * (int(b[off+1]) + 1)
		switch nh {
		case 44:
			if int(b[off+2])<<8|int(b[off+3])>>3 != 0 {
				return b[off], off + 8, extLaterFragment
			}
			hl = 8
		case 51:
			hl = 4 * (int(b[off+1]) + 2)
		}
		if off+hl > len(b) {
			return nh, off, extTruncated
		}
		nh = b[off]
		off += hl
	}
}

func FuzzIPv6Ext(f *testing.F) {
	f.Fuzz(func(t *testing.T, chain []byte, nh uint8) {
		proto, l4, fl, at, res := walkIPv6Ext(chain, 0, nh)
		rp, rl4, rres := refWalkIPv6(chain, nh)
		if res != rres || (res == extOK || res == extLaterFragment) && (proto != rp || l4 != rl4) {
			t.Fatalf("walk: proto %d l4 %d res %d; reference: %d %d %d", proto, l4, res, rp, rl4, rres)
		}
		if l4 < 0 || l4 > len(chain) || at < 0 || at > len(chain) {
			t.Fatalf("offsets l4 %d at %d outside %d bytes", l4, at, len(chain))
		}
		if res == extOK && isIPv6Ext(proto) {
			t.Fatalf("walk stopped at extension header %d", proto)
		}
		if (fl&FlagIPv6Ext != 0) != isIPv6Ext(nh) {
			t.Fatalf("flags %#x for first header %d", fl, nh)
		}
		// The same chain inside an IPv6 packet: Parse agrees with the walk.
		if len(chain) > 1000 {
			return
		}
		pkt := Build(FrameSpec{SrcMAC: macA, DstMAC: macB, Src: caA6, Dst: caB6, Proto: nh, Payload: chain})
		var k hal.FlowKey
		var l Layout
		err := Parse(pkt, 1, &k, &l)
		if !isIPv6Ext(nh) {
			return
		}
		base := EthHeaderLen + IPv6HeaderLen
		var pe *ParseError
		if len(chain) == 0 && nh == ProtoHopByHop {
			// Payload length 0 with hop-by-hop options is a jumbogram.
			if !errors.As(err, &pe) || pe.Reason != hal.ReasonUnsupported || pe.Layer != LayerIPv6 {
				t.Fatalf("jumbogram: %v", err)
			}
			return
		}
		switch res {
		case extOK:
			if l.L4 != base+l4 && !(errors.As(err, &pe) && pe.Layer != LayerIPv6Ext && pe.Layer != LayerIPv6) {
				t.Fatalf("Parse: L4 %d err %v; walk says L4 %d", l.L4, err, base+l4)
			}
			if k.Proto != proto {
				t.Fatalf("Parse proto %d; walk %d", k.Proto, proto)
			}
		case extLaterFragment:
			if ReasonOf(err) != hal.ReasonFragment {
				t.Fatalf("later fragment: %v", err)
			}
		case extTooMany:
			if !errors.As(err, &pe) || pe.Reason != hal.ReasonUnsupported || pe.Layer != LayerIPv6Ext {
				t.Fatalf("too many headers: %v", err)
			}
		default:
			if !errors.As(err, &pe) || pe.Reason != hal.ReasonMalformed || pe.Layer != LayerIPv6Ext {
				t.Fatalf("bad chain (%d): %v", res, err)
			}
		}
	})
}

// ---- seed corpus ----

type seed struct {
	name string
	vals []any
}

func corpusFile(vals []any) []byte {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, v := range vals {
		switch x := v.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", x)
		case uint8:
			fmt.Fprintf(&b, "byte(%q)\n", x)
		case uint16:
			fmt.Fprintf(&b, "uint16(%d)\n", x)
		default:
			panic(fmt.Sprintf("corpus value %T", v))
		}
	}
	return b.Bytes()
}

func seedName(s string) string {
	return strings.NewReplacer("/", "-", " ", "-").Replace(s)
}

func garbage(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	r.Read(b)
	return b
}

func fuzzSeeds() map[string][]seed {
	r := rand.New(rand.NewSource(1))
	out := map[string][]seed{}
	add := func(target, name string, vals ...any) {
		out[target] = append(out[target], seed{seedName(name), vals})
	}
	var plain, tunnelled []namedSpec
	plain = append(plain, plainSpecs()...)
	for _, s := range plain {
		f := Build(s.spec)
		add("FuzzParse", s.name, f)
		if s.spec.VLAN != 0 || s.spec.OuterVLAN != 0 {
			add("FuzzPopVLAN", s.name, f)
		}
	}
	for _, s := range laterFragments() {
		add("FuzzParse", s.name, Build(s.spec))
	}
	for _, e := range encaps() {
		for _, s := range innerSpecs() {
			f := BuildEncap(&e.e, Build(s.spec))
			add("FuzzParse", e.name+"/"+s.name, f)
			add("FuzzDecap", e.name+"/"+s.name, f)
			tunnelled = append(tunnelled, namedSpec{e.name + "/" + s.name, FrameSpec{Payload: f}})
		}
		add("FuzzGeneveOptions", "options-"+e.name, e.e.GeneveOptions)
	}
	// Truncated frames: cut inside each header.
	for i, s := range plain {
		if i%5 != 0 {
			continue
		}
		f := Build(s.spec)
		for _, n := range []int{13, 16, 30, 40, len(f) - 1} {
			if n < len(f) {
				add("FuzzParse", fmt.Sprintf("cut%d-%s", n, s.name), f[:n])
			}
		}
	}
	for i, s := range tunnelled {
		if i%7 != 0 {
			continue
		}
		f := s.spec.Payload
		for _, n := range []int{40, 50, 60, 70, len(f) - 1} {
			if n < len(f) {
				add("FuzzParse", fmt.Sprintf("cut%d-%s", n, s.name), f[:n])
				add("FuzzDecap", fmt.Sprintf("cut%d-%s", n, s.name), f[:n])
			}
		}
	}
	for i, n := range []int{0, 1, 14, 34, 60, 64, 128, 300} {
		add("FuzzParse", fmt.Sprintf("garbage-%d", i), garbage(r, n))
		add("FuzzDecap", fmt.Sprintf("garbage-%d", i), garbage(r, n))
		add("FuzzPopVLAN", fmt.Sprintf("garbage-%d", i), garbage(r, n))
		add("FuzzGeneveOptions", fmt.Sprintf("garbage-%d", i), garbage(r, n))
	}
	add("FuzzParse", "zeros", make([]byte, 64))
	add("FuzzParse", "ones", bytes.Repeat([]byte{0xff}, 64))
	add("FuzzPopVLAN", "untagged", Build(udp4Spec()))
	add("FuzzPopVLAN", "short-tag", Build(FrameSpec{SrcMAC: macA, DstMAC: macB, VLAN: 7, EthType: 0x88b6})[:17])

	// Geneve option areas.
	add("FuzzGeneveOptions", "empty", []byte{})
	add("FuzzGeneveOptions", "critical", []byte{0, 1, 0x80, 0})
	add("FuzzGeneveOptions", "overrun", []byte{0, 1, 2, 3, 0, 0, 0, 0})
	add("FuzzGeneveOptions", "max", bytes.Repeat([]byte{0x01, 0x02, 0x03, 0x00}, MaxGeneveOptionBytes/4))
	add("FuzzGeneveOptions", "odd", []byte{0, 1, 2})

	// IPv6 extension chains, as Build lays them out.
	chains := []struct {
		name string
		ext  []uint8
		frag uint16
	}{
		{"hbh", []uint8{ProtoHopByHop}, 0},
		{"all", []uint8{ProtoHopByHop, ProtoRouting, ProtoAH, ProtoFragment, ProtoDstOpts}, 0},
		{"later-fragment", []uint8{ProtoFragment}, 5},
		{"hbh-second", []uint8{ProtoDstOpts, ProtoHopByHop}, 0},
		{"nine", []uint8{60, 60, 60, 60, 60, 60, 60, 60, 60}, 0},
	}
	for _, c := range chains {
		s := tcp6Spec()
		s.ExtHeaders, s.FragOffset = c.ext, c.frag
		f := Build(s)
		add("FuzzIPv6Ext", c.name, f[EthHeaderLen+IPv6HeaderLen:], c.ext[0])
		add("FuzzIPv6Ext", "cut-"+c.name, f[EthHeaderLen+IPv6HeaderLen:EthHeaderLen+IPv6HeaderLen+12], c.ext[0])
	}
	add("FuzzIPv6Ext", "not-ext", []byte{1, 2, 3}, hal.ProtoUDP)
	add("FuzzIPv6Ext", "garbage", garbage(r, 40), ProtoRouting)
	return out
}

// writeCorpus replaces the generated seeds (seed-*) of each fuzz target
// under testdata/fuzz by seeds; inputs the fuzzer found (named by their
// hash) stay as regression cases. Unless WIRE_WRITE_CORPUS=1, it skips t
// and writes nothing.
func writeCorpus(t *testing.T, seeds map[string][]seed) {
	t.Helper()
	if os.Getenv("WIRE_WRITE_CORPUS") != "1" {
		targets := slices.Sorted(maps.Keys(seeds))
		t.Skipf("set WIRE_WRITE_CORPUS=1 to regenerate testdata/fuzz/{%s}", strings.Join(targets, ","))
	}
	for target, ss := range seeds {
		dir := filepath.Join("testdata", "fuzz", target)
		old, err := filepath.Glob(filepath.Join(dir, "seed-*"))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range old {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, s := range ss {
			if err := os.WriteFile(filepath.Join(dir, "seed-"+s.name), corpusFile(s.vals), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// checkCorpus fails unless the committed seeds are seeds, so that a
// corpus cannot silently go stale.
func checkCorpus(t *testing.T, seeds map[string][]seed) {
	t.Helper()
	for target, ss := range seeds {
		for _, s := range ss {
			p := filepath.Join("testdata", "fuzz", target, "seed-"+s.name)
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatalf("%v (regenerate with WIRE_WRITE_CORPUS=1)", err)
			}
			if !bytes.Equal(got, corpusFile(s.vals)) {
				t.Fatalf("%s is stale (regenerate with WIRE_WRITE_CORPUS=1)", p)
			}
		}
	}
}

// TestWriteFuzzCorpus regenerates testdata/fuzz when WIRE_WRITE_CORPUS=1.
func TestWriteFuzzCorpus(t *testing.T) {
	writeCorpus(t, fuzzSeeds())
}

// TestFuzzCorpusCommitted checks that the committed corpus is the one the
// generator makes.
func TestFuzzCorpusCommitted(t *testing.T) {
	checkCorpus(t, fuzzSeeds())
}

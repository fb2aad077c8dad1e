//go:build linux

package xdp

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// l4Site is where a TCP/UDP checksum lives in a frame and what its
// pseudo-header covers.
type l4Site struct {
	l3, l4, field int // offsets of the IP header, the transport header, the checksum field
	v6            bool
	proto         uint8
	n             int // the transport length the pseudo-header carries
}

// sites returns the TCP/UDP checksums of frame as hal/wire parses it: the
// (inner) transport's, and the outer UDP header's when the frame is a UDP
// tunnel.
func sites(frame []byte) (inner, outer *l4Site) {
	var k hal.FlowKey
	var l wire.Layout
	if wire.Parse(frame, 1, &k, &l) != nil {
		return nil, nil
	}
	mk := func(l3, l4 int, et uint16, proto uint8, end int) *l4Site {
		s := &l4Site{l3: l3, l4: l4, v6: et == hal.EtherTypeIPv6, proto: proto}
		switch proto {
		case hal.ProtoTCP:
			s.field, s.n = l4+16, end-l4
		case hal.ProtoUDP:
			s.field, s.n = l4+6, int(binary.BigEndian.Uint16(frame[l4+4:]))
		default:
			return nil
		}
		return s
	}
	if l.L4 >= 0 && l.Flags&wire.FlagFragment == 0 {
		inner = mk(l.L3, l.L4, l.EthType, l.Proto, l.End)
	}
	if l.Tunnelled() && frame[l.OuterL3+map[bool]int{false: 9, true: 6}[l.OuterEthType == hal.EtherTypeIPv6]] == hal.ProtoUDP {
		outer = mk(l.OuterL3, l.OuterL4, l.OuterEthType, hal.ProtoUDP, 0)
	}
	return inner, outer
}

// pseudo is the folded pseudo-header sum of s, not inverted: what a sender
// that leaves the checksum to its NIC writes in the field (the kernel's
// ~csum_tcpudp_magic for a CHECKSUM_PARTIAL skb).
func (s *l4Site) pseudo(frame []byte) uint16 {
	var src, dst []byte
	if s.v6 {
		src, dst = frame[s.l3+8:s.l3+24], frame[s.l3+24:s.l3+40]
	} else {
		src, dst = frame[s.l3+12:s.l3+16], frame[s.l3+16:s.l3+20]
	}
	return ^wire.Fold(wire.PseudoHeaderSum(src, dst, s.proto, s.n))
}

// valid says whether the checksum of s in frame verifies.
func (s *l4Site) valid(frame []byte) bool {
	var src, dst []byte
	if s.v6 {
		src, dst = frame[s.l3+8:s.l3+24], frame[s.l3+24:s.l3+40]
	} else {
		src, dst = frame[s.l3+12:s.l3+16], frame[s.l3+16:s.l3+20]
	}
	return wire.Checksum(frame[s.l4:s.l4+s.n], wire.PseudoHeaderSum(src, dst, s.proto, s.n)) == 0
}

// partial returns a copy of frame whose inner (or outer) TCP/UDP checksum
// is partial, as a sender with checksum offload leaves it.
func partial(t testing.TB, frame []byte, outer bool) []byte {
	t.Helper()
	f := bytes.Clone(frame)
	in, out := sites(f)
	s := in
	if outer {
		s = out
	}
	if s == nil {
		t.Fatalf("no checksum to make partial (outer %v) in %x", outer, frame)
	}
	binary.BigEndian.PutUint16(f[s.field:], s.pseudo(f))
	return f
}

// withOuterChecksum returns a copy of a UDP-tunnelled frame with its outer
// UDP checksum computed in full (hal/wire leaves it 0 over IPv4).
func withOuterChecksum(t testing.TB, frame []byte) []byte {
	t.Helper()
	f := bytes.Clone(frame)
	_, s := sites(f)
	if s == nil {
		t.Fatal("not a UDP tunnel")
	}
	binary.BigEndian.PutUint16(f[s.field:], 0)
	p := ^s.pseudo(f)
	c := wire.Checksum(f[s.l4:s.l4+s.n], uint32(^p))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(f[s.field:], c)
	return f
}

// checksumOnlyChange checks that out is in, except for TCP/UDP checksums
// that were partial in in and are complete and valid in out.
func checksumOnlyChange(t testing.TB, in, out []byte) {
	t.Helper()
	if bytes.Equal(in, out) {
		return
	}
	if len(in) != len(out) {
		t.Fatalf("length changed: %d to %d", len(in), len(out))
	}
	fixed := bytes.Clone(in)
	inner, outer := sites(in)
	for _, s := range []*l4Site{inner, outer} {
		if s == nil || bytes.Equal(in[s.field:s.field+2], out[s.field:s.field+2]) {
			continue
		}
		if binary.BigEndian.Uint16(in[s.field:]) != s.pseudo(in) {
			t.Fatalf("checksum at %d changed from %x, which is not partial", s.field, in[s.field:s.field+2])
		}
		copy(fixed[s.field:s.field+2], out[s.field:s.field+2])
	}
	if !bytes.Equal(fixed, out) {
		t.Fatalf("frame changed beyond partial checksums\n in %x\nout %x", in, out)
	}
	for _, s := range []*l4Site{inner, outer} {
		if s != nil && !bytes.Equal(in[s.field:s.field+2], out[s.field:s.field+2]) && !s.valid(out) {
			t.Fatalf("completed checksum at %d does not verify", s.field)
		}
	}
}

// zeroSum returns a frame of spec whose transport checksum, complete,
// is 0: the last two payload bytes (at an even offset in the segment) are
// chosen to make the sum 0xffff. UDP writes that 0xffff; TCP keeps 0.
func zeroSum(spec wire.FrameSpec) []byte {
	spec.Payload = append(bytes.Clone(spec.Payload), 0, 0)
	f := wire.Build(spec)
	in, _ := sites(f)
	c := binary.BigEndian.Uint16(f[in.field:])
	if in.proto == hal.ProtoUDP && c == 0xffff {
		c = 0
	}
	spec.Payload[len(spec.Payload)-2], spec.Payload[len(spec.Payload)-1] = byte(c>>8), byte(c)
	return wire.Build(spec)
}

// TestRunPartialChecksums sends frames whose TCP/UDP checksum is partial,
// as a VM with the kernel's default offloads sends them (and a Linux peer's
// VXLAN carries them inside), through every kind of path: the program
// completes them, so each output is byte for byte what the same frame with
// a complete checksum gives, and the exception path gets them completed
// too.
func TestRunPartialChecksums(t *testing.T) {
	n := openVirtual(t, Config{})
	vx6 := hal.Encap{Kind: hal.EncapVXLAN, VNI: testVN, Src: pa6a, Dst: pa6b, SrcMAC: macPA1, DstMAC: macPA2}
	gen6 := hal.Encap{Kind: hal.EncapGeneve, VNI: testVN, Src: pa6a, Dst: pa6b, SrcMAC: macPA1, DstMAC: macPA2}
	natSrc := netip.MustParseAddr("203.0.113.7")
	natSrc6 := netip.MustParseAddr("2001:db8::77")
	var specs []wire.FrameSpec
	// Up to the largest that fits the ports' 1500-byte MTU after an IPv6
	// encapsulation (TestExceptionChecksumsCompleted sums longer ones).
	for _, size := range []int{0, 1, 21, 511 - 8, 512 - 20, 513, 1024 - 8, 1370} {
		for _, proto := range []uint8{hal.ProtoTCP, hal.ProtoUDP} {
			for _, v6 := range []bool{false, true} {
				s := wire.FrameSpec{SrcMAC: macVM1, DstMAC: macVM2, Src: ca1, Dst: ca2, Proto: proto,
					SrcPort: uint16(1000 + size), DstPort: 80, Payload: oddBytes(size)}
				if v6 {
					s.Src, s.Dst = ca6a, ca6b
				}
				specs = append(specs, s)
			}
		}
	}
	id := hal.RuleID(0)
	for _, spec := range specs {
		f := wire.Build(spec)
		p := partial(t, f, false)
		name := fmt.Sprintf("proto%d-v6=%v-%dB", spec.Proto, spec.Src.Is6(), len(spec.Payload))
		if bytes.Equal(p, f) {
			t.Fatalf("%s: the partial frame equals the complete one", name)
		}
		nat := natSrc
		if spec.Src.Is6() {
			nat = natSrc6
		}
		// Each path runs the partial frame and the complete one under
		// the same rule; the complete one's output is the reference
		// (TestRunEncap, TestRunRewrites and TestRunDecap check those
		// against hal/wire), and where hal/wire builds it the test
		// says so too.
		for _, path := range []struct {
			name     string
			in       hal.PortID
			partial  []byte
			complete []byte
			acts     []hal.Action
			want     []byte
		}{
			{"output", pVM1, p, f, []hal.Action{hal.Output(pVM2)}, f},
			{"encap4", pVM1, p, f, []hal.Action{hal.EncapWith(vxlanTo), hal.Output(pUp)}, wire.BuildEncap(&vxlanTo, f)},
			{"encap6", pVM1, p, f, []hal.Action{hal.EncapWith(vx6), hal.Output(pUp)}, wire.BuildEncap(&vx6, f)},
			{"nat", pVM1, p, f, []hal.Action{hal.SetIPSrc(nat), hal.SetL4Src(4444), hal.DecTTL(), hal.PushVLAN(9), hal.Output(pVM2)}, nil},
			// From the wire: a peer's VXLAN with the inner checksum
			// partial (IPv4 outer: UDP checksum 0; IPv6: full).
			{"decap4", pUp, wire.BuildEncap(&vxlanTo, p), wire.BuildEncap(&vxlanTo, f), []hal.Action{hal.Decap(), hal.Output(pVM1)}, f},
			{"decap6", pUp, wire.BuildEncap(&vx6, p), wire.BuildEncap(&vx6, f), []hal.Action{hal.Decap(), hal.Output(pVM1)}, f},
			// Forwarded tunnelled: the inner checksum completed
			// inside an IPv4 tunnel, and a partial outer UDP checksum
			// completed over IPv4 and IPv6.
			{"transit-inner", pUp, wire.BuildEncap(&vxlanTo, p), wire.BuildEncap(&vxlanTo, f), []hal.Action{hal.Output(pVM2)}, wire.BuildEncap(&vxlanTo, f)},
			{"transit-outer4", pUp, partial(t, withOuterChecksum(t, wire.BuildEncap(&vxlanTo, f)), true),
				withOuterChecksum(t, wire.BuildEncap(&vxlanTo, f)), []hal.Action{hal.Output(pVM2)}, withOuterChecksum(t, wire.BuildEncap(&vxlanTo, f))},
			{"transit-outer6", pUp, partial(t, wire.BuildEncap(&gen6, f), true), wire.BuildEncap(&gen6, f), []hal.Action{hal.Output(pVM2)}, wire.BuildEncap(&gen6, f)},
		} {
			id++
			mustApply(t, n, hal.AddOp(exactRule(t, id, path.in, path.partial, path.acts...)))
			ref := mustRun(t, n, path.in, path.complete)
			got := mustRun(t, n, path.in, path.partial)
			if ref.Verdict != VerdictOutput {
				t.Fatalf("%s %s: the complete frame: %v %v", name, path.name, ref.Verdict, ref.Reason)
			}
			if !bytes.Equal(got.Frame, ref.Frame) || got.Verdict != ref.Verdict || got.Port != ref.Port {
				t.Fatalf("%s %s: partial checksum not completed\n got %x\nwant %x", name, path.name, got.Frame, ref.Frame)
			}
			if path.want != nil && !bytes.Equal(got.Frame, path.want) {
				t.Fatalf("%s %s: output differs from hal/wire's\n got %x\nwant %x", name, path.name, got.Frame, path.want)
			}
			mustApply(t, n, hal.DeleteOp(id))
		}
	}

	// Sums that complete to 0: UDP writes 0xffff (0 would mean "none"),
	// TCP keeps 0, as hal/wire builds them.
	for _, proto := range []uint8{hal.ProtoUDP, hal.ProtoTCP} {
		f := zeroSum(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macVM2, Src: ca1, Dst: ca2, Proto: proto, SrcPort: 7, DstPort: 7, Payload: oddBytes(40)})
		in, _ := sites(f)
		want := uint16(0)
		if proto == hal.ProtoUDP {
			want = 0xffff
		}
		if c := binary.BigEndian.Uint16(f[in.field:]); c != want {
			t.Fatalf("zeroSum built checksum %#04x", c)
		}
		id++
		mustApply(t, n, hal.AddOp(exactRule(t, id, pVM1, f, hal.Output(pVM2))))
		expectOutput(t, mustRun(t, n, pVM1, partial(t, f, false)), pVM2, f)
	}
}

// TestRunPartialChecksumsLeftAlone: only a field equal to the pseudo-header
// sum is taken for partial. A wrong checksum stays wrong (the receiver
// drops it, as it would without the program), a UDP checksum of 0 over
// IPv4 stays "none", and a first fragment, whose checksum covers bytes the
// frame does not carry, is not touched.
func TestRunPartialChecksumsLeftAlone(t *testing.T) {
	n := openVirtual(t, Config{})
	mustApply(t, n, hal.AddOp(hal.Rule{ID: 1, Actions: []hal.Action{hal.Output(pVM2)}}))
	tcp := wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macVM2, Src: ca1, Dst: ca2, Proto: hal.ProtoTCP, SrcPort: 1, DstPort: 2, Payload: oddBytes(100)})
	wrong := partial(t, tcp, false)
	in, _ := sites(wrong)
	wrong[in.field+1]++
	zero := wire.Build(udp4(ca1, ca2, 5, 6))
	zs, _ := sites(zero)
	binary.BigEndian.PutUint16(zero[zs.field:], 0)
	frag := wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macVM2, Src: ca1, Dst: ca2, Proto: hal.ProtoTCP, SrcPort: 1, DstPort: 2,
		Payload: oddBytes(64), MoreFragments: true})
	// the pseudo-header of the fragment's own length, in the field
	fs := &l4Site{l3: 14, l4: 34, field: 34 + 16, proto: hal.ProtoTCP, n: len(frag) - 34}
	binary.BigEndian.PutUint16(frag[fs.field:], fs.pseudo(frag))
	for name, f := range map[string][]byte{"wrong": wrong, "udp-zero": zero, "first-fragment": frag} {
		r := mustRun(t, n, pVM1, f)
		if r.Verdict != VerdictOutput || !bytes.Equal(r.Frame, f) {
			t.Errorf("%s: %v, frame changed: %v", name, r.Verdict, !bytes.Equal(r.Frame, f))
		}
	}
}

// TestExceptionChecksumsCompleted: a frame that goes to the host (a miss, a
// ToHost rule, one too big for the egress port) reaches ReadExceptions with
// its partial checksum completed, so that the host can forward it as it
// is; everything else is as it arrived.
func TestExceptionChecksumsCompleted(t *testing.T) {
	n := openVirtual(t, Config{})
	mk := func(sp uint16, size int, v6 bool) []byte {
		s := wire.FrameSpec{SrcMAC: macVM1, DstMAC: macVM2, Src: ca1, Dst: ca2, Proto: hal.ProtoTCP, SrcPort: sp, DstPort: 22, Payload: oddBytes(size)}
		if v6 {
			s.Src, s.Dst = ca6a, ca6b
		}
		return wire.Build(s)
	}
	miss := mk(1, 300, false)
	toHost := mk(2, 2900, true) // beyond 5 chunks of the sum and the port's MTU
	tooBig := mk(3, 1500-40, false)
	mustApply(t, n,
		hal.AddOp(exactRule(t, 1, pVM1, toHost, hal.ToHost(hal.ReasonAction))),
		hal.AddOp(exactRule(t, 2, pVM1, tooBig, hal.EncapWith(vxlanTo), hal.Output(pUp))))
	want := map[hal.Reason][]byte{hal.ReasonMiss: miss, hal.ReasonAction: toHost, hal.ReasonMTU: tooBig}
	for reason, f := range want {
		if r := mustRun(t, n, pVM1, partial(t, f, false)); r.Verdict != VerdictToHost || r.Reason != reason {
			t.Fatalf("%v: %+v", reason, r)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	batch := make([]hal.Exception, 4)
	for i := range batch {
		batch[i].Buf = make([]byte, 4096)
	}
	got := 0
	for got < len(want) {
		k, err := n.ReadExceptions(ctx, batch[got:])
		if err != nil {
			t.Fatalf("ReadExceptions after %d: %v", got, err)
		}
		got += k
	}
	for _, e := range batch[:got] {
		if !bytes.Equal(e.Frame(), want[e.Reason]) {
			t.Errorf("%v exception: the checksum is not completed\n got %x\nwant %x", e.Reason, e.Frame(), want[e.Reason])
		}
	}
}

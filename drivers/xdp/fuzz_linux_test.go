//go:build linux

package xdp

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/learn"
	"github.com/nicpath/nicpath/hal/wire"
)

// FuzzRun feeds arbitrary frames to the BPF parser and datapath (through
// BPF_PROG_TEST_RUN) behind a catch-all rule and a VXLAN decap rule, and
// checks the invariants every frame must keep: the program never aborts;
// a frame it forwards unchanged is one hal/wire parses without a
// malformed error; a decapsulated frame is exactly the tail of the input;
// drops and exceptions carry a reason the program can give; the host gets
// an exception as the program left the frame, with its port, reason and
// rule. "Unchanged" and "exactly" allow one change: a partial TCP/UDP
// checksum completed (checksumOnlyChange).
//
// All inputs share one NIC, on purpose: opening one loads and verifies the
// program, and Run loads a tracing instance of it, which costs far more
// than an input. What the NIC keeps from one frame to the next is put back
// instead, so that each input starts from the same state: the exception
// ring is read after every frame handed to the host (left unread, it
// filled, and from then on every such frame became a queue_full drop), and
// the address learner its reading feeds is a new one for every input (it
// reports a source once per refresh interval, so a frame took another path
// through it depending on the frames before it). Counters only grow and
// decide nothing; the per-CPU scratch rule is written before it is read.
func FuzzRun(f *testing.F) {
	requireRoot(f)
	good := wire.Build(udp4(ca1, ca2, 1000, 2000))
	f.Add(good)
	f.Add(wire.BuildEncap(&vxlanTo, good))
	f.Add(wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macVM2, Src: ca6a, Dst: ca6b, Proto: hal.ProtoTCP, SrcPort: 1, DstPort: 2, ExtHeaders: []uint8{0}}))
	f.Add(wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macVM2, VLAN: 5, OuterVLAN: 6, Src: ca1, Dst: ca2, Proto: hal.ProtoICMP, ICMPType: 8}))
	f.Add(good[:20])
	// Geneve with options (one critical), and a control packet (O bit)
	genOpt := hal.Encap{Kind: hal.EncapGeneve, VNI: 1, Src: pa1, Dst: pa2, GeneveOptions: []byte{0, 1, 2, 1, 7, 7, 7, 7, 0, 1, 0x82, 0}}
	f.Add(wire.BuildEncap(&genOpt, good))
	genCtl := wire.BuildEncap(&hal.Encap{Kind: hal.EncapGeneve, VNI: 1, Src: pa1, Dst: pa2}, good)
	genCtl[43] |= 0x80
	f.Add(genCtl)
	// partial checksums: plain, inside a tunnel, and the tunnel's own
	tcp := wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macVM2, Src: ca1, Dst: ca2, Proto: hal.ProtoTCP, SrcPort: 3, DstPort: 4, Payload: oddBytes(77)})
	f.Add(partial(f, tcp, false))
	f.Add(wire.BuildEncap(&vxlanTo, partial(f, tcp, false)))
	e6 := hal.Encap{Kind: hal.EncapVXLAN, VNI: testVN, Src: pa6a, Dst: pa6b, SrcMAC: macPA1, DstMAC: macPA2}
	f.Add(partial(f, wire.BuildEncap(&e6, good), true))

	n, err := Open(context.Background(), Config{Ports: []PortConfig{{Kind: hal.PortVPort}, {Kind: hal.PortUplink}, {Kind: hal.PortVPort}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { n.Close() })
	var tun hal.Match
	tun.InPort(pVM1).Tunnel(hal.EncapVXLAN, vxlanTo.VNI).IPDst(netip.PrefixFrom(ca2, 32))
	res := make([]hal.OpResult, 2)
	if err := n.Apply(context.Background(), []hal.Op{
		hal.AddOp(hal.Rule{ID: 1, Actions: []hal.Action{hal.Count(), hal.Output(pVM2)}}),
		hal.AddOp(hal.Rule{ID: 2, Priority: 5, Match: tun, Actions: []hal.Action{hal.Decap(), hal.Output(pUp)}}),
	}, res); err != nil {
		f.Fatal(err)
	}

	exc := []hal.Exception{{Buf: make([]byte, 1<<16)}}
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) < 14 || len(frame) > 4000 {
			return // BPF_PROG_TEST_RUN needs an Ethernet header; jumbo frames are not this test's
		}
		old := n.learn
		n.learn = learn.New()
		old.Close()
		r, err := n.Run(pVM1, frame)
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		var k hal.FlowKey
		var l wire.Layout
		perr := wire.Parse(frame, pVM1, &k, &l)
		var pe *wire.ParseError
		wireMalformed := errors.As(perr, &pe) && pe.Reason == hal.ReasonMalformed
		switch r.Verdict {
		case VerdictOutput:
			if wireMalformed {
				t.Fatalf("forwarded a frame hal/wire calls malformed (%v)", perr)
			}
			switch r.Rule {
			case 1:
				if r.Port != pVM2 {
					t.Fatalf("catch-all output to port %d", r.Port)
				}
				checksumOnlyChange(t, frame, r.Frame)
			case 2:
				if r.Port != pUp || len(r.Frame) >= len(frame) {
					t.Fatalf("decap output is not the inner frame")
				}
				checksumOnlyChange(t, frame[len(frame)-len(r.Frame):], r.Frame)
			default:
				t.Fatalf("output by rule %d", r.Rule)
			}
		case VerdictDrop:
			// Not queue_full: the exception ring is read after every
			// frame handed to the host, so it never fills here.
			if r.Reason != hal.ReasonMalformed && r.Reason != hal.ReasonSealed {
				t.Fatalf("dropped with reason %v", r.Reason)
			}
		case VerdictToHost:
			switch r.Reason {
			case hal.ReasonUnsupported, hal.ReasonFragment, hal.ReasonMTU:
			default:
				t.Fatalf("to host with reason %v", r.Reason)
			}
			if r.Reason == hal.ReasonMTU {
				checksumOnlyChange(t, frame, r.Frame)
			} else if !bytes.Equal(r.Frame, frame) {
				// unsupported and fragments are not parsed far enough
				// to complete anything
				t.Fatalf("the host must get the frame as it arrived")
			}
			// The program queued the exception before it returned; the
			// deadline only turns a missing one into a failure, not a hang.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			k, err := n.ReadExceptions(ctx, exc)
			if err != nil || k != 1 {
				t.Fatalf("read the exception: %d, %v", k, err)
			}
			if e := exc[0]; !bytes.Equal(e.Frame(), r.Frame) || e.Truncated || e.InPort != pVM1 || e.Reason != r.Reason || e.Rule != r.Rule {
				t.Fatalf("exception %+v for a frame handed to the host with reason %v by rule %d", e, r.Reason, r.Rule)
			}
		default:
			t.Fatalf("verdict %v", r.Verdict)
		}
	})
}

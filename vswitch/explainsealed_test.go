package vswitch

import (
	"context"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/haltest"
	"github.com/nicpath/nicpath/hal/wire"
)

// sealedToHostNIC reports what a NIC that hands the sealed frames it cannot
// open to the host reports: no crypto, no SealedDrop.
type sealedToHostNIC struct{ haltest.Decorator }

func (n *sealedToHostNIC) Capabilities() hal.Capabilities {
	c := n.Inner.Capabilities()
	c.Crypto, c.SealedDrop = false, false
	return c
}

// TestExplainSealedSaysWhoDrops: explain says who drops a sealed frame the
// NIC does not forward, as the NIC reports it (Crypto, SealedDrop), and what
// it says is what happens: a frame the NIC drops never reaches the host's
// counters, one handed to the host is counted there.
func TestExplainSealedSaysWhoDrops(t *testing.T) {
	frame := wire.Build(wire.FrameSpec{SrcMAC: hal.MAC(macVA1), DstMAC: hal.MAC(macVA2), EthType: hal.EtherTypeSealed,
		Payload: []byte("sealed destination, opaque to the host........")})
	// nicDrops checks that a sealed frame sent on va1 is dropped by the
	// NIC under reason sealed and never reaches the host.
	nicDrops := func(t *testing.T, tp *topo, h *testHost) {
		t.Helper()
		before, err := h.soft.Stats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got := tp.send(h, h.ports["va1"], frame); len(got) != 0 {
			t.Fatalf("sealed frame delivered: %d frames", len(got))
		}
		after, err := h.soft.Stats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if after.Drops[hal.ReasonSealed] != before.Drops[hal.ReasonSealed]+1 {
			t.Fatalf("NIC sealed drops %d -> %d, want one more", before.Drops[hal.ReasonSealed], after.Drops[hal.ReasonSealed])
		}
		if s := h.sw.Stats(); s.Drops["sealed"] != 0 || after.Exceptions[hal.ReasonSealed] != before.Exceptions[hal.ReasonSealed] {
			t.Fatalf("a sealed frame reached the host:\n%s", s)
		}
	}
	cases := []struct {
		name     string
		opts     topoOpts
		want     []string // in the detail
		hostDrop string
		nicDrops bool // the NIC really drops it (checked)
	}{
		{name: "crypto", opts: topoOpts{crypto: true},
			want:     []string{"the NIC opens it", "(0 for this vport)", "the NIC drops itself (reason sealed): none reaches the host"},
			nicDrops: true},
		// softnic without crypto, as xdp and tcflower (SealedDrop: their
		// conformance runs check the claim on the device).
		{name: "no-crypto-nic-drops", opts: topoOpts{},
			want:     []string{"no crypto capability: the NIC drops it (fail closed, reason sealed", "never reaches the host"},
			nicDrops: true},
		{name: "no-crypto-to-host", opts: topoOpts{wrap: func(_ string, n hal.NIC) hal.NIC {
			return haltest.Wrap(&sealedToHostNIC{haltest.Decorator{Inner: n}})
		}},
			want:     []string{"no crypto capability: the NIC hands it to the host, which drops it (fail closed) and never opens it"},
			hostDrop: "sealed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tp := newTopo(t, smallPolicy(t, nil), c.opts)
			h1 := tp.byNm["h1"]
			caps := h1.sw.caps
			if caps.Crypto != c.opts.crypto || caps.SealedDrop != c.nicDrops {
				t.Fatalf("switch sees Crypto %v SealedDrop %v", caps.Crypto, caps.SealedDrop)
			}
			ex := h1.sw.ExplainFrame(h1.ports["va1"], frame)
			for _, w := range c.want {
				if !strings.Contains(ex.Detail, w) {
					t.Errorf("detail %q lacks %q", ex.Detail, w)
				}
			}
			if ex.HostDrop != c.hostDrop || ex.Where != PathNone || ex.Verdict != "drop" {
				t.Errorf("host drop %q where %v verdict %q, want host drop %q, nowhere, drop", ex.HostDrop, ex.Where, ex.Verdict, c.hostDrop)
			}
			if c.nicDrops {
				nicDrops(t, tp, h1)
				return
			}
			// Handed to the host: dropped and counted there.
			exc := []hal.Exception{{InPort: h1.ports["va1"], Reason: hal.ReasonSealed, Buf: frame, Len: len(frame)}}
			if err := h1.sw.HandleBatch(context.Background(), exc); err != nil {
				t.Fatal(err)
			}
			if s := h1.sw.Stats(); s.Drops[c.hostDrop] != 1 || s.Flows != 0 {
				t.Fatalf("sealed frame not dropped by the host:\n%s", s)
			}
		})
	}
}

package vswitch

import (
	"strings"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

// unseenNIC is a NIC whose tunnelled misses never reach the host
// (Capabilities.TunnelMissesUnseen), as tc-flower's without its BPF action.
type unseenNIC struct{ hal.NIC }

func (n unseenNIC) Capabilities() hal.Capabilities {
	c := n.NIC.Capabilities()
	c.TunnelMissesUnseen = true
	return c
}

// TestExplainTunnelMissesUnseen: on a NIC that never hands a tunnelled miss
// to the host, Explain says that the first packet of a connection a remote
// VM opens is never walked (handled nowhere), instead of promising the
// offload its walk would make; a local VM's first packet is unaffected, and
// a NIC that does hand them on gets the usual answer.
func TestExplainTunnelMissesUnseen(t *testing.T) {
	p := udp(macVA1, macVA2, caVA1, caVA2, 1000, 53)
	for _, unseen := range []bool{true, false} {
		opts := topoOpts{}
		if unseen {
			opts.wrap = func(_ string, n hal.NIC) hal.NIC { return unseenNIC{n} }
		}
		tp := newTopo(t, smallPolicy(t, nil), opts)
		h2 := tp.byNm["h2"]
		ex := h2.sw.Explain(Description{Uplink: true, VNI: 100, OuterSrc: pa1, Packet: p})
		if unseen {
			if ex.Where != PathNone || !strings.Contains(ex.Detail, "TunnelMissesUnseen") || !strings.Contains(ex.Detail, "never walked") {
				t.Errorf("unseen tunnelled misses: explain:\n%s", ex)
			}
		} else if ex.Where != PathNIC {
			t.Errorf("tunnelled misses seen: explain:\n%s", ex)
		}
		// A local VM's packet toward the remote one: walked as always.
		out := h2.sw.Explain(Description{VM: "va2", Packet: udp(macVA2, macVA1, caVA2, caVA1, 53, 1000)})
		if out.Where != PathNIC {
			t.Errorf("unseen %v: a local VM's first packet: explain:\n%s", unseen, out)
		}
	}
}

package tcflower

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

func actionKinds(c *compiled) []string {
	var ks []string
	for _, a := range c.actions {
		ks = append(ks, a.Kind)
	}
	return ks
}

// An IPv4 address rewrite of a rule that pins the address is act_nat (the
// checksums follow the address even in a TSO frame); the others stay
// pedit and csum.
func TestCompileAddressRewrites(t *testing.T) {
	n := fakeNIC(t, &fakeKernel{})
	n.lay.nat = true
	// A connection's five-tuple (hal.Exact also matches the tunnel kind
	// and the VLAN tag's absence, which flower cannot say).
	var exact hal.Match
	exact.InPort(1).IPSrc(netip.MustParsePrefix("192.0.2.1/32")).IPDst(netip.MustParsePrefix("192.0.2.99/32")).Proto(hal.ProtoTCP).L4Src(40000).L4Dst(80)
	newDst, newSrc := netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("198.51.100.7")
	for _, c := range []struct {
		name  string
		match hal.Match
		acts  []hal.Action
		kinds []string
		nats  []struct{ old, new netip.Addr }
		src   []bool
	}{
		{
			name:  "exact match, both addresses and the MAC",
			match: exact,
			acts:  []hal.Action{hal.SetEthDst(macVM2), hal.SetIPDst(newDst), hal.SetIPSrc(newSrc), hal.Output(2)},
			kinds: []string{"nat", "nat", "pedit", "mirred"},
			nats:  []struct{ old, new netip.Addr }{{netip.MustParseAddr("192.0.2.99"), newDst}, {netip.MustParseAddr("192.0.2.1"), newSrc}},
			src:   []bool{false, true},
		},
		{
			name:  "exact match, a port too: csum for the port",
			match: exact,
			acts:  []hal.Action{hal.SetIPDst(newDst), hal.SetL4Dst(8080), hal.Output(2)},
			kinds: []string{"nat", "pedit", "csum", "mirred"},
			nats:  []struct{ old, new netip.Addr }{{netip.MustParseAddr("192.0.2.99"), newDst}},
			src:   []bool{false},
		},
		{
			name:  "a prefix: the old address is not known",
			match: *new(hal.Match).InPort(1).IPDst(netip.MustParsePrefix("192.0.2.0/24")),
			acts:  []hal.Action{hal.SetIPDst(newDst), hal.Output(2)},
			kinds: []string{"pedit", "csum", "mirred"},
		},
	} {
		r := hal.Rule{ID: 1, Priority: 1, Match: c.match, Actions: c.acts}
		if err := n.Validate(&r); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		comp, err := compileRule(&n.lay, &r)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := actionKinds(comp); len(got) != len(c.kinds) || func() bool {
			for i := range got {
				if got[i] != c.kinds[i] {
					return true
				}
			}
			return false
		}() {
			t.Errorf("%s: actions %v, want %v", c.name, got, c.kinds)
			continue
		}
		for i, want := range c.nats {
			o, _ := decodeAttrs(t, comp.actions[i].Opts)
			p := o[natParms]
			if len(p) != 36 || int32(binary.NativeEndian.Uint32(p[8:])) != tcActPipe {
				t.Fatalf("%s: nat parms % x, want 36 bytes with control pipe", c.name, p)
			}
			old, _ := netip.AddrFromSlice(p[20:24])
			nw, _ := netip.AddrFromSlice(p[24:28])
			mask := binary.BigEndian.Uint32(p[28:])
			egress := binary.NativeEndian.Uint32(p[32:]) == natFlagEgress
			if old != want.old || nw != want.new || mask != 0xffffffff || egress != c.src[i] {
				t.Errorf("%s: nat %d: %v -> %v mask %#x egress %v; want %v -> %v /32 egress %v", c.name, i, old, nw, mask, egress, want.old, want.new, c.src[i])
			}
		}
	}
	// Without act_nat: pedit and csum, as before.
	n.lay.nat = false
	r := hal.Rule{ID: 1, Priority: 1, Match: exact, Actions: []hal.Action{hal.SetIPDst(newDst), hal.Output(2)}}
	comp, err := compileRule(&n.lay, &r)
	if err != nil {
		t.Fatal(err)
	}
	if got := actionKinds(comp); len(got) != 3 || got[0] != "pedit" || got[1] != "csum" {
		t.Errorf("without act_nat: actions %v, want pedit, csum, mirred", got)
	}
}

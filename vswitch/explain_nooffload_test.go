package vswitch

import (
	"strings"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

// noExceptionNIC is a NIC without an exception path, as the switch sees it.
type noExceptionNIC struct{ hal.NIC }

func (n noExceptionNIC) Capabilities() hal.Capabilities {
	c := n.NIC.Capabilities()
	c.ExceptionPath = false
	return c
}

// Explain says which reason keeps a flow off the NIC: offload disabled by
// configuration, or a NIC without an exception path.
func TestExplainNoOffloadSaysWhy(t *testing.T) {
	for _, c := range []struct {
		name string
		o    topoOpts
		want string
	}{
		{"disabled", topoOpts{noOffload: true}, "offload is disabled by configuration"},
		{"no exception path", topoOpts{wrap: func(_ string, n hal.NIC) hal.NIC { return noExceptionNIC{n} }}, "the NIC has no exception path"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tp := newTopo(t, smallPolicy(t, nil), c.o)
			h1 := tp.byNm["h1"]
			frame := frameOf(udp(macVA1, macVA2, caVA1, caVA2, 7, 7))
			ex := h1.sw.ExplainFrame(h1.ports["va1"], frame)
			if ex.Where != PathHost || ex.Why != WhyNoOffload || !strings.HasPrefix(ex.Detail, c.want) {
				t.Fatalf("explain before the first packet: %v/%v %q, want host/%v %q…", ex.Where, ex.Why, ex.Detail, WhyNoOffload, c.want)
			}
			// The flow the first packet makes is explained the same.
			tp.send(h1, h1.ports["va1"], frame)
			ex = h1.sw.ExplainFrame(h1.ports["va1"], frame)
			if ex.Flow == nil || ex.Where != PathHost || ex.Why != WhyNoOffload || !strings.HasPrefix(ex.Detail, c.want) {
				t.Fatalf("explain after the first packet: flow %v, %v/%v %q, want host/%v %q…", ex.Flow, ex.Where, ex.Why, ex.Detail, WhyNoOffload, c.want)
			}
		})
	}
}

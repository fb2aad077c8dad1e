package conformance_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nicpath/nicpath/conformance"
	"github.com/nicpath/nicpath/conformance/internal/targets"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// filterNIC gives the reference NIC a tunnel filter in front of its ports,
// as hal.TunnelTerminator describes one: the harness's Send asks it about
// every frame before the NIC sees it. Its flaws are switches, to prove that
// the suite notices each.
type filterNIC struct {
	hal.NIC
	noInterface   bool // advertises TunnelFilter without implementing it
	off           bool // takes endpoints and filters nothing
	passBroadcast bool // lets frames for the broadcast address through
	ignoreMAC     bool // looks at the outer address only
	noCount       bool // drops without counting

	mu    sync.Mutex
	eps   map[hal.PortID]hal.TunnelEndpoint
	drops uint64
}

func (f *filterNIC) Capabilities() hal.Capabilities {
	c := f.NIC.Capabilities()
	c.TunnelFilter = true
	return c
}

func (f *filterNIC) SetTunnelEndpoint(ctx context.Context, ep hal.TunnelEndpoint) error {
	var port *hal.Port
	for _, p := range f.NIC.Ports() {
		if p.ID == ep.Port {
			port = &p
		}
	}
	if port == nil {
		return fmt.Errorf("port %d: %w", ep.Port, hal.ErrNotFound)
	}
	if ep.MAC.IsZero() {
		ep.MAC = port.MAC
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(ep.Addrs) == 0 || f.off {
		delete(f.eps, ep.Port)
		return nil
	}
	f.eps[ep.Port] = ep
	return nil
}

func (f *filterNIC) Stats(ctx context.Context) (hal.Stats, error) {
	s, err := f.NIC.Stats(ctx)
	f.mu.Lock()
	s.Drops[hal.ReasonNotLocal] += f.drops
	f.mu.Unlock()
	return s, err
}

// pass says whether frame, arriving on port, gets past the filter.
func (f *filterNIC) pass(port hal.PortID, frame []byte) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	ep, ok := f.eps[port]
	var k hal.FlowKey
	var l wire.Layout
	if !ok || wire.Parse(frame, port, &k, &l) != nil || k.TunKind == hal.EncapNone {
		return true
	}
	dst, mac := hal.AddrFrom16(k.TunDst), hal.MAC(frame[0:6])
	var foreign bool
	switch {
	case slices.Contains(ep.Addrs, dst):
		foreign = mac != ep.MAC
	case slices.Contains(ep.Groups, dst):
		foreign = mac != groupMAC(dst)
	case f.passBroadcast && mac == hal.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}:
		foreign = false
	default:
		foreign = true
	}
	if f.ignoreMAC && (slices.Contains(ep.Addrs, dst) || slices.Contains(ep.Groups, dst)) {
		foreign = false
	}
	if foreign && !f.noCount {
		f.drops++
	}
	return !foreign
}

func groupMAC(g netip.Addr) hal.MAC {
	if g.Is4() {
		a := g.As4()
		return hal.MAC{0x01, 0x00, 0x5e, a[1] & 0x7f, a[2], a[3]}
	}
	b := g.As16()
	return hal.MAC{0x33, 0x33, b[12], b[13], b[14], b[15]}
}

// withoutInterface hides SetTunnelEndpoint.
type withoutInterface struct{ hal.NIC }

type filterHarness struct {
	conformance.Harness
	f *filterNIC
}

func (h filterHarness) Send(port hal.PortID, frames ...[]byte) error {
	for _, fr := range frames {
		if !h.f.pass(port, fr) {
			continue
		}
		if err := h.Harness.Send(port, fr); err != nil {
			return err
		}
	}
	return nil
}

// filtering is softnic with a tunnel filter, broken as mod says.
func filtering(mod func(*filterNIC)) conformance.Target {
	tg := targets.Softnic()
	open := tg.Open
	tg.Name = "softnic+filter"
	// softnic has processed a frame when Send returns: what is not there
	// at once does not come.
	tg.Timeout = 200 * time.Millisecond
	tg.Open = func(ctx context.Context) (hal.NIC, conformance.Harness, error) {
		n, h, err := open(ctx)
		if err != nil {
			return nil, nil, err
		}
		f := &filterNIC{NIC: n, eps: map[hal.PortID]hal.TunnelEndpoint{}}
		if mod != nil {
			mod(f)
		}
		var nic hal.NIC = f
		if f.noInterface {
			nic = withoutInterface{f}
		}
		return nic, filterHarness{h, f}, nil
	}
	return tg
}

// noFilter is softnic as a NIC without a tunnel filter.
type noFilter struct{ hal.NIC }

func (n noFilter) Capabilities() hal.Capabilities {
	c := n.NIC.Capabilities()
	c.TunnelFilter = false
	return c
}

func TestTunnelEndpointSkipsWithoutFilter(t *testing.T) {
	tg := wrap("no filter", nil, func(n hal.NIC) hal.NIC { return noFilter{n} }, nil)
	rep := conformance.RunSuite(context.Background(), tg, conformance.Options{Run: "^tunnel-endpoint$"})
	c, ok := rep.Case("tunnel-endpoint")
	if !ok || c.Status != conformance.StatusSkip || c.Missing != "tunnel filter" || !strings.Contains(c.Reason, "needs tunnel filter") {
		t.Fatalf("tunnel-endpoint on a NIC without the filter: %+v; want a skip that names the capability", c)
	}
}

func TestTunnelEndpointPassesWithFilter(t *testing.T) {
	rep := conformance.RunSuite(context.Background(), filtering(nil), conformance.Options{Run: "^tunnel-endpoint$"})
	want := []string{"tunnel-endpoint", "tunnel-endpoint/vxlan/ipv4", "tunnel-endpoint/vxlan/ipv6", "tunnel-endpoint/geneve/ipv4",
		"tunnel-endpoint/geneve/ipv6", "tunnel-endpoint/nvgre/ipv4", "tunnel-endpoint/nvgre/ipv6", "tunnel-endpoint/replace"}
	for _, name := range want {
		if c, ok := rep.Case(name); !ok || c.Status != conformance.StatusPass {
			t.Errorf("%s: %+v, want a pass", name, c)
		}
	}
	if rep.Failed() {
		t.Errorf("summary %+v", rep.Summary)
	}
}

func TestTunnelEndpointCatchesBrokenFilters(t *testing.T) {
	tests := []struct {
		name     string
		mod      func(*filterNIC)
		fails    string
		reasonIn string
	}{
		{"no filter at all", func(f *filterNIC) { f.off = true }, "tunnel-endpoint/vxlan/ipv4", "another host's PA"},
		{"lets the broadcast through", func(f *filterNIC) { f.passBroadcast = true }, "tunnel-endpoint/vxlan/ipv4", "broadcast"},
		{"ignores the MAC", func(f *filterNIC) { f.ignoreMAC = true }, "tunnel-endpoint/geneve/ipv6", "another station's MAC"},
		{"does not count", func(f *filterNIC) { f.noCount = true }, "tunnel-endpoint/nvgre/ipv4", "not_local"},
		{"advertises what it lacks", func(f *filterNIC) { f.noInterface = true }, "tunnel-endpoint", "does not implement hal.TunnelTerminator"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Only the subcase that must fail: a broken filter fails every
			// subcase, each after waiting out the timeout.
			run := "^tunnel-endpoint$/" + strings.TrimPrefix(tc.fails, "tunnel-endpoint/")
			if tc.fails == "tunnel-endpoint" {
				run = "^tunnel-endpoint$/^$"
			}
			rep := conformance.RunSuite(context.Background(), filtering(tc.mod), conformance.Options{Run: run})
			c, ok := rep.Case(tc.fails)
			if !ok || c.Status != conformance.StatusFail || !strings.Contains(c.Reason, tc.reasonIn) {
				t.Errorf("%s: %+v; want a failure mentioning %q", tc.fails, c, tc.reasonIn)
			}
		})
	}
}

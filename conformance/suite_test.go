package conformance_test

import (
	"context"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/conformance"
	"github.com/nicpath/nicpath/conformance/internal/targets"
	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
)

// The suite passes against the reference NIC: the same run CI does in
// drivers/softnic, here through RunSuite so that the report is checked too.
func TestSuitePassesOnSoftnic(t *testing.T) {
	rep := conformance.RunSuite(context.Background(), targets.Softnic(), conformance.Options{})
	for _, c := range rep.Cases {
		if c.Status == conformance.StatusFail {
			t.Errorf("%s failed: %s", c.Name, c.Reason)
		}
	}
	if rep.Failed() || rep.Summary.Pass < 100 {
		t.Errorf("summary %+v", rep.Summary)
	}
	if len(rep.Matrix) == 0 || rep.Driver != "softnic" {
		t.Errorf("capability matrix %d rows, driver %q", len(rep.Matrix), rep.Driver)
	}
}

// A NIC that honestly reports fewer capabilities passes: each missing one is
// refused by Validate.
func TestSuitePassesOnReducedSoftnic(t *testing.T) {
	tg := targets.Softnic(func(c *softnic.Config) {
		c.Disable = softnic.Disable{
			MatchFields:  hal.MatchVLAN | hal.MatchTunSrc,
			MaskedFields: hal.MatchL4Src | hal.MatchIPv6Dst,
			Actions:      hal.ActionsOf(hal.ActionPushVLAN, hal.ActionDecTTL, hal.ActionDrop),
			Encaps:       hal.EncapsOf(hal.EncapGeneve, hal.EncapNVGRE),
			Generations:  true,
		}
	})
	rep := conformance.RunSuite(context.Background(), tg, conformance.Options{
		Run: `^(match|masked|action|encap|generations)$`,
	})
	for _, c := range rep.Cases {
		if c.Status == conformance.StatusFail {
			t.Errorf("%s failed: %s", c.Name, c.Reason)
		}
	}
	for _, name := range []string{"match/vlan", "masked/l4_src", "action/push_vlan", "encap/geneve", "generations/switch"} {
		c, ok := rep.Case(name)
		if !ok || c.Status != conformance.StatusPass || !strings.Contains(strings.Join(c.Log, "\n"), "refused as expected") {
			t.Errorf("%s: %+v; want a pass that saw the refusal", name, c)
		}
	}
}

// broken wraps a NIC and breaks one behaviour.
type broken struct {
	hal.NIC
	caps       func(hal.Capabilities) hal.Capabilities
	validate   func(r *hal.Rule) error
	counters   func([]hal.Counters)
	statsAfter bool // Stats keeps working after Close
	closed     bool
}

func (b *broken) Capabilities() hal.Capabilities {
	c := b.NIC.Capabilities()
	c.AtomicBatch = false     // the wrapper does not pass ApplyAtomic through
	c.AddressLearning = false // nor ReadLearned
	if b.caps != nil {
		c = b.caps(c)
	}
	return c
}

func (b *broken) Validate(r *hal.Rule) error {
	if b.validate != nil {
		return b.validate(r)
	}
	return b.NIC.Validate(r)
}

func (b *broken) RuleCounters(ctx context.Context, ids []hal.RuleID, out []hal.Counters) error {
	err := b.NIC.RuleCounters(ctx, ids, out)
	if b.counters != nil {
		b.counters(out)
	}
	return err
}

func (b *broken) Stats(ctx context.Context) (hal.Stats, error) {
	if b.statsAfter && b.closed {
		return hal.Stats{}, nil
	}
	return b.NIC.Stats(ctx)
}

func (b *broken) Close() error { b.closed = true; return b.NIC.Close() }

// corrupting flips the last byte of every frame emitted on one port.
type corrupting struct {
	conformance.Harness
	port hal.PortID
}

func (c *corrupting) Recv(ctx context.Context, port hal.PortID, max int) ([][]byte, error) {
	fs, err := c.Harness.Recv(ctx, port, max)
	if port == c.port {
		for _, f := range fs {
			f[len(f)-1] ^= 0xff
		}
	}
	return fs, err
}

func wrap(name string, mod func(*softnic.Config), nicw func(hal.NIC) hal.NIC, hw func(conformance.Harness) conformance.Harness) conformance.Target {
	var mods []func(*softnic.Config)
	if mod != nil {
		mods = append(mods, mod)
	}
	tg := targets.Softnic(mods...)
	open := tg.Open
	tg.Name = name
	tg.Open = func(ctx context.Context) (hal.NIC, conformance.Harness, error) {
		n, h, err := open(ctx)
		if err != nil {
			return nil, nil, err
		}
		if nicw != nil {
			n = nicw(n)
		}
		if hw != nil {
			h = hw(h)
		}
		return n, h, nil
	}
	return tg
}

// Each broken behaviour makes the case that checks it fail, and leaves a
// case that does not depend on it passing.
func TestSuiteCatchesBrokenNICs(t *testing.T) {
	tests := []struct {
		name     string
		target   conformance.Target
		run      string
		fails    []string
		stillOK  string
		reasonIn string
	}{
		{
			name:   "uplink corrupts payload",
			target: wrap("corrupt", nil, nil, func(h conformance.Harness) conformance.Harness { return &corrupting{h, 3} }),
			run:    `^(encap|action|sanity)$`, fails: []string{"encap/vxlan/ipv4", "action/output/udp4", "action/set_ip_dst/tcp4"},
			stillOK: "sanity", reasonIn: "",
		},
		{
			name: "rule counters off by one",
			target: wrap("counters", nil, func(n hal.NIC) hal.NIC {
				return &broken{NIC: n, counters: func(c []hal.Counters) {
					for i := range c {
						if c[i].Packets > 0 {
							c[i].Packets++
						}
					}
				}}
			}, nil),
			run: `^(counters|sanity)$`, fails: []string{"counters/rule"}, stillOK: "sanity", reasonIn: "rule counters",
		},
		{
			name: "advertises geneve it cannot do",
			target: wrap("geneve-lie", func(c *softnic.Config) { c.Disable.Encaps = hal.EncapsOf(hal.EncapGeneve) }, func(n hal.NIC) hal.NIC {
				return &broken{NIC: n, caps: func(c hal.Capabilities) hal.Capabilities {
					c.Encaps |= hal.EncapsOf(hal.EncapGeneve)
					return c
				}}
			}, nil),
			run: `^encap$`, fails: []string{"encap/geneve/ipv4"}, stillOK: "encap/vxlan/ipv4", reasonIn: "Validate",
		},
		{
			name: "accepts a vlan match it cannot do",
			target: wrap("validate-lie", func(c *softnic.Config) { c.Disable.MatchFields = hal.MatchVLAN }, func(n hal.NIC) hal.NIC {
				return &broken{NIC: n, validate: func(r *hal.Rule) error { return hal.CheckShape(r) }}
			}, nil),
			run: `^match$`, fails: []string{"match/vlan"}, stillOK: "match/eth_src", reasonIn: "not advertised",
		},
		{
			name: "works after Close",
			target: wrap("close", nil, func(n hal.NIC) hal.NIC {
				return &broken{NIC: n, statsAfter: true}
			}, nil),
			run: `^close$`, fails: []string{"close"}, reasonIn: "Stats after Close",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep := conformance.RunSuite(context.Background(), tc.target, conformance.Options{Run: tc.run})
			if !rep.Failed() {
				t.Fatalf("the broken NIC passed: %+v", rep.Summary)
			}
			for _, name := range tc.fails {
				c, ok := rep.Case(name)
				if !ok || c.Status != conformance.StatusFail {
					t.Errorf("%s: %+v, want a failure", name, c)
					continue
				}
				if !strings.Contains(c.Reason, tc.reasonIn) {
					t.Errorf("%s failed for %q, want a reason mentioning %q", name, c.Reason, tc.reasonIn)
				}
			}
			if tc.stillOK != "" {
				if c, _ := rep.Case(tc.stillOK); c.Status != conformance.StatusPass {
					t.Errorf("%s: %+v, want pass", tc.stillOK, c)
				}
			}
		})
	}
}

// A failure the target documents is reported, not failed.
func TestDocumentedDifference(t *testing.T) {
	tg := wrap("counters", nil, func(n hal.NIC) hal.NIC {
		return &broken{NIC: n, counters: func(c []hal.Counters) {
			for i := range c {
				c[i].Bytes += 4
			}
		}}
	}, nil)
	tg.Documented = []conformance.Difference{
		{Case: "counters/rule", Capability: "counters per rule", Reason: "counts the FCS"},
		{Case: "counters/rule-decap", Capability: "counters per rule", Reason: "counts the FCS"},
	}
	rep := conformance.RunSuite(context.Background(), tg, conformance.Options{Run: `^counters$`})
	c, _ := rep.Case("counters/rule")
	if c.Status != conformance.StatusDocumented || !strings.Contains(c.Reason, "counts the FCS") || c.Capability != "counters per rule" {
		t.Fatalf("counters/rule: %+v", c)
	}
	if rep.Failed() || rep.Summary.Documented != 2 {
		t.Fatalf("summary %+v", rep.Summary)
	}
	if c, _ := rep.Case("documented"); c.Status != conformance.StatusPass {
		t.Errorf("the list check: %+v", c)
	}
	if len(rep.Documented) != 2 {
		t.Errorf("the report carries %d documented differences, want 2", len(rep.Documented))
	}
}

// -run selects subcases the way go test does.
func TestRunPattern(t *testing.T) {
	rep := conformance.RunSuite(context.Background(), targets.Softnic(), conformance.Options{Run: "match/^(vlan|vni)$"})
	var names []string
	for _, c := range rep.Cases {
		names = append(names, c.Name)
	}
	if got := strings.Join(names, " "); got != "match match/vlan match/vni" {
		t.Errorf("ran %q", got)
	}
	rep = conformance.RunSuite(context.Background(), targets.Softnic(), conformance.Options{Run: "match/("})
	if rep.Error == "" || !rep.Failed() {
		t.Errorf("a bad pattern was not reported: %+v", rep)
	}
	rep = conformance.Differential(context.Background(), targets.Softnic(), targets.Softnic(), conformance.Options{Run: "miss|drop"})
	if len(rep.Cases) != 3 || rep.Failed() {
		t.Errorf("differential -run miss|drop: %+v", rep.Cases)
	}
}

package conformance_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/conformance"
	"github.com/nicpath/nicpath/conformance/internal/targets"
	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
)

// A documented case that passes fails the run, with the message that says
// what to do; the list only shrinks.
func TestDocumentedNowPasses(t *testing.T) {
	tg := targets.Softnic()
	tg.Documented = []conformance.Difference{{Case: "match/vlan", Capability: "match vlan", Reason: "said to differ"}}
	rep := conformance.RunSuite(context.Background(), tg, conformance.Options{Run: "^match$"})
	c, _ := rep.Case("match/vlan")
	if c.Status != conformance.StatusFail || c.Reason != "documented difference match/vlan now passes: remove it from the list" {
		t.Errorf("match/vlan: %+v", c)
	}
	if !rep.Failed() {
		t.Errorf("the run passed: %+v", rep.Summary)
	}
	// The parent fails with it: a subcase failed.
	if c, _ := rep.Case("match"); c.Status != conformance.StatusFail {
		t.Errorf("match: %+v", c)
	}
}

// The list is held to the suite: no patterns, a capability the matrix
// names, a reason, no name twice, no name that matches no case, no case
// that is skipped. An entry the run did not select is left alone.
func TestDocumentedListChecked(t *testing.T) {
	tg := targets.Softnic(func(c *softnic.Config) { c.Disable.Generations = true })
	tg.Documented = []conformance.Difference{
		{Case: "decap/*/*", Capability: "decap vxlan", Reason: "a pattern"},
		{Case: "match/vni", Capability: "match vni", Reason: "a pattern's case, exact"},
		{Case: "match/vni", Capability: "match vni", Reason: "twice"},
		{Case: "match/eth_src", Capability: "tunnels", Reason: "not a capability of the matrix"},
		{Case: "match/eth_dst", Capability: "match eth_dst"},
		{Case: "match/no_such_field", Capability: "match vlan", Reason: "no such subcase"},
		{Case: "nosuch/case", Capability: "match vlan", Reason: "no such case"},
		{Case: "generations/atomic", Capability: "generations", Reason: "skipped: softnic here has no generations"},
		{Case: "priority", Capability: "priorities", Reason: "not run: the pattern leaves it out"},
		{Case: "diff/miss", Capability: "exception path", Reason: "a differential scenario: not this mode's"},
	}
	rep := conformance.RunSuite(context.Background(), tg, conformance.Options{Run: "^(match|generations)$"})
	c, ok := rep.Case("documented")
	if !ok || c.Status != conformance.StatusFail {
		t.Fatalf("the list check: %+v", c)
	}
	for _, want := range []string{
		"documented difference decap/*/* is a pattern: name each case exactly",
		"documented difference match/vni is listed twice",
		`documented difference match/eth_src names capability "tunnels", which the capability matrix does not have`,
		"documented difference match/eth_dst gives no reason",
		"documented difference match/no_such_field matches no case: match has no such subcase",
		`documented difference nosuch/case matches no case: the suite has no case "nosuch"`,
		"documented difference generations/atomic was skipped (needs generations: the NIC has no generations): it does not differ here; remove it from the list",
	} {
		if !strings.Contains(c.Reason, want) {
			t.Errorf("the list check does not say %q:\n%s", want, c.Reason)
		}
	}
	for _, not := range []string{"priority", "diff/miss"} {
		if strings.Contains(c.Reason, "difference "+not+" ") {
			t.Errorf("the list check looked at %s, which the run did not select:\n%s", not, c.Reason)
		}
	}
	// The entries that name passing cases fail those cases too.
	for _, name := range []string{"match/vni", "match/eth_src", "match/eth_dst"} {
		if c, _ := rep.Case(name); c.Status != conformance.StatusFail || !strings.Contains(c.Reason, "now passes") {
			t.Errorf("%s: %+v", name, c)
		}
	}
	if !rep.Failed() {
		t.Errorf("a bad list passed: %+v", rep.Summary)
	}
}

// A NIC that advertises an encapsulation and refuses a variant of it (IPv6
// outer headers, Geneve options) fails those cases: the variant is part of
// the capability, not a reason to skip.
func TestVariantRefusalFails(t *testing.T) {
	refuse := func(r *hal.Rule) error {
		for _, a := range r.Actions {
			if a.Kind == hal.ActionEncap && a.Encap.Kind == hal.EncapGeneve && (len(a.Encap.GeneveOptions) > 0 || a.Encap.Src.Is6()) {
				return hal.Unsupported("fake", "actions encap geneve", "no options, no IPv6")
			}
		}
		return nil
	}
	tg := wrap("variant", nil, func(n hal.NIC) hal.NIC {
		return &broken{NIC: n, validate: func(r *hal.Rule) error {
			if err := refuse(r); err != nil {
				return err
			}
			return n.Validate(r)
		}}
	}, nil)
	rep := conformance.RunSuite(context.Background(), tg, conformance.Options{Run: "^encap$/geneve"})
	for _, name := range []string{"encap/geneve/options", "encap/geneve/ipv6"} {
		c, _ := rep.Case(name)
		if c.Status != conformance.StatusFail || !strings.Contains(c.Reason, "within the capabilities the NIC advertises") {
			t.Errorf("%s: %+v; want a failure that says the rule is within the advertised capabilities", name, c)
		}
	}
	if c, _ := rep.Case("encap/geneve/ipv4"); c.Status != conformance.StatusPass {
		t.Errorf("encap/geneve/ipv4: %+v", c)
	}
}

// Every skip names the capability the NIC lacks, by a name of the matrix:
// the whole suite against a softnic with much switched off.
func TestSkipsNameCapability(t *testing.T) {
	tg := targets.Softnic(func(c *softnic.Config) {
		c.Disable = softnic.Disable{
			MatchFields:  hal.MatchInPort | hal.MatchVNI | hal.MatchL4Dst,
			MaskedFields: hal.MatchIPv4Dst,
			Actions:      hal.ActionsOf(hal.ActionSetEthSrc, hal.ActionSetEthDst, hal.ActionDecap),
			Decaps:       hal.EncapsOf(hal.EncapVXLAN, hal.EncapGeneve, hal.EncapNVGRE),
			Generations:  true,
			TunnelFilter: true,
		}
	})
	// Every case but close: softnic with generations switched off answers
	// Activate after Close with ErrNotSupported rather than ErrClosed.
	var names []string
	for _, c := range conformance.Cases() {
		if c[0] != "close" {
			names = append(names, c[0])
		}
	}
	rep := conformance.RunSuite(context.Background(), tg, conformance.Options{Run: "^(" + strings.Join(names, "|") + ")$"})
	known := map[string]bool{}
	for _, n := range conformance.CapabilityNames() {
		known[n] = true
	}
	skips := map[string]int{}
	for _, c := range rep.Cases {
		if c.Status == conformance.StatusFail {
			t.Errorf("%s failed: %s", c.Name, c.Reason)
		}
		if c.Status != conformance.StatusSkip {
			continue
		}
		if c.Missing == "" {
			t.Errorf("%s skipped without naming a capability: %s", c.Name, c.Reason)
		}
		for _, m := range strings.Split(c.Missing, ", ") {
			if !known[m] {
				t.Errorf("%s skipped for %q, which is not a capability name", c.Name, m)
			}
			skips[m]++
		}
	}
	for _, want := range []string{"match l4_dst", "decap vxlan", "masked ipv4_dst", "action set_eth_dst", "generations", "tunnel filter"} {
		if skips[want] == 0 {
			t.Errorf("no case skipped for %s; skips: %v", want, skips)
		}
	}
}

// The differential mode skips a scenario whose rule needs a capability the
// target does not advertise, naming it and counting it, and fails one whose
// rule the target refuses although it advertises what the rule needs.
func TestDifferentialRefusals(t *testing.T) {
	tg := wrap("refuses decap", func(c *softnic.Config) { c.Disable.Encaps = hal.EncapsOf(hal.EncapGeneve) }, func(n hal.NIC) hal.NIC {
		return &broken{NIC: n, validate: func(r *hal.Rule) error {
			for _, a := range r.Actions {
				if a.Kind == hal.ActionDecap {
					return hal.Unsupported("fake", "actions decap", "refused although advertised")
				}
			}
			return n.Validate(r)
		}}
	}, nil)
	rep := conformance.Differential(context.Background(), targets.Softnic(), tg, conformance.Options{Run: "^(encap|decap)-"})
	for _, name := range []string{"diff/encap-geneve-ipv4", "diff/encap-geneve-ipv6"} {
		c, _ := rep.Case(name)
		if c.Status != conformance.StatusSkip || c.Missing != "encap geneve" || !strings.Contains(c.Reason, "does not advertise encap geneve") {
			t.Errorf("%s: %+v; want a skip naming encap geneve", name, c)
		}
	}
	if rep.Summary.Skip != 2 {
		t.Errorf("%d skips counted, want 2: %+v", rep.Summary.Skip, rep.Summary)
	}
	c, _ := rep.Case("diff/decap-vxlan")
	if c.Status != conformance.StatusFail || !strings.Contains(c.Reason, "within the capabilities it advertises") {
		t.Errorf("diff/decap-vxlan: %+v; want a failure", c)
	}
	if c, _ := rep.Case("diff/encap-vxlan-ipv4"); c.Status != conformance.StatusPass {
		t.Errorf("diff/encap-vxlan-ipv4: %+v", c)
	}
}

// Under go test, a documented case that passes fails its subtest with the
// message, and the list check is a subtest of its own. The run happens in
// a child process: a failing *testing.T cannot be had otherwise.
func TestRunFailsStaleDocumented(t *testing.T) {
	if os.Getenv("CONFORMANCE_STALE_CHILD") == "1" {
		tg := targets.Softnic()
		tg.Documented = []conformance.Difference{
			{Case: "sanity", Capability: "location", Reason: "said to differ"},
			{Case: "match/nosuch", Capability: "match vlan", Reason: "no such subcase"},
		}
		conformance.Run(t, tg)
		return
	}
	if testing.Short() {
		t.Skip("runs the suite in a child process")
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestRunFailsStaleDocumented$", "-test.v")
	cmd.Env = append(os.Environ(), "CONFORMANCE_STALE_CHILD=1")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("the child run with a stale list did not fail: %v\n%s", err, out)
	}
	for _, want := range []string{
		"documented difference sanity now passes: remove it from the list",
		"--- FAIL: TestRunFailsStaleDocumented/sanity",
		"--- FAIL: TestRunFailsStaleDocumented/documented",
		"documented difference match/nosuch matches no case: match has no such subcase",
		"--- PASS: TestRunFailsStaleDocumented/match/vlan",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the child's output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("child output:\n%s", out)
	}
}

// A skip for a capability the NIC lacks quotes what the NIC says of it in
// Capabilities.Notes (the note whose text before its colon names the
// capability, plural or not, in any case), and the capability matrix shows
// the note beside the row; a NIC that says nothing gets nothing invented.
func TestSkipQuotesTheNICsNote(t *testing.T) {
	const why = "Atomic Batches: no (no hal.AtomicApplier): each operation lands on its own"
	for _, c := range []struct {
		name  string
		notes []string
		want  string
	}{
		{"note", []string{"generations: fine", "atomic: a decoy", why}, why},
		{"no-note", []string{"atomic batching is planned"}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			tg := wrap("no atomic batches", nil, func(n hal.NIC) hal.NIC {
				return &broken{NIC: n, caps: func(caps hal.Capabilities) hal.Capabilities {
					caps.Notes = append(caps.Notes, c.notes...)
					return caps
				}}
			}, nil)
			rep := conformance.RunSuite(context.Background(), tg, conformance.Options{Run: "^rules$/^atomic$"})
			atomic, ok := rep.Case("rules/atomic")
			if !ok || atomic.Status != conformance.StatusSkip || atomic.Missing != "atomic batch" {
				t.Fatalf("rules/atomic: %+v; want a skip for atomic batch", atomic)
			}
			quoted := strings.Contains(atomic.Reason, "the NIC says: ")
			if c.want != "" && !strings.HasSuffix(atomic.Reason, "the NIC says: "+c.want) {
				t.Errorf("skip reason %q does not quote the NIC's note %q", atomic.Reason, c.want)
			}
			if c.want == "" && quoted {
				t.Errorf("skip reason %q quotes a note that does not speak of atomic batches", atomic.Reason)
			}
			var row *conformance.CapabilityRow
			for i := range rep.Matrix {
				if rep.Matrix[i].Capability == "atomic batch" {
					row = &rep.Matrix[i]
				}
			}
			if row == nil || row.Advertised || row.Detail != c.want {
				t.Errorf("matrix row %+v; want atomic batch not advertised, detail %q", row, c.want)
			}
		})
	}
}

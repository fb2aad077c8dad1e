package conformance

import (
	"fmt"
	"strings"

	"github.com/nicpath/nicpath/hal"
)

// Port needs: capabilities a NIC has by the ports it reports rather than by
// a bit of hal.Capabilities.
const (
	needVPort  = "vport"
	needUplink = "uplink"
)

// CapabilityNames lists the names the suite gives capabilities, in the
// capability matrix's order, followed by the port kinds a case may need:
// what a skip says is missing and what a Difference names.
func CapabilityNames() []string {
	var out []string
	for _, row := range matrix(&hal.Capabilities{}, nil) {
		out = append(out, row.Capability)
	}
	return append(out, needVPort, needUplink)
}

func knownCapability(name string) bool {
	for _, n := range CapabilityNames() {
		if n == name {
			return true
		}
	}
	return false
}

// need skips the calling case because the NIC does not advertise
// capability, which the case needs; capability is one of CapabilityNames,
// and the report carries it. It is the only way a case skips: a NIC that
// advertises a capability and then refuses a rule within it fails.
//
// When the NIC the case opened says why in its Capabilities.Notes (see
// noteOn), the skip quotes it, so that the report says why the NIC lacks
// the capability and not only that it does.
func need(t T, capability, format string, args ...any) {
	t.Helper()
	why := fmt.Sprintf(format, args...)
	if r, ok := t.(*record); ok {
		r.mu.Lock()
		r.missing = capability
		if n := noteOn(r.notes, capability); n != "" {
			why += "; the NIC says: " + n
		}
		r.mu.Unlock()
	}
	t.Skipf("needs %s: %s", capability, why)
}

// noteOn returns the note of notes that speaks of capability (one of
// CapabilityNames): the first whose text before its first colon is the
// capability's name, or its plural, in any case ("atomic batches: no
// (…)" speaks of "atomic batch"). "" when there is none.
func noteOn(notes []string, capability string) string {
	for _, n := range notes {
		head, _, ok := strings.Cut(n, ":")
		if !ok {
			continue
		}
		head = strings.TrimSpace(head)
		for _, name := range []string{capability, capability + "s", capability + "es"} {
			if strings.EqualFold(head, name) {
				return n
			}
		}
	}
	return ""
}

// matchNeed names the first field of missing as a capability.
func matchNeed(missing hal.MatchField) string {
	for i, n := range matchFieldNames {
		if missing&(hal.MatchField(1)<<i) != 0 {
			return "match " + n
		}
	}
	return "match " + missing.String()
}

// missingFor lists, by capability name, what r needs that caps does not
// advertise: the same ground hal.CheckCapabilities covers. Empty means r is
// within the advertised capabilities, and a NIC that refuses it fails.
func missingFor(caps *hal.Capabilities, r *hal.Rule) []string {
	var out []string
	if r.Match.Mask.TunKind != 0 && r.Match.Key.TunKind != hal.EncapNone && !caps.Decaps.Has(r.Match.Key.TunKind) {
		// Tunnel fields are parsed only for what the NIC decapsulates.
		out = append(out, "decap "+r.Match.Key.TunKind.String())
	}
	used := r.Match.Fields()
	for i, n := range matchFieldNames {
		if f := hal.MatchField(1) << i; used&f != 0 && !caps.HasMatch(f) {
			out = append(out, "match "+n)
		}
	}
	partial := r.Match.PartialFields()
	for i, n := range matchFieldNames {
		if f := hal.MatchField(1) << i; partial&f != 0 && caps.HasMatch(f) && caps.MaskedFields&f == 0 {
			out = append(out, "masked "+n)
		}
	}
	if (r.Scope != 0 || r.Generation != 0) && !caps.Generations {
		out = append(out, "generations")
	}
	for i := range r.Actions {
		a := &r.Actions[i]
		if !caps.HasAction(a.Kind) {
			out = append(out, "action "+a.Kind.String())
			continue
		}
		switch a.Kind {
		case hal.ActionEncap:
			if !caps.Encaps.Has(a.Encap.Kind) {
				out = append(out, "encap "+a.Encap.Kind.String())
			}
		case hal.ActionDecap:
			if !caps.Decaps.Has(r.Match.Key.TunKind) && !contains(out, "decap "+r.Match.Key.TunKind.String()) {
				out = append(out, "decap "+r.Match.Key.TunKind.String())
			}
		case hal.ActionToHost:
			if !caps.ExceptionPath {
				out = append(out, "exception path")
			}
		}
	}
	return out
}

// checkDifferences checks a target's list on its own: exact names, a
// capability the matrix names, a reason, no name twice.
func checkDifferences(ds []Difference) []string {
	var bad []string
	seen := map[string]bool{}
	for _, d := range ds {
		switch {
		case d.Case == "":
			bad = append(bad, fmt.Sprintf("a documented difference has no case name (reason %q)", d.Reason))
			continue
		case strings.ContainsAny(d.Case, "*?[]\\"):
			bad = append(bad, fmt.Sprintf("documented difference %s is a pattern: name each case exactly", d.Case))
		case seen[d.Case]:
			bad = append(bad, fmt.Sprintf("documented difference %s is listed twice", d.Case))
		}
		seen[d.Case] = true
		if !knownCapability(d.Capability) {
			bad = append(bad, fmt.Sprintf("documented difference %s names capability %q, which the capability matrix does not have", d.Case, d.Capability))
		}
		if strings.TrimSpace(d.Reason) == "" {
			bad = append(bad, fmt.Sprintf("documented difference %s gives no reason", d.Case))
		}
	}
	return bad
}

// documentedProblems holds tg's list to a run's results: results are every
// case and subcase that ran, ranTop the top-level cases that ran and
// selected the names the run's pattern selects (a list entry the run did
// not select is not looked at), tops the names a top-level case may have.
// It returns what is wrong, one line each. A documented case that passes
// is failed by resultOf, in place.
func documentedProblems(tg *Target, results []CaseResult, ranTop, tops map[string]bool, selected func(string) bool) []string {
	bad := checkDifferences(tg.Documented)
	byName := map[string]CaseResult{}
	for _, c := range results {
		byName[c.Name] = c
	}
	for _, d := range tg.Documented {
		if d.Case == "" {
			continue
		}
		top, _, _ := strings.Cut(d.Case, "/")
		if !tops[top] {
			bad = append(bad, fmt.Sprintf("documented difference %s matches no case: the suite has no case %q", d.Case, top))
			continue
		}
		if !ranTop[top] || (selected != nil && !selected(d.Case)) {
			continue // not selected in this run
		}
		if c, ok := byName[d.Case]; ok {
			if c.Status == StatusSkip {
				bad = append(bad, fmt.Sprintf("documented difference %s was skipped (%s): it does not differ here; remove it from the list", d.Case, c.Reason))
			}
			continue
		}
		// Not there: look at the nearest ancestor that ran.
		anc := d.Case
		for {
			i := strings.LastIndex(anc, "/")
			if i < 0 {
				break
			}
			anc = anc[:i]
			if c, ok := byName[anc]; ok {
				switch c.Status {
				case StatusSkip:
					bad = append(bad, fmt.Sprintf("documented difference %s did not run: %s was skipped (%s); remove it from the list", d.Case, anc, c.Reason))
				case StatusFail, StatusDocumented:
					if c.own {
						// The ancestor's own failure may have ended it
						// before the subcase; the run fails on it
						// already, and the entry may be right once it
						// runs.
						break
					}
					bad = append(bad, fmt.Sprintf("documented difference %s matches no case: %s has no such subcase", d.Case, anc))
				default:
					bad = append(bad, fmt.Sprintf("documented difference %s matches no case: %s has no such subcase", d.Case, anc))
				}
				break
			}
		}
	}
	return bad
}

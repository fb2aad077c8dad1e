package conformance

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
)

// caseDef is one top-level case.
type caseDef struct {
	name string
	doc  string
	run  func(t T, tg *Target)
}

// cases lists the suite in the order it runs. It is filled by the cases_*.go
// files' init functions, in file order, then sorted by registration order.
var cases []caseDef

func register(name, doc string, run func(t T, tg *Target)) {
	cases = append(cases, caseDef{name: name, doc: doc, run: run})
}

// Cases lists the names and descriptions of the suite's top-level cases.
func Cases() [][2]string {
	out := make([][2]string, len(cases))
	for i, c := range cases {
		out[i] = [2]string{c.name, c.doc}
	}
	return out
}

// Options tune RunSuite.
type Options struct {
	// Run selects cases as go test's -run does: the pattern is split at
	// '/', and each element must match the case (or subcase) name at that
	// level ("match/vlan|vni", "^encap$/geneve"). Empty runs every case.
	Run string
	// Progress, when set, gets one line per finished case or subcase.
	Progress io.Writer
	// CaseTimeout bounds one top-level case (default: the target's
	// CaseTimeout, else 3 minutes).
	CaseTimeout time.Duration
}

func (o *Options) caseTimeout(tg *Target) time.Duration {
	if o.CaseTimeout > 0 {
		return o.CaseTimeout
	}
	if tg.CaseTimeout > 0 {
		return tg.CaseTimeout
	}
	return 3 * time.Minute
}

// filter compiles o.Run into one expression per level.
func (o *Options) filter() ([]*regexp.Regexp, error) {
	if o.Run == "" {
		return nil, nil
	}
	var out []*regexp.Regexp
	for _, el := range splitPattern(o.Run) {
		re, err := regexp.Compile(el)
		if err != nil {
			return nil, fmt.Errorf("run pattern %q: %w", o.Run, err)
		}
		out = append(out, re)
	}
	return out, nil
}

// CheckRunPattern says whether p is a valid Options.Run pattern.
func CheckRunPattern(p string) error {
	_, err := (&Options{Run: p}).filter()
	return err
}

// splitPattern splits at the slashes that are not inside brackets or
// parentheses, as package testing does.
func splitPattern(p string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '[', '(':
			depth++
		case ']', ')':
			if depth > 0 {
				depth--
			}
		case '\\':
			i++
		case '/':
			if depth == 0 {
				out = append(out, p[start:i])
				start = i + 1
			}
		}
	}
	return append(out, p[start:])
}

// Run runs the whole suite against target as subtests of t, one subtest per
// case and per subcase, as a driver's own tests do:
//
//	func TestConformance(t *testing.T) { conformance.Run(t, target) }
//
// A failing case fails t; a case named in target.Documented that fails is
// skipped with the documented reason, and one that passes fails t
// ("documented difference X now passes: remove it from the list"); a case
// the NIC lacks a capability for is skipped with the capability named. A
// last subtest, "documented", checks the list itself against the cases that
// ran (see Difference).
func Run(t *testing.T, target Target) {
	t.Helper()
	if target.Open == nil {
		t.Fatal("conformance: Target.Open is nil")
	}
	env := HostEnvironment()
	if target.Devices != nil {
		env.Devices, env.DevicesError = devicesOf(t.Context(), &target)
	}
	t.Logf("environment: %s", env.String())
	ran := map[string]bool{}
	var results []CaseResult
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ran[c.name] = true
			rec := runCase(t.Context(), &target, c, &Options{})
			results = append(results, flatten(&target, rec, nil)...)
			replay(t, &target, rec)
		})
	}
	checkDocumentedT(t, &target, results, ran, caseNames())
	sum := Report{Cases: results}
	sum.summarize()
	t.Logf("%s: %d cases and subcases: %d pass, %d fail, %d skip, %d documented", target.Name,
		sum.Summary.Total, sum.Summary.Pass, sum.Summary.Fail, sum.Summary.Skip, sum.Summary.Documented)
}

// checkDocumentedT reports the problems of target's list as a subtest.
func checkDocumentedT(t *testing.T, tg *Target, results []CaseResult, ran, tops map[string]bool) {
	t.Helper()
	if len(tg.Documented) == 0 {
		return
	}
	t.Run("documented", func(t *testing.T) {
		for _, p := range documentedProblems(tg, results, ran, tops, nil) {
			t.Error(p)
		}
		for _, d := range tg.Documented {
			t.Logf("documented difference %s (%s): %s", d.Case, d.Capability, d.Reason)
		}
	})
}

// caseNames are the names a top-level case may have: the suite's cases and
// the differential mode's "diff".
func caseNames() map[string]bool {
	out := map[string]bool{"diff": true}
	for _, c := range cases {
		out[c.name] = true
	}
	return out
}

// documentedCase is the report's verdict on target's list: a "documented"
// case that fails with every problem, or passes when the list names exactly
// cases that fail here. No list, no case.
func documentedCase(tg *Target, results []CaseResult, ran map[string]bool, selected func(string) bool) []CaseResult {
	if len(tg.Documented) == 0 {
		return nil
	}
	res := CaseResult{Name: "documented", Status: StatusPass}
	for _, d := range tg.Documented {
		res.Log = append(res.Log, fmt.Sprintf("%s (%s): %s", d.Case, d.Capability, d.Reason))
	}
	if bad := documentedProblems(tg, results, ran, caseNames(), selected); len(bad) > 0 {
		res.Status = StatusFail
		res.Reason = strings.Join(bad, "; ")
		for _, b := range bad {
			res.Log = append(res.Log, "FAIL: "+b)
		}
	}
	return []CaseResult{res}
}

// runCase runs one top-level case on a fresh record, writing a progress
// line as it and each of its subcases end.
func runCase(ctx context.Context, tg *Target, c caseDef, o *Options) *record {
	ctx, cancel := context.WithTimeout(ctx, o.caseTimeout(tg))
	defer cancel()
	rec := newRecord(ctx, c.name)
	rec.filter, _ = o.filter() // RunSuite reported a bad pattern already
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "%-10s %s\n", "RUN", c.name)
		rec.done = func(r *record) { progress(o.Progress, resultOf(tg, r)) }
	}
	rec.exec(func(r *record) { c.run(r, tg) }, o.caseTimeout(tg)+5*time.Second)
	return rec
}

// replay reports a recorded case to a *testing.T, subcases as subtests.
func replay(t *testing.T, tg *Target, r *record) {
	t.Helper()
	res := resultOf(tg, r)
	r.mu.Lock()
	logs, children := append([]string(nil), r.logs...), append([]*record(nil), r.children...)
	r.mu.Unlock()
	for _, l := range logs {
		t.Log(l)
	}
	for _, c := range children {
		short := c.name[strings.LastIndex(c.name, "/")+1:]
		t.Run(short, func(t *testing.T) { replay(t, tg, c) })
	}
	switch res.Status {
	case StatusFail:
		if r.ownFailed() {
			t.Fail()
		} else if _, ok := tg.documented(r.name); ok {
			t.Error(res.Reason)
		}
	case StatusDocumented:
		t.Skipf("documented difference (%s): %s", res.Capability, res.Reason)
	case StatusSkip:
		t.Skip(res.Reason)
	}
}

func (r *record) ownFailed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

// resultOf computes a record's status: its own failures (documented or
// not), then its subcases' (a documented subcase does not fail its parent),
// then a skip. A documented case that did not fail, and was not skipped,
// fails: the list says it differs, and it does not.
func resultOf(tg *Target, r *record) CaseResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := CaseResult{Name: r.name, Seconds: r.dur.Seconds(), Log: append([]string(nil), r.logs...)}
	childFailed := false
	allSkipped := len(r.children) > 0
	var missing []string
	for _, c := range r.children {
		cr := resultOf(tg, c)
		if cr.Status == StatusFail {
			childFailed = true
		}
		if cr.Status != StatusSkip {
			allSkipped = false
		} else if cr.Missing != "" && !contains(missing, cr.Missing) {
			missing = append(missing, cr.Missing)
		}
	}
	d, documented := tg.documented(r.name)
	res.own = r.failed
	switch {
	case r.failed:
		res.Status = StatusFail
		res.Reason = strings.Join(r.failures, "; ")
		if documented {
			res.Status = StatusDocumented
			res.Capability = d.Capability
			res.Reason = d.Reason + " (failures: " + res.Reason + ")"
		}
	case childFailed:
		res.Status = StatusFail
		res.Reason = "a subcase failed"
	case r.skipped:
		res.Status = StatusSkip
		res.Reason = r.skip
		res.Missing = r.missing
	case allSkipped:
		res.Status = StatusSkip
		res.Reason = "every subcase skipped"
		if len(missing) > 0 {
			res.Missing = strings.Join(missing, ", ")
			res.Reason += ": needs " + res.Missing
		}
	default:
		res.Status = StatusPass
	}
	if documented && !r.failed && res.Status != StatusSkip {
		stale := "documented difference " + r.name + " now passes: remove it from the list"
		if res.Status == StatusFail {
			stale += "; " + res.Reason
		}
		res.Status, res.Reason = StatusFail, stale
	}
	return res
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

// flatten lists r and its subcases, depth first.
func flatten(tg *Target, r *record, out []CaseResult) []CaseResult {
	out = append(out, resultOf(tg, r))
	r.mu.Lock()
	children := append([]*record(nil), r.children...)
	r.mu.Unlock()
	for _, c := range children {
		out = flatten(tg, c, out)
	}
	return out
}

// RunSuite runs the suite against target without package testing, for the
// runner binary and for tests that check the suite itself, and returns the
// report. It never panics on a driver's failure; an error opening the target
// is reported in Report.Error and as a failed "open" case.
func RunSuite(ctx context.Context, target Target, opts Options) *Report {
	rep := &Report{Target: target.Name, Mode: ModeSuite, Started: time.Now().UTC()}
	begin := time.Now()
	defer func() { rep.Seconds = time.Since(begin).Seconds() }()
	rep.Environment = HostEnvironment()
	caps, err := probeCaps(ctx, &target)
	if err != nil {
		rep.Error = err.Error()
		rep.Cases = append(rep.Cases, CaseResult{Name: "open", Status: StatusFail, Reason: err.Error()})
		rep.summarize()
		progress(opts.Progress, rep.Cases[0])
		return rep
	}
	rep.Capabilities = &caps
	if target.Devices != nil {
		rep.Environment.Devices, rep.Environment.DevicesError = devicesOf(ctx, &target)
	}
	filter, err := opts.filter()
	if err != nil {
		rep.Error = err.Error()
		rep.summarize()
		return rep
	}
	ran := map[string]bool{}
	for _, c := range cases {
		if len(filter) > 0 && !filter[0].MatchString(c.name) {
			continue
		}
		ran[c.name] = true
		rec := runCase(ctx, &target, c, &opts)
		rep.Cases = append(rep.Cases, flatten(&target, rec, nil)...)
		if ctx.Err() != nil {
			break
		}
	}
	dc := documentedCase(&target, rep.Cases, ran, selects(filter))
	rep.Cases = append(rep.Cases, dc...)
	for _, c := range dc {
		progress(opts.Progress, c)
	}
	rep.Documented = append([]Difference(nil), target.Documented...)
	rep.Matrix = matrix(&caps, rep.Cases)
	rep.summarize()
	return rep
}

// selects says whether a run filtered by filter selects the case named
// name: each element of the name must match the filter's element at its
// level.
func selects(filter []*regexp.Regexp) func(string) bool {
	return func(name string) bool {
		for i, el := range strings.Split(name, "/") {
			if i < len(filter) && !filter[i].MatchString(el) {
				return false
			}
		}
		return true
	}
}

// devicesOf asks the target for its devices, bounded in time.
func devicesOf(ctx context.Context, tg *Target) ([]DeviceInfo, string) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ds, err := tg.Devices(ctx)
	if err != nil {
		return ds, err.Error()
	}
	return ds, ""
}

// probeCaps opens the target once to read what it advertises.
func probeCaps(ctx context.Context, tg *Target) (hal.Capabilities, error) {
	if tg.Open == nil {
		return hal.Capabilities{}, fmt.Errorf("target %q has no Open", tg.Name)
	}
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	nic, h, err := tg.Open(octx)
	if err != nil {
		return hal.Capabilities{}, fmt.Errorf("opening %s: %w", tg.Name, err)
	}
	caps := nic.Capabilities()
	err = nic.Close()
	if herr := h.Close(); err == nil {
		err = herr
	}
	if err != nil {
		return caps, fmt.Errorf("closing %s after reading its capabilities: %w", tg.Name, err)
	}
	return caps, nil
}

func progress(w io.Writer, r CaseResult) {
	if w == nil {
		return
	}
	line := fmt.Sprintf("%-10s %s (%.3fs)", strings.ToUpper(string(r.Status)), r.Name, r.Seconds)
	if r.Reason != "" && r.Status != StatusPass {
		reason := r.Reason
		if len(reason) > 160 {
			reason = reason[:160] + "…"
		}
		line += ": " + strings.ReplaceAll(reason, "\n", " ")
	}
	fmt.Fprintln(w, line)
}

package conformance

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nicpath/nicpath/hal"
)

// Status is a case's outcome.
type Status string

const (
	StatusPass Status = "pass"
	StatusFail Status = "fail"
	StatusSkip Status = "skip"
	// StatusDocumented is a failure, or a differential mismatch, that the
	// target documents (Target.Documented); it does not fail the run.
	StatusDocumented Status = "documented"
)

// Modes of a report.
const (
	ModeSuite        = "suite"
	ModeDifferential = "differential"
)

// CaseResult is one case or subcase in a report. Name is a path: a subcase
// of "match" is "match/vlan".
type CaseResult struct {
	Name    string  `json:"name"`
	Status  Status  `json:"status"`
	Seconds float64 `json:"duration_seconds"`
	Reason  string  `json:"reason,omitempty"` // why it failed, skipped or is documented
	// Missing is, for a skip, the capability the NIC does not advertise
	// that the case needs (one of CapabilityNames; several, comma
	// separated, for a case all of whose subcases skipped).
	Missing string `json:"missing,omitempty"`
	// Capability is, for a documented difference, the capability whose
	// behaviour differs (Difference.Capability).
	Capability string   `json:"capability,omitempty"`
	Log        []string `json:"log,omitempty"`

	own bool // the case itself failed (not only a subcase)
}

// CapabilityRow is one line of the capability matrix: what the NIC
// advertises and the case that verified it.
type CapabilityRow struct {
	Capability string `json:"capability"`
	Advertised bool   `json:"advertised"`
	Detail     string `json:"detail,omitempty"`
	Case       string `json:"case,omitempty"`   // the case that checks it, with traffic or with Validate
	Status     Status `json:"status,omitempty"` // that case's outcome; empty when it did not run
}

// Summary counts cases by status, over every case and subcase.
type Summary struct {
	Total      int `json:"total"`
	Pass       int `json:"pass"`
	Fail       int `json:"fail"`
	Skip       int `json:"skip"`
	Documented int `json:"documented"`
}

// Report is the outcome of a run.
type Report struct {
	Target       string            `json:"target"`
	Reference    string            `json:"reference,omitempty"` // the differential mode's reference
	Mode         string            `json:"mode"`
	Started      time.Time         `json:"started"`
	Seconds      float64           `json:"duration_seconds"`
	Error        string            `json:"error,omitempty"`
	Environment  *Environment      `json:"environment,omitempty"`
	Capabilities *hal.Capabilities `json:"-"`
	Driver       string            `json:"driver,omitempty"`
	Device       string            `json:"device,omitempty"`
	Location     string            `json:"location,omitempty"`
	Notes        []string          `json:"notes,omitempty"`
	Matrix       []CapabilityRow   `json:"capabilities"`
	Cases        []CaseResult      `json:"cases"`
	// Documented is the target's list of documented differences; the
	// "documented" case says whether it held.
	Documented []Difference `json:"documented,omitempty"`
	Summary    Summary      `json:"summary"`
}

// Failed reports whether any case failed or the target could not be opened.
func (r *Report) Failed() bool { return r.Error != "" || r.Summary.Fail > 0 }

// Case returns the result of the case named name.
func (r *Report) Case(name string) (CaseResult, bool) {
	for _, c := range r.Cases {
		if c.Name == name {
			return c, true
		}
	}
	return CaseResult{}, false
}

func (r *Report) summarize() {
	r.Summary = Summary{}
	for _, c := range r.Cases {
		r.Summary.Total++
		switch c.Status {
		case StatusPass:
			r.Summary.Pass++
		case StatusFail:
			r.Summary.Fail++
		case StatusSkip:
			r.Summary.Skip++
		case StatusDocumented:
			r.Summary.Documented++
		}
	}
	if c := r.Capabilities; c != nil {
		r.Driver, r.Device, r.Location, r.Notes = c.Driver, c.Device, c.Location.String(), c.Notes
	}
}

// matrix builds the capability matrix from caps and the cases that checked
// each item.
func matrix(caps *hal.Capabilities, results []CaseResult) []CapabilityRow {
	status := map[string]Status{}
	for _, c := range results {
		status[c.Name] = c.Status
	}
	var rows []CapabilityRow
	add := func(name string, adv bool, detail, cs string) {
		// What the NIC says of the capability, beside the row: why it
		// lacks it, or what bounds it.
		if n := noteOn(caps.Notes, name); n != "" {
			if detail != "" {
				detail += "; "
			}
			detail += n
		}
		rows = append(rows, CapabilityRow{Capability: name, Advertised: adv, Detail: detail, Case: cs, Status: status[cs]})
	}
	add("location", true, caps.Location.String(), "")
	add("max rules", caps.MaxRules > 0, fmt.Sprint(caps.MaxRules), "table/full")
	add("max batch", caps.MaxBatch > 0, fmt.Sprint(caps.MaxBatch), "rules/batch")
	for i, n := range matchFieldNames {
		f := hal.MatchField(1) << i
		add("match "+n, caps.MatchFields&f != 0, "", "match/"+n)
	}
	for i, n := range matchFieldNames {
		f := hal.MatchField(1) << i
		if _, ok := maskable[f]; ok {
			add("masked "+n, caps.MaskedFields&f != 0, "", "masked/"+n)
		}
	}
	add("priorities", caps.Priorities, "", "priority")
	for _, k := range allActions {
		add("action "+k.String(), caps.Actions.Has(k), "", "action/"+k.String())
	}
	for _, k := range allEncaps {
		add("encap "+k.String(), caps.Encaps.Has(k), "", "encap/"+k.String())
	}
	for _, k := range allEncaps {
		add("decap "+k.String(), caps.Decaps.Has(k), "", "decap/"+k.String())
	}
	add("counters per rule", caps.Counters.PerRule, "", "counters/rule")
	add("counters per port", caps.Counters.PerPort, "", "counters/port")
	add("byte counters include L2", caps.Counters.BytesIncludeL2, "", "counters/rule")
	add("generations", caps.Generations, fmt.Sprintf("scopes %d (0 = unlimited)", caps.MaxScopes), "generations/switch")
	add("exception path", caps.ExceptionPath, "", "exception/miss")
	// A tunnelled frame no rule takes reaches the host (decap's miss half)
	// unless the NIC says it cannot hand such frames on.
	add("tunnelled misses to the host", caps.ExceptionPath && !caps.TunnelMissesUnseen, "", "decap/vxlan")
	add("atomic batch", caps.AtomicBatch, "", "rules/atomic")
	add("crypto (sealed addresses)", caps.Crypto, "", "sealed")
	add("sealed drop", caps.SealedDrop, "", "sealed")
	add("tunnel filter", caps.TunnelFilter, "", "tunnel-endpoint")
	add("address learning", caps.AddressLearning, "", "learning")
	return rows
}

var matchFieldNames = [...]string{
	"in_port", "eth_src", "eth_dst", "eth_type", "vlan", "ipv4_src", "ipv4_dst",
	"ipv6_src", "ipv6_dst", "ip_proto", "l4_src", "l4_dst", "vni", "tun_src", "tun_dst", "tun_kind",
}

var allEncaps = []hal.EncapKind{hal.EncapVXLAN, hal.EncapGeneve, hal.EncapNVGRE}

var allActions = []hal.ActionKind{hal.ActionDecap, hal.ActionSetEthSrc, hal.ActionSetEthDst,
	hal.ActionSetIPSrc, hal.ActionSetIPDst, hal.ActionSetL4Src, hal.ActionSetL4Dst, hal.ActionDecTTL,
	hal.ActionPushVLAN, hal.ActionPopVLAN, hal.ActionEncap, hal.ActionCount, hal.ActionOutput,
	hal.ActionDrop, hal.ActionToHost}

// WriteJSON writes r as indented JSON.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// JUnit XML, the dialect Jenkins, GitLab and GitHub test reporters read.
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Errors   int          `xml:"errors,attr"`
	Skipped  int          `xml:"skipped,attr"`
	Time     string       `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name       string          `xml:"name,attr"`
	Tests      int             `xml:"tests,attr"`
	Failures   int             `xml:"failures,attr"`
	Errors     int             `xml:"errors,attr"`
	Skipped    int             `xml:"skipped,attr"`
	Time       string          `xml:"time,attr"`
	Timestamp  string          `xml:"timestamp,attr"`
	Properties []junitProperty `xml:"properties>property,omitempty"`
	Cases      []junitCase     `xml:"testcase"`
}

type junitProperty struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitMessage `xml:"failure,omitempty"`
	Error     *junitMessage `xml:"error,omitempty"`
	Skipped   *junitMessage `xml:"skipped,omitempty"`
	SystemOut string        `xml:"system-out,omitempty"`
}

type junitMessage struct {
	Message string `xml:"message,attr"`
	Body    string `xml:",chardata"`
}

func secs(s float64) string { return fmt.Sprintf("%.3f", s) }

// WriteJUnit writes r as JUnit XML: one testsuite named after the target,
// one testcase per case and subcase. Documented differences are skipped
// testcases whose message says "documented difference".
func WriteJUnit(w io.Writer, r *Report) error {
	s := junitSuite{Name: "nicpath conformance: " + r.Target, Time: secs(r.Seconds), Timestamp: r.Started.UTC().Format(time.RFC3339)}
	s.Properties = append(s.Properties, junitProperty{"mode", r.Mode})
	if r.Reference != "" {
		s.Properties = append(s.Properties, junitProperty{"reference", r.Reference})
	}
	if r.Driver != "" {
		s.Properties = append(s.Properties, junitProperty{"driver", r.Driver}, junitProperty{"device", r.Device})
	}
	if e := r.Environment; e != nil {
		if e.Kernel != "" {
			s.Properties = append(s.Properties, junitProperty{"kernel", e.Kernel})
		}
		s.Properties = append(s.Properties, junitProperty{"platform", e.OS + "/" + e.Arch},
			junitProperty{"go", e.Go}, junitProperty{"library", e.library()})
		for _, d := range e.Devices {
			s.Properties = append(s.Properties, junitProperty{"device " + d.Interface, d.String()})
		}
		if e.DevicesError != "" {
			s.Properties = append(s.Properties, junitProperty{"devices error", e.DevicesError})
		}
	}
	for _, d := range r.Documented {
		s.Properties = append(s.Properties, junitProperty{"documented " + d.Case, d.Capability + ": " + d.Reason})
	}
	for _, row := range r.Matrix {
		v := "no"
		if row.Advertised {
			v = "yes"
		}
		if row.Detail != "" {
			v += " (" + row.Detail + ")"
		}
		s.Properties = append(s.Properties, junitProperty{"capability " + row.Capability, v})
	}
	classname := "conformance." + strings.ReplaceAll(r.Target, " ", "_")
	for _, c := range r.Cases {
		jc := junitCase{Name: c.Name, Classname: classname, Time: secs(c.Seconds)}
		switch c.Status {
		case StatusFail:
			jc.Failure = &junitMessage{Message: firstLine(c.Reason), Body: strings.Join(c.Log, "\n")}
			s.Failures++
		case StatusSkip:
			jc.Skipped = &junitMessage{Message: firstLine(c.Reason)}
			if c.Missing != "" {
				jc.Skipped.Body = "missing capability: " + c.Missing
			}
			s.Skipped++
		case StatusDocumented:
			jc.Skipped = &junitMessage{Message: "documented difference (" + c.Capability + "): " + firstLine(c.Reason), Body: strings.Join(c.Log, "\n")}
			s.Skipped++
		}
		if c.Status == StatusPass && len(c.Log) > 0 {
			jc.SystemOut = strings.Join(c.Log, "\n")
		}
		s.Cases = append(s.Cases, jc)
		s.Tests++
	}
	if r.Error != "" {
		s.Errors++
	}
	all := junitSuites{Name: "nicpath conformance", Tests: s.Tests, Failures: s.Failures, Errors: s.Errors,
		Skipped: s.Skipped, Time: s.Time, Suites: []junitSuite{s}}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(all); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// mdEscape keeps a table cell one cell.
func mdEscape(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.ReplaceAll(s, "<", "&lt;")
	s = strings.ReplaceAll(s, ">", "&gt;")
	return s
}

var statusMark = map[Status]string{
	StatusPass: "✅ pass", StatusFail: "❌ fail", StatusSkip: "⏭ skip", StatusDocumented: "📝 documented",
}

// WriteMarkdown writes r as a Markdown page a person reads: a summary, the
// environment, the capability matrix, every case with its outcome (a skip
// with the capability it needs, a documented difference with its
// capability and reason), the capabilities whose absence skipped cases,
// and the target's documented differences.
func WriteMarkdown(w io.Writer, r *Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# nicpath conformance: %s\n\n", mdEscape(r.Target))
	fmt.Fprintf(&b, "- mode: %s\n", r.Mode)
	if r.Reference != "" {
		fmt.Fprintf(&b, "- reference: %s\n", r.Reference)
	}
	if r.Driver != "" {
		fmt.Fprintf(&b, "- driver: %s (%s), rules live in %s\n", r.Driver, mdEscape(r.Device), r.Location)
	}
	fmt.Fprintf(&b, "- started: %s, took %.1fs\n", r.Started.UTC().Format(time.RFC3339), r.Seconds)
	fmt.Fprintf(&b, "- result: **%s**: %d cases, %d pass, %d fail, %d skip, %d documented\n",
		map[bool]string{true: "FAIL", false: "PASS"}[r.Failed()], r.Summary.Total, r.Summary.Pass, r.Summary.Fail, r.Summary.Skip, r.Summary.Documented)
	if r.Error != "" {
		fmt.Fprintf(&b, "- error: %s\n", mdEscape(r.Error))
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "- note: %s\n", mdEscape(n))
	}
	if e := r.Environment; e != nil {
		b.WriteString("\n## Environment\n\n")
		if e.Kernel != "" {
			fmt.Fprintf(&b, "- kernel: %s\n", mdEscape(e.Kernel))
		}
		fmt.Fprintf(&b, "- platform: %s/%s, %s\n", e.OS, e.Arch, mdEscape(e.Go))
		fmt.Fprintf(&b, "- library: %s\n", mdEscape(e.library()))
		if len(e.Devices) > 0 {
			b.WriteString("\n| interface | role | driver | version | firmware | bus |\n| --- | --- | --- | --- | --- | --- |\n")
			for _, d := range e.Devices {
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", mdEscape(d.Interface), mdEscape(d.Role), mdEscape(orNone(d.Driver)),
					mdEscape(d.Version), mdEscape(orNone(d.Firmware)), mdEscape(d.BusInfo))
			}
		}
		if e.DevicesError != "" {
			fmt.Fprintf(&b, "- devices: %s\n", mdEscape(e.DevicesError))
		}
	}
	if len(r.Matrix) > 0 {
		b.WriteString("\n## Capabilities\n\n| capability | advertised | detail | verified by | result |\n| --- | --- | --- | --- | --- |\n")
		for _, row := range r.Matrix {
			adv := "no"
			if row.Advertised {
				adv = "yes"
			}
			st := "not run"
			if row.Case == "" {
				st = ""
			} else if row.Status != "" {
				st = statusMark[row.Status]
			}
			cs := ""
			if row.Case != "" {
				cs = "`" + row.Case + "`"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", row.Capability, adv, mdEscape(row.Detail), cs, st)
		}
	}
	b.WriteString("\n## Cases\n\n| case | result | time | reason |\n| --- | --- | --- | --- |\n")
	for _, c := range r.Cases {
		reason := c.Reason
		if c.Status == StatusPass {
			reason = ""
		}
		mark := statusMark[c.Status]
		switch {
		case c.Status == StatusSkip && c.Missing != "":
			mark += ": needs " + mdEscape(c.Missing)
		case c.Status == StatusDocumented && c.Capability != "":
			mark += " (" + mdEscape(c.Capability) + ")"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %ss | %s |\n", c.Name, mark, secs(c.Seconds), mdEscape(reason))
	}
	if missing := r.missingCounts(); len(missing) > 0 {
		b.WriteString("\n## Skipped for a missing capability\n\n| capability | cases skipped |\n| --- | --- |\n")
		for _, m := range missing {
			fmt.Fprintf(&b, "| %s | %d |\n", mdEscape(m.name), m.n)
		}
	}
	if len(r.Documented) > 0 {
		b.WriteString("\n## Documented differences\n\n| case | capability | reason | result |\n| --- | --- | --- | --- |\n")
		for _, d := range r.Documented {
			st := "not run"
			if c, ok := r.Case(d.Case); ok {
				st = statusMark[c.Status]
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", d.Case, mdEscape(d.Capability), mdEscape(d.Reason), st)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

type missingCount struct {
	name string
	n    int
}

// missingCounts counts, per capability, the cases skipped for its absence
// (the cases themselves, not parents all of whose subcases skipped), in
// the order they first appear.
func (r *Report) missingCounts() []missingCount {
	var out []missingCount
	idx := map[string]int{}
	for _, c := range r.Cases {
		if c.Status != StatusSkip || c.Missing == "" || strings.HasPrefix(c.Reason, "every subcase skipped") {
			continue
		}
		i, ok := idx[c.Missing]
		if !ok {
			i = len(out)
			idx[c.Missing] = i
			out = append(out, missingCount{name: c.Missing})
		}
		out[i].n++
	}
	return out
}

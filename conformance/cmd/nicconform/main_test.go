package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/conformance"
	"github.com/nicpath/nicpath/hal"
)

type junit struct {
	Tests    int `xml:"tests,attr"`
	Failures int `xml:"failures,attr"`
	Suites   []struct {
		Properties []struct {
			Name  string `xml:"name,attr"`
			Value string `xml:"value,attr"`
		} `xml:"properties>property"`
		Cases []struct {
			Name    string    `xml:"name,attr"`
			Failure *struct{} `xml:"failure"`
			Skipped *struct {
				Message string `xml:"message,attr"`
			} `xml:"skipped"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
	Props map[string]string `xml:"-"`
}

// skipped is the skip message of the case named name ("" when it did not
// skip).
func (j junit) skipped(name string) string {
	for _, c := range j.Suites[0].Cases {
		if c.Name == name && c.Skipped != nil {
			return c.Skipped.Message
		}
	}
	return ""
}

func readReports(t *testing.T, dir string) (junit, conformance.Report, string) {
	t.Helper()
	var j junit
	b, err := os.ReadFile(filepath.Join(dir, "conformance.junit.xml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(b, &j); err != nil {
		t.Fatalf("JUnit: %v", err)
	}
	j.Props = map[string]string{}
	for _, p := range j.Suites[0].Properties {
		j.Props[p.Name] = p.Value
	}
	var r conformance.Report
	b, err = os.ReadFile(filepath.Join(dir, "conformance.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("JSON: %v", err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "conformance.md"))
	if err != nil {
		t.Fatal(err)
	}
	return j, r, string(md)
}

// The whole suite against softnic, end to end through the command's logic:
// exit 0, three reports that agree, progress on stderr.
func TestRunSoftnic(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-driver", "softnic", "-out", dir}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout.String(), stderr.String())
	}
	j, r, md := readReports(t, dir)
	if j.Tests < 100 || j.Failures != 0 || j.Tests != r.Summary.Total || r.Summary.Fail != 0 {
		t.Errorf("JUnit %d tests %d failures; JSON %+v", j.Tests, j.Failures, r.Summary)
	}
	if r.Driver != "softnic" || len(r.Matrix) < 50 {
		t.Errorf("JSON driver %q, %d capability rows", r.Driver, len(r.Matrix))
	}
	for _, want := range []string{"## Capabilities", "| match vlan | yes |  | `match/vlan` | ✅ pass |", "| `encap/geneve/options` | ✅ pass |", "**PASS**"} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q", want)
		}
	}
	for _, want := range []string{"RUN        match", "PASS       match/vlan", "wrote " + filepath.Join(dir, "conformance.md")} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("progress lacks %q", want)
		}
	}
	// The environment, in every format.
	env := r.Environment
	if env == nil || env.Library == "" || env.Library == "unknown" || env.Go == "" || (runtime.GOOS == "linux" && env.Kernel == "") {
		t.Errorf("JSON environment %+v; want the kernel, Go and library versions", env)
	} else {
		if !strings.Contains(md, "## Environment") || !strings.Contains(md, "- library: "+env.Library) || !strings.Contains(md, "- kernel: "+env.Kernel) {
			t.Errorf("Markdown lacks the environment")
		}
		if !strings.Contains(stdout.String(), "environment: kernel "+env.Kernel) {
			t.Errorf("stdout lacks the environment:\n%s", stdout.String())
		}
		if j.Props["library"] == "" || j.Props["kernel"] != env.Kernel || j.Props["driver"] != "softnic" {
			t.Errorf("JUnit properties %v lack the environment", j.Props)
		}
	}
}

// A driver's documented differences, exact by name: the cases that fail
// for the documented reason are reported documented, with the capability,
// in every format, and the run passes; one more that passes fails it.
func TestRunDocumented(t *testing.T) {
	var docs []conformance.Difference
	drivers["flipping"] = func(c *config) (conformance.Target, error) {
		tg, err := softnicTarget(c.ports)
		open := tg.Open
		tg.Open = func(ctx context.Context) (hal.NIC, conformance.Harness, error) {
			n, h, err := open(ctx)
			return n, flipHarness{h}, err
		}
		tg.Documented = docs
		return tg, err
	}
	defer delete(drivers, "flipping")
	reason := "the uplink's cable flips the last bit"
	for _, n := range []string{"ipv4", "ipv6", "ttl", "inner-ipv6"} {
		docs = append(docs, conformance.Difference{Case: "encap/vxlan/" + n, Capability: "encap vxlan", Reason: reason})
	}
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-driver", "flipping", "-out", dir, "-run", "^encap$/vxlan"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d, want 0\n%s\n%s", code, stdout.String(), stderr.String())
	}
	j, r, md := readReports(t, dir)
	if r.Summary.Documented != 4 || r.Summary.Fail != 0 || j.Failures != 0 || len(r.Documented) != 4 {
		t.Errorf("JUnit %d failures, JSON %+v, %d documented listed", j.Failures, r.Summary, len(r.Documented))
	}
	c, _ := r.Case("encap/vxlan/ipv6")
	if c.Status != conformance.StatusDocumented || c.Capability != "encap vxlan" || !strings.HasPrefix(c.Reason, reason) {
		t.Errorf("JSON encap/vxlan/ipv6: %+v", c)
	}
	if !strings.Contains(md, "| `encap/vxlan/ipv6` | 📝 documented (encap vxlan) |") ||
		!strings.Contains(md, "| `encap/vxlan/ttl` | encap vxlan | "+reason+" | 📝 documented |") {
		t.Errorf("Markdown lacks the documented case or the list")
	}
	if m := j.skipped("encap/vxlan/inner-ipv6"); !strings.HasPrefix(m, "documented difference (encap vxlan): "+reason) {
		t.Errorf("JUnit encap/vxlan/inner-ipv6 skipped with %q", m)
	}
	if !strings.Contains(stdout.String(), "documented encap/vxlan/ttl (encap vxlan): documented: "+reason) {
		t.Errorf("stdout lacks the documented list:\n%s", stdout.String())
	}

	// sanity passes: listed, it fails the run.
	docs = append(docs, conformance.Difference{Case: "sanity", Capability: "location", Reason: "stale"})
	dir = t.TempDir()
	stdout.Reset()
	stderr.Reset()
	code = run(context.Background(), []string{"-driver", "flipping", "-out", dir, "-run", "^(encap|sanity)$/vxlan"}, &stdout, &stderr)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, stderr.String())
	}
	_, r, _ = readReports(t, dir)
	if c, _ := r.Case("sanity"); c.Status != conformance.StatusFail || c.Reason != "documented difference sanity now passes: remove it from the list" {
		t.Errorf("a documented case that passes: %+v", c)
	}
}

// flipHarness breaks the datapath as seen from outside: the last byte of
// every frame leaving port 3 is flipped.
type flipHarness struct{ conformance.Harness }

func (h flipHarness) Recv(ctx context.Context, port hal.PortID, max int) ([][]byte, error) {
	fs, err := h.Harness.Recv(ctx, port, max)
	if port == 3 {
		for _, f := range fs {
			f[len(f)-1] ^= 1
		}
	}
	return fs, err
}

// A driver that fails a case makes the command exit 1 and the reports say
// which case.
func TestRunFailingDriver(t *testing.T) {
	drivers["broken"] = func(c *config) (conformance.Target, error) {
		tg, err := softnicTarget(c.ports)
		open := tg.Open
		tg.Open = func(ctx context.Context) (hal.NIC, conformance.Harness, error) {
			n, h, err := open(ctx)
			return n, flipHarness{h}, err
		}
		return tg, err
	}
	defer delete(drivers, "broken")
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-driver", "broken", "-out", dir, "-run", "^encap$"}, &stdout, &stderr)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, stderr.String())
	}
	j, r, md := readReports(t, dir)
	if j.Failures == 0 || r.Summary.Fail == 0 {
		t.Fatalf("no failure reported: JUnit %d, JSON %+v", j.Failures, r.Summary)
	}
	failed := false
	for _, c := range j.Suites[0].Cases {
		if c.Name == "encap/vxlan/ipv4" && c.Failure != nil {
			failed = true
		}
	}
	if !failed || !strings.Contains(md, "| `encap/vxlan/ipv4` | ❌ fail |") || !strings.Contains(stderr.String(), "FAIL       encap/vxlan/ipv4") {
		t.Errorf("encap/vxlan/ipv4 not reported failed in every format")
	}
}

func TestRunDifferentialSoftnic(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-driver", "softnic", "-differential", "-out", dir, "-format", "json"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr.String())
	}
	b, err := os.ReadFile(filepath.Join(dir, "conformance.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r conformance.Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Mode != conformance.ModeDifferential || r.Summary.Pass < 20 || r.Summary.Fail != 0 {
		t.Errorf("mode %q summary %+v", r.Mode, r.Summary)
	}
	if _, err := os.Stat(filepath.Join(dir, "conformance.md")); err == nil {
		t.Errorf("-format json wrote Markdown too")
	}
}

func TestRunUsage(t *testing.T) {
	out := t.TempDir() // nothing may land in the package directory
	for _, args := range [][]string{
		{},
		{"-driver", "softnic", "-format", "html", "-out", out},
		{"-driver", "softnic", "-run", "match/(", "-out", out},
		{"-driver", "softnic", "-ports", "only", "-out", out},
		{"-driver", "nosuch", "-out", out},
		{"-driver", "tcflower", "-tunnels", "gre=x", "-out", out},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != 2 {
			t.Errorf("%q: exit %d, want 2 (%s)", args, code, stderr.String())
		}
	}
	if _, err := os.Stat("conformance.md"); err == nil {
		t.Errorf("a usage error wrote a report into the working directory")
	}
	var stdout bytes.Buffer
	if code := run(context.Background(), []string{"-list"}, &stdout, &bytes.Buffer{}); code != 0 || !strings.Contains(stdout.String(), "generations") {
		t.Errorf("-list: exit %d\n%s", code, stdout.String())
	}
}

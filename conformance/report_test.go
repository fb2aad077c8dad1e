package conformance

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// goldenReport is a report with every status, a documented difference, a
// skip reason and characters that need escaping in each format.
func goldenReport() *Report {
	caps := hal.Capabilities{
		Driver: "fake", Device: "two <ports> & an uplink", Location: hal.LocationKernel,
		MaxRules: 1024, MaxBatch: 64,
		MatchFields:  hal.MatchInPort | hal.MatchEthType | hal.MatchIPv4Dst,
		MaskedFields: hal.MatchIPv4Dst, Priorities: true,
		Actions:  hal.ActionsOf(hal.ActionEncap, hal.ActionOutput, hal.ActionCount),
		Encaps:   hal.EncapsOf(hal.EncapVXLAN),
		Counters: hal.CounterCaps{PerRule: true, BytesIncludeL2: true}, ExceptionPath: true,
		SealedDrop: true,
		Notes:      []string{"generic XDP | no driver mode", "atomic batches: no (rules written <one by one>)"},
	}
	r := &Report{
		Target: "fake on veth0,veth1", Mode: ModeSuite,
		Started: time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC), Seconds: 1.25,
		Capabilities: &caps,
		Cases: []CaseResult{
			{Name: "sanity", Status: StatusPass, Seconds: 0.01, Log: []string{"ports: 3"}},
			{Name: "match", Status: StatusFail, Seconds: 0.5, Reason: "a subcase failed"},
			{Name: "match/in_port", Status: StatusPass, Seconds: 0.1},
			{Name: "match/vlan", Status: StatusPass, Seconds: 0.1, Log: []string{"match on vlan refused as expected: fake: match.vlan: not supported"}},
			{Name: "match/ipv4_dst", Status: StatusFail, Seconds: 0.2, Reason: "port 3 (up|link): got 0 frames, want 1",
				Log: []string{"FAIL: port 3 (up|link): got 0 frames, want 1"}},
			{Name: "encap/geneve", Status: StatusSkip, Seconds: 0, Reason: "needs uplink: the NIC has no uplink <port>", Missing: "uplink"},
			{Name: "counters/rule", Status: StatusDocumented, Seconds: 0.03, Reason: "counts the FCS & preamble (failures: rule counters {1 68})",
				Capability: "counters per rule", Log: []string{"FAIL: rule counters {1 68}"}},
			{Name: "documented", Status: StatusPass, Log: []string{"counters/rule (counters per rule): counts the FCS & preamble"}},
		},
		Environment: &Environment{
			Kernel: "6.1.0-28-amd64", OS: "linux", Arch: "amd64", Go: "go1.26.8",
			Library: "github.com/nicpath/nicpath v0.9.0", Revision: "0123abcd", Modified: true,
			Devices: []DeviceInfo{
				{Interface: "veth0", Role: "vport", Driver: "veth", Version: "1.0"},
				{Interface: "eth1", Role: "uplink", Driver: "mlx5_core", Version: "6.1.0", Firmware: "22.36.1010 (MT_0000000359)", BusInfo: "0000:3b:00.1"},
			},
		},
		Documented: []Difference{{Case: "counters/rule", Capability: "counters per rule", Reason: "counts the FCS & preamble"}},
	}
	r.Matrix = matrix(&caps, r.Cases)
	r.summarize()
	return r
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it):\n%s", name, got)
	}
}

func TestWriteJUnitGolden(t *testing.T) {
	var b bytes.Buffer
	if err := WriteJUnit(&b, goldenReport()); err != nil {
		t.Fatal(err)
	}
	golden(t, "report.junit.xml", b.Bytes())
	var s junitSuites
	if err := xml.Unmarshal(b.Bytes(), &s); err != nil {
		t.Fatalf("the JUnit output does not parse: %v", err)
	}
	su := s.Suites[0]
	if su.Tests != 8 || su.Failures != 2 || su.Skipped != 2 || len(su.Cases) != 8 {
		t.Errorf("tests %d failures %d skipped %d", su.Tests, su.Failures, su.Skipped)
	}
	if su.Cases[4].Failure == nil || su.Cases[5].Skipped == nil || su.Cases[6].Skipped == nil {
		t.Fatalf("failure/skipped elements missing: %+v", su.Cases)
	}
	if m := su.Cases[5].Skipped; m.Body != "missing capability: uplink" {
		t.Errorf("skip of encap/geneve: %+v; want the missing capability named", m)
	}
	if m := su.Cases[6].Skipped.Message; m != "documented difference (counters per rule): counts the FCS & preamble (failures: rule counters {1 68})" {
		t.Errorf("documented counters/rule: %q", m)
	}
	props := map[string]string{}
	for _, p := range su.Properties {
		props[p.Name] = p.Value
	}
	for k, v := range map[string]string{
		"kernel": "6.1.0-28-amd64", "library": "github.com/nicpath/nicpath v0.9.0 rev 0123abcd (modified)", "driver": "fake",
		"device eth1":              "eth1 (uplink): driver mlx5_core 6.1.0, firmware 22.36.1010 (MT_0000000359), bus 0000:3b:00.1",
		"documented counters/rule": "counters per rule: counts the FCS & preamble",
	} {
		if props[k] != v {
			t.Errorf("property %q = %q, want %q", k, props[k], v)
		}
	}
}

func TestWriteJSONGolden(t *testing.T) {
	var b bytes.Buffer
	if err := WriteJSON(&b, goldenReport()); err != nil {
		t.Fatal(err)
	}
	golden(t, "report.json", b.Bytes())
	var back Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Summary.Fail != 2 || len(back.Cases) != 8 || back.Driver != "fake" || len(back.Matrix) == 0 {
		t.Errorf("round trip lost data: %+v", back.Summary)
	}
	if back.Cases[5].Missing != "uplink" || back.Cases[6].Capability != "counters per rule" ||
		back.Environment == nil || back.Environment.Devices[1].Firmware != "22.36.1010 (MT_0000000359)" || len(back.Documented) != 1 {
		t.Errorf("round trip lost the missing capability, the documented capability, the environment or the list: %+v", back)
	}
}

func TestWriteMarkdownGolden(t *testing.T) {
	var b bytes.Buffer
	if err := WriteMarkdown(&b, goldenReport()); err != nil {
		t.Fatal(err)
	}
	golden(t, "report.md", b.Bytes())
	for _, want := range []string{
		"| `encap/geneve` | ⏭ skip: needs uplink |",
		"| `counters/rule` | 📝 documented (counters per rule) |",
		"- kernel: 6.1.0-28-amd64\n",
		"- library: github.com/nicpath/nicpath v0.9.0 rev 0123abcd (modified)\n",
		"| eth1 | uplink | mlx5_core | 6.1.0 | 22.36.1010 (MT_0000000359) | 0000:3b:00.1 |",
		"| veth0 | vport | veth | 1.0 | none |  |",
		"## Skipped for a missing capability\n\n| capability | cases skipped |\n| --- | --- |\n| uplink | 1 |\n",
		"| `counters/rule` | counters per rule | counts the FCS & preamble | 📝 documented |",
	} {
		if !bytes.Contains(b.Bytes(), []byte(want)) {
			t.Errorf("Markdown lacks %q", want)
		}
	}
}

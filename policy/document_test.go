package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A policy file holds one YAML document: a second one is an error at its
// line (it used to be ignored), and so is a file with none.
func TestOneDocumentPerFile(t *testing.T) {
	good, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Count(string(good), "\n")
	for _, tc := range []struct {
		name string
		doc  string
		line int
		msg  string
	}{
		{"second document", "hosts: [{name: h, pa: 198.18.0.1}]\n---\ntenants: []\n", 2, "a second YAML document starts here"},
		{"second document after an end marker", "hosts: []\n...\n# next\n---\nhosts: []\n", 4, "a second YAML document starts here"},
		{"empty second document", "---\nhosts: []\n---\n", 3, "a second YAML document starts here"},
		{"after a large one", string(good) + "---\n" + string(good), lines + 1, "a second YAML document starts here"},
		{"empty file", "", 0, "the document is empty"},
		{"comments only", "# a policy\n\n   # to come\n", 0, "the document is empty"},
		{"marker only", "---\n", 0, "the document is empty"},
		{"markers only", "---\n...\n", 0, "the document is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "p.yaml")
			if err := os.WriteFile(path, []byte(tc.doc), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, load := range []func() (*State, error){
				func() (*State, error) { return Parse(path, []byte(tc.doc)) },
				func() (*State, error) { return LoadFile(path) },
			} {
				s, err := load()
				var list ErrorList
				if s != nil || !errors.As(err, &list) || len(list) != 1 {
					t.Fatalf("got %v, %v", s, err)
				}
				if e := list[0]; e.File != path || e.Line != tc.line || !strings.Contains(e.Msg, tc.msg) {
					t.Errorf("got %q (line %d), want line %d and %q", e, e.Line, tc.line, tc.msg)
				}
			}
		})
	}
}

// A document that is an empty mapping is a policy with nothing in it, as
// Marshal writes an empty State.
func TestEmptyMappingIsEmptyState(t *testing.T) {
	s, err := Parse("e.yaml", []byte("{}\n"))
	if err != nil || len(s.Hosts()) != 0 || s.MappingCount() != 0 {
		t.Fatalf("got %v, %v", s, err)
	}
}

// A file the streaming reader leaves to yaml.v3 is read again from its
// start.
func TestLoadFileOutsideTheStreamingSubset(t *testing.T) {
	doc := "hosts:\n  - &h {name: h, pa: 198.18.0.1}\ntenants:\n  - name: t\n    vnets:\n      - name: v\n        vni: 5\n        subnets: [10.0.0.0/24]\n        vms:\n          - {name: a, mac: \"02:00:00:00:00:01\", ca: 10.0.0.1, host: h}\n"
	path := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := LoadFile(path)
	if err != nil || s.MappingCount() != 1 {
		t.Fatalf("got %v, %v", s, err)
	}
}

func TestChunked(t *testing.T) {
	var c chunked[int]
	const n = 3<<chunkShift + 5
	for i := range n {
		c.add(i)
	}
	if c.n != n || *c.at(n - 1) != n-1 || *c.at(1 << chunkShift) != 1<<chunkShift {
		t.Fatalf("n %d, at(n-1) %d", c.n, *c.at(n - 1))
	}
	*c.at(7) = -7
	flat := c.flat()
	if len(flat) != n || cap(flat) != n || flat[7] != -7 || flat[n-1] != n-1 || c.n != 0 {
		t.Fatalf("flat: len %d cap %d", len(flat), cap(flat))
	}
}

// Positions of VMs past the first block, and of a VM's later CAs.
func TestVMPositionsAcrossBlocks(t *testing.T) {
	var v vmPositions
	v.startList(0, "tenants[0].vnets[0].vms")
	v.startList(5, "tenants[1].vnets[2].vms")
	const n = 1<<chunkShift + 10
	for i := range n {
		o := &origin{at: pos{i + 1, 3}}
		o.set("name", -1, pos{i + 1, 9})
		o.set("ca", -1, pos{i + 2, 9})
		o.set("ca", 0, pos{i + 2, 10})
		if i == n-1 {
			o.set("ca", 1, pos{i + 2, 20})
		}
		v.add(o)
	}
	o := v.origin(n - 1)
	if o == nil {
		t.Fatal("no origin")
	}
	for _, tc := range []struct {
		field, path string
		at          pos
	}{
		{"name", "tenants[1].vnets[2].vms[16388].name", pos{n, 9}},
		{"ca[1]", "tenants[1].vnets[2].vms[16388].ca[1]", pos{n + 1, 20}},
		{"ca[0]", "tenants[1].vnets[2].vms[16388].ca[0]", pos{n + 1, 10}},
		{"host", "tenants[1].vnets[2].vms[16388].host", pos{n, 3}},
	} {
		if path, at := o.field(tc.field); path != tc.path || at != tc.at {
			t.Errorf("%s: %s at %v, want %s at %v", tc.field, path, at, tc.path, tc.at)
		}
	}
	if path, _ := v.origin(4).field(""); path != "tenants[0].vnets[0].vms[4]" {
		t.Errorf("VM 4 is %s", path)
	}
	if v.origin(n) != nil {
		t.Error("an origin past the end")
	}
}

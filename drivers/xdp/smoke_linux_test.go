//go:build linux

package xdp

import (
	"context"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// TestCapabilities: what Open reports is what it created and attached.
func TestCapabilities(t *testing.T) {
	requireRoot(t)
	n, err := Open(context.Background(), Config{MaxRules: 1000, MaxScopes: 77, MaxBatch: 300, Ports: []PortConfig{{}, {Kind: hal.PortUplink}}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	c := n.Capabilities()
	if c.Driver != DriverName || c.MaxRules != 1000 || c.MaxScopes != 77 || c.MaxBatch != 300 || c.Location != hal.LocationKernel {
		t.Fatalf("capabilities:\n%s", c.String())
	}
	if !c.Generations || !c.ExceptionPath || !c.Priorities || c.AtomicBatch || c.Crypto {
		t.Fatalf("capabilities:\n%s", c.String())
	}
	if ps := n.Ports(); len(ps) != 2 || ps[0].ID != 1 || ps[1].ID != 2 || ps[1].Kind != hal.PortUplink {
		t.Fatalf("ports %+v", ps)
	}
	if !strings.Contains(strings.Join(c.Notes, "\n"), "verified") {
		t.Fatalf("notes %q", c.Notes)
	}
}

// TestCapabilitiesMaxBatch: Config.MaxBatch defaults to DefaultMaxBatch,
// and a negative one fails Open before anything is loaded.
func TestCapabilitiesMaxBatch(t *testing.T) {
	requireRoot(t)
	d := (&Config{}).withDefaults()
	if c := baseCapabilities(&d); c.MaxBatch != DefaultMaxBatch {
		t.Fatalf("default MaxBatch %d, want %d", c.MaxBatch, DefaultMaxBatch)
	}
	n, err := Open(context.Background(), Config{MaxBatch: -1, Ports: []PortConfig{{}}})
	if err == nil {
		n.Close()
		t.Fatal("Open took MaxBatch -1")
	}
	if !strings.Contains(err.Error(), "MaxBatch") {
		t.Fatalf("Open with MaxBatch -1: %v", err)
	}
}

// TestOpenMaxRulesRange: a negative Config.MaxRules, or one above
// MostRules (whose maps' 32-bit sizes would wrap further on), fails Open
// before anything is loaded, naming the field.
func TestOpenMaxRulesRange(t *testing.T) {
	requireRoot(t)
	for _, v := range []int{-1, MostRules + 1} {
		n, err := Open(context.Background(), Config{MaxRules: v, Ports: []PortConfig{{}}})
		if err == nil {
			n.Close()
			t.Fatalf("Open took MaxRules %d", v)
		}
		if !strings.Contains(err.Error(), "MaxRules") {
			t.Fatalf("Open with MaxRules %d: %v", v, err)
		}
	}
}

// TestOpenMaxScopesRange: a Config.MaxScopes above MostScopes (a table4
// slot holds a rule's scope in 16 bits) fails Open before anything is
// loaded, naming the field; MostScopes itself is taken, reported in
// Capabilities with the note that says why it is the bound, and its last
// scope works.
func TestOpenMaxScopesRange(t *testing.T) {
	requireRoot(t)
	for _, v := range []int{MostScopes + 1, 1 << 20} {
		n, err := Open(context.Background(), Config{MaxScopes: v, Ports: []PortConfig{{}}})
		if err == nil {
			n.Close()
			t.Fatalf("Open took MaxScopes %d", v)
		}
		if !strings.Contains(err.Error(), "MaxScopes") {
			t.Fatalf("Open with MaxScopes %d: %v", v, err)
		}
	}
	n := openVirtual(t, Config{MaxRules: 16, MaxScopes: MostScopes})
	c := n.Capabilities()
	if c.MaxScopes != MostScopes || !strings.Contains(strings.Join(c.Notes, "\n"), scopesNote) {
		t.Fatalf("capabilities:\n%s", c.String())
	}
	// The highest scope, in table4: its shadow (generation 0) inline and
	// its live rule (generation 1) in a side entry.
	last := hal.Scope(MostScopes - 1)
	f := wire.Build(udp4(ca1, ca2, 1000, 2000))
	shadow := exactRule(t, 1, pVM1, f, hal.Output(pVM2))
	live := exactRule(t, 2, pVM1, f, hal.Output(pUp))
	shadow.Scope, live.Scope, live.Generation = last, last, 1
	mustApply(t, n, hal.AddOp(shadow), hal.AddOp(live))
	if r := mustRun(t, n, pVM1, f); r.Verdict != VerdictOutput || r.Port != pVM2 {
		t.Fatalf("generation 0 live: %+v", r)
	}
	if err := n.Activate(context.Background(), last, 1); err != nil {
		t.Fatal(err)
	}
	if r := mustRun(t, n, pVM1, f); r.Verdict != VerdictOutput || r.Port != pUp {
		t.Fatalf("generation 1 live: %+v", r)
	}
	if n.tab.be.(*mapBackend).t4.sides.used() != 1 {
		t.Fatal("the two-rule entry is not in table4 with a side entry")
	}
}

// TestOpenBadPort: a port ID out of range or an interface that does not
// exist fails Open, and nothing stays loaded.
func TestOpenBadPort(t *testing.T) {
	requireRoot(t)
	if _, err := Open(context.Background(), Config{Ports: []PortConfig{{ID: MaxPorts}}}); err == nil {
		t.Fatal("port ID MaxPorts accepted")
	}
	if _, err := Open(context.Background(), Config{NetNS: "/var/run/netns/" + newNS(t, "bad"), Ports: []PortConfig{{Name: "nosuchdev0"}}}); err == nil {
		t.Fatal("a missing interface accepted")
	}
}

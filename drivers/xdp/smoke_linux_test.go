//go:build linux

package xdp

import (
	"context"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/hal"
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

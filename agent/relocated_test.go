package agent

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A relocated subnet in the policy gives the vswitchd its pool's mappings
// to the anchor; a policy whose relocated entry is bad is refused with
// file, line and field, and the running policy (and its mappings) stays.
func TestRelocatedSubnetReload(t *testing.T) {
	dir := t.TempDir()
	r := startDaemon(t, withoutWatcher(t, hostAConfig(t, dir)), nil)
	polPath := filepath.Join(dir, "policy.yaml")
	good, err := os.ReadFile(polPath)
	if err != nil {
		t.Fatal(err)
	}
	// blue's db VNET (10.0.1.0/24) relocates 10.0.1.128/26, anchored on
	// host-b.
	reloc := "\nrelocated:\n  - name: branch\n    tenant: blue\n    vnet: db\n    prefix: 10.0.1.128/26\n    anchor: host-b\n" +
		"    tether: {name: branch-1, key: 0202020202020202020202020202020202020202020202020202020202020202}\n"
	if err := os.WriteFile(polPath, append(bytes.Clone(good), reloc...), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if changed, err := r.d.Reload(ctx); err != nil || !changed {
		t.Fatalf("reload with a relocated subnet: %v %v", changed, err)
	}
	pool := netip.MustParseAddr("10.0.1.130")
	m, ok := r.d.State().Lookup(1002, pool)
	if hb, _ := r.d.State().Host("host-b"); !ok || m.PA != hb.PA {
		t.Fatalf("the pool address %s: %+v %v", pool, m, ok)
	}
	// The anchor is no host: refused at its line, nothing applied.
	bad := strings.Replace(string(good)+reloc, "anchor: host-b", "anchor: host-z", 1)
	line := 1 + strings.Count(bad[:strings.Index(bad, "anchor: host-z")], "\n")
	if err := os.WriteFile(polPath, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = r.d.Reload(ctx)
	if err == nil || !strings.Contains(err.Error(), polPath+":"+strconv.Itoa(line)+": relocated[0].anchor: unknown host \"host-z\"") {
		t.Fatalf("reload of a bad relocated entry: %v", err)
	}
	if m2, ok := r.d.State().Lookup(1002, pool); !ok || m2 != m {
		t.Fatalf("the refused policy changed the running one: %+v %v", m2, ok)
	}
}

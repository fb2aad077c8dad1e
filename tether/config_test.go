package tether

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/securechan"
)

const goodKey = "0101010101010101010101010101010101010101010101010101010101010101"
const otherKey = "0202020202020202020202020202020202020202020202020202020202020202"

// goodConfig is what the machines running relocated subnet branch know:
// the anchor's endpoint and key, the tether's key, ports and path MTU. The
// subnet itself is the policy's (testPolicy).
func goodConfig() string {
	return `relocated_subnets:
  - name: branch
    lease_time: 30m
    anchor:
      endpoint: 203.0.113.1:51820
      key: ` + goodKey + `
    tether:
      key: ` + otherKey + `
      ports: [p1, p2]
`
}

// testPolicy is a policy with relocated subnet branch (pool 10.0.1.10 to
// 10.0.1.12, anchored on host anchor), with a VM stray inside it if stray.
func testPolicy(tb testing.TB, relocated, stray bool) *policy.State {
	b := policy.NewBuilder()
	b.AddHost(policy.Host{Name: "anchor", PA: netip.MustParseAddr("198.18.0.10")})
	b.AddHost(policy.Host{Name: "host-a", PA: netip.MustParseAddr("198.18.0.1")})
	b.AddTenant(policy.Tenant{Name: "blue"})
	b.AddVNET(policy.VNET{Tenant: "blue", Name: "web", VNI: 7, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}})
	if relocated {
		k, _ := securechan.ParsePublicKey(otherKey)
		b.AddRelocated(policy.Relocated{Name: "branch", Tenant: "blue", VNET: "web", Prefix: netip.MustParsePrefix("10.0.1.0/24"),
			PoolFirst: netip.MustParseAddr("10.0.1.10"), PoolLast: netip.MustParseAddr("10.0.1.12"), Anchor: "anchor",
			Tether: policy.Tether{Name: "branch-1", Key: k, Keepalive: 10 * time.Second}})
	}
	if stray {
		b.AddVM(policy.VM{Name: "stray", Tenant: "blue", VNET: "web", MAC: policy.MAC{2, 1, 1, 1, 1, 1}, CAs: []netip.Addr{netip.MustParseAddr("10.0.1.200")}, Host: "host-a"})
	}
	st, err := b.Build()
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

func TestConfigGood(t *testing.T) {
	c, err := ParseConfig("r.yaml", []byte(goodConfig()))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckPolicy(testPolicy(t, true, false)); err != nil {
		t.Fatal(err)
	}
	r, ok := c.Find("branch")
	if !ok || r.Gateway != netip.MustParseAddr("10.0.1.1") || r.Keepalive != 10*time.Second || r.Probe != DefaultProbe ||
		r.LeaseTime != 30*time.Minute || len(PoolVMs(r)) != 3 || r.PathMTU != DefaultPathMTU || r.AnchorHost != "anchor" ||
		r.TetherName != "branch-1" || r.TetherKey.String() != otherKey || r.Prefix != netip.MustParsePrefix("10.0.1.0/24") {
		t.Fatalf("%+v", r)
	}
}

// Each broken configuration is refused with the file, the line and the
// field of its problem, and no Config at all; the fields the policy now
// gives are refused saying so.
func TestConfigRefused(t *testing.T) {
	for _, tc := range []struct {
		old, new string
		want     string // file:line: field
	}{
		{"endpoint: 203.0.113.1:51820", "endpoint: 203.0.113.1", "r.yaml:5: relocated_subnets[0].anchor.endpoint"},
		{"key: " + goodKey, "key: 0102", "r.yaml:6: relocated_subnets[0].anchor.key"},
		{"ports: [p1, p2]", "ports: [p1, p1]", "r.yaml:9: relocated_subnets[0].tether.ports[1]"},
		{"ports: [p1, p2]", "ports: [p1, p2]\n      path_mtu: 100", "r.yaml:10: relocated_subnets[0].tether.path_mtu"},
		{"ports: [p1, p2]", "ports: [p1, p2]\n      colour: blue", "r.yaml:10: relocated_subnets[0].tether.colour"},
		{"lease_time: 30m", "lease_time: 1s", "r.yaml:3: relocated_subnets[0].lease_time"},
		{"    lease_time: 30m\n", "    lease_time: 30m\n    prefix: 10.0.1.0/24\n", "r.yaml:4: relocated_subnets[0].prefix: moved to the policy: give it as relocated[].prefix"},
		{"    lease_time: 30m\n", "    lease_time: 30m\n    tenant: blue\n", "r.yaml:4: relocated_subnets[0].tenant: moved to the policy"},
		{"    anchor:\n", "    anchor:\n      host: anchor\n", "r.yaml:5: relocated_subnets[0].anchor.host: moved to the policy: give it as relocated[].anchor"},
		{"ports: [p1, p2]", "ports: [p1, p2]\n      probe: 1s", "r.yaml:10: relocated_subnets[0].tether.probe: moved to the policy: give it as relocated[].tether.probe"},
		{"    tether:\n", "    tether:\n      name: branch-1\n", "r.yaml:8: relocated_subnets[0].tether.name: moved to the policy"},
		{"  - name: branch\n", "  - lease_time: 1h\n", "r.yaml:2: relocated_subnets[0].name: required"},
	} {
		doc := strings.Replace(goodConfig(), tc.old, tc.new, 1)
		if doc == goodConfig() {
			t.Fatalf("%q changes nothing", tc.old)
		}
		c, err := ParseConfig("r.yaml", []byte(doc))
		var ce ConfigErrors
		if c != nil || !errors.As(err, &ce) {
			t.Errorf("%q -> %q: config %v, error %v", tc.old, tc.new, c, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q -> %q: %v, want %q", tc.old, tc.new, err, tc.want)
		}
	}
}

// The subnet is the policy's: a configuration naming a subnet the policy
// does not have, or giving the tether another key, is refused at its line;
// a later policy that changes the subnet under a running anchor is
// refused and the subnet kept.
func TestConfigAgainstPolicy(t *testing.T) {
	c, err := ParseConfig("r.yaml", []byte(goodConfig()))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckPolicy(testPolicy(t, false, false)); err == nil || !strings.Contains(err.Error(), `r.yaml:2: relocated_subnets[0].name: the policy has no relocated subnet "branch"`) {
		t.Fatalf("a policy without the subnet: %v", err)
	}
	if r, _ := c.Find("branch"); r.bound || r.Prefix.IsValid() {
		t.Fatalf("a refused policy changed the configuration: %+v", r)
	}
	other, _ := ParseConfig("r.yaml", []byte(strings.Replace(goodConfig(), "key: "+otherKey, "key: "+goodKey, 1)))
	if err := other.CheckPolicy(testPolicy(t, true, false)); err == nil || !strings.Contains(err.Error(), "r.yaml:8: relocated_subnets[0].tether.key: "+goodKey+" is not the key the policy gives tether branch-1") {
		t.Fatalf("another tether key: %v", err)
	}
	if err := c.CheckPolicy(testPolicy(t, true, false)); err != nil {
		t.Fatal(err)
	}
	// The policy itself refuses a VM inside the relocated prefix.
	b := testPolicy(t, true, false).Builder()
	b.AddVM(policy.VM{Name: "stray", Tenant: "blue", VNET: "web", MAC: policy.MAC{2, 1, 1, 1, 1, 1}, CAs: []netip.Addr{netip.MustParseAddr("10.0.1.200")}, Host: "host-a"})
	if _, err := b.Build(); err == nil || !strings.Contains(err.Error(), "inside relocated subnet branch") {
		t.Fatalf("a VM inside the relocated prefix: %v", err)
	}
	// A policy moving the subnet is refused while it runs.
	b = testPolicy(t, false, false).Builder()
	k, _ := securechan.ParsePublicKey(otherKey)
	b.AddRelocated(policy.Relocated{Name: "branch", Tenant: "blue", VNET: "web", Prefix: netip.MustParsePrefix("10.0.2.0/24"), Anchor: "anchor", Tether: policy.Tether{Name: "branch-1", Key: k}})
	moved, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckPolicy(moved); err == nil || !strings.Contains(err.Error(), "restart to follow it") {
		t.Fatalf("a policy moving the running subnet: %v", err)
	}
	if r, _ := c.Find("branch"); r.Prefix != netip.MustParsePrefix("10.0.1.0/24") {
		t.Fatalf("the refused policy changed the subnet: %+v", r)
	}
}

// The policy may give the tether's key as a file, read relative to the
// configuration's directory.
func TestConfigKeyFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "branch-1.pub"), []byte(otherKey+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := ParseConfig(filepath.Join(dir, "r.yaml"), []byte(goodConfig()))
	if err != nil {
		t.Fatal(err)
	}
	build := func(file string) *policy.State {
		b := testPolicy(t, false, false).Builder()
		b.AddRelocated(policy.Relocated{Name: "branch", Tenant: "blue", VNET: "web", Prefix: netip.MustParsePrefix("10.0.1.0/24"), Anchor: "anchor", Tether: policy.Tether{Name: "branch-1", KeyFile: file}})
		st, err := b.Build()
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	if err := c.CheckPolicy(build("missing.pub")); err == nil || !strings.Contains(err.Error(), "tether.key_file of branch") {
		t.Fatalf("a missing key file: %v", err)
	}
	if err := c.CheckPolicy(build("branch-1.pub")); err != nil {
		t.Fatal(err)
	}
	if r, _ := c.Find("branch"); r.TetherKey.String() != otherKey {
		t.Fatalf("key %s", r.TetherKey)
	}
}

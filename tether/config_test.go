package tether

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/policy"
)

const goodKey = "0101010101010101010101010101010101010101010101010101010101010101"
const otherKey = "0202020202020202020202020202020202020202020202020202020202020202"

func goodConfig() string {
	return `relocated_subnets:
  - name: branch
    tenant: blue
    vnet: web
    prefix: 10.0.1.0/24
    pool: 10.0.1.10-10.0.1.12
    anchor:
      host: anchor
      endpoint: 203.0.113.1:51820
      key: ` + goodKey + `
    tether:
      name: branch-1
      key: ` + otherKey + `
      ports: [p1, p2]
`
}

func TestConfigGood(t *testing.T) {
	c, err := ParseConfig("r.yaml", []byte(goodConfig()))
	if err != nil {
		t.Fatal(err)
	}
	r, ok := c.Find("branch")
	if !ok || r.Gateway != netip.MustParseAddr("10.0.1.1") || r.Keepalive != DefaultKeepalive || r.Probe != DefaultProbe ||
		r.LeaseTime != DefaultLeaseTime || len(PoolVMs(r)) != 3 || r.PathMTU != DefaultPathMTU {
		t.Fatalf("%+v", r)
	}
}

// Each broken configuration is refused with the file, the line and the
// field of its problem, and no Config at all.
func TestConfigRefused(t *testing.T) {
	for _, tc := range []struct {
		old, new string
		want     string // file:line: field
	}{
		{"prefix: 10.0.1.0/24", "prefix: 10.0.1.1/24", "r.yaml:5: relocated_subnets[0].prefix"},
		{"prefix: 10.0.1.0/24", "prefix: fd00::/64", "r.yaml:5: relocated_subnets[0].prefix"},
		{"pool: 10.0.1.10-10.0.1.12", "pool: 10.0.1.1-10.0.1.12", "r.yaml:6: relocated_subnets[0].pool"},
		{"pool: 10.0.1.10-10.0.1.12", "pool: 10.0.2.10-10.0.2.12", "r.yaml:6: relocated_subnets[0].pool"},
		{"endpoint: 203.0.113.1:51820", "endpoint: 203.0.113.1", "r.yaml:9: relocated_subnets[0].anchor.endpoint"},
		{"key: " + goodKey, "key: 0102", "r.yaml:10: relocated_subnets[0].anchor.key"},
		{"ports: [p1, p2]", "ports: [p1, p1]", "r.yaml:14: relocated_subnets[0].tether.ports[1]"},
		{"ports: [p1, p2]", "ports: [p1, p2]\n      probe: 10ms", "r.yaml:15: relocated_subnets[0].tether.probe"},
		{"ports: [p1, p2]", "ports: [p1, p2]\n      colour: blue", "r.yaml:15: relocated_subnets[0].tether.colour"},
		{"    tenant: blue\n", "", "r.yaml:2: relocated_subnets[0].tenant: required"},
	} {
		doc := strings.Replace(goodConfig(), tc.old, tc.new, 1)
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

func TestConfigAgainstPolicy(t *testing.T) {
	c, err := ParseConfig("r.yaml", []byte(goodConfig()))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := c.Find("branch")
	build := func(pool bool, stray bool) *policy.State {
		b := policy.NewBuilder()
		b.AddHost(policy.Host{Name: "anchor", PA: netip.MustParseAddr("198.18.0.10")})
		b.AddHost(policy.Host{Name: "host-a", PA: netip.MustParseAddr("198.18.0.1")})
		b.AddTenant(policy.Tenant{Name: "blue"})
		b.AddVNET(policy.VNET{Tenant: "blue", Name: "web", VNI: 7, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}})
		if pool {
			for _, vm := range PoolVMs(r) {
				b.AddVM(vm)
			}
		}
		if stray {
			b.AddVM(policy.VM{Name: "stray", Tenant: "blue", VNET: "web", MAC: policy.MAC{2, 1, 1, 1, 1, 1}, CAs: []netip.Addr{netip.MustParseAddr("10.0.1.200")}, Host: "host-a"})
		}
		st, err := b.Build()
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	if err := c.CheckPolicy(build(true, false)); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckPolicy(build(false, false)); err == nil || !strings.Contains(err.Error(), "r.yaml:6: relocated_subnets[0].pool: address 10.0.1.10 has no mapping") {
		t.Fatalf("pool without mappings: %v", err)
	}
	if err := c.CheckPolicy(build(true, true)); err == nil || !strings.Contains(err.Error(), "VM stray") {
		t.Fatalf("a VM inside the relocated prefix elsewhere: %v", err)
	}
}

package main

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/drivers/remote"
	"github.com/nicpath/nicpath/policy"
)

// -check holds the configuration to the policy; a bad file is refused with
// file, line and field, and nothing starts.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	var out bytes.Buffer
	if code := run(ctx, []string{"keygen", filepath.Join(dir, "a.key"), filepath.Join(dir, "a.pub")}, &out); code != 0 {
		t.Fatalf("keygen: %d %s", code, out.String())
	}
	key, err := remote.LoadPrivateKey(filepath.Join(dir, "a.key"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := `relocated_subnets:
  - name: branch
    anchor: {endpoint: "203.0.113.1:51820", key: ` + key.Public().String() + `}
    tether: {ports: [p1]}
`
	pb := policy.NewBuilder()
	pb.AddHost(policy.Host{Name: "anchor", PA: netip.MustParseAddr("198.18.0.10")})
	pb.AddTenant(policy.Tenant{Name: "blue"})
	pb.AddVNET(policy.VNET{Tenant: "blue", Name: "web", VNI: 5, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}})
	pb.AddRelocated(policy.Relocated{Name: "branch", Tenant: "blue", VNET: "web", Prefix: netip.MustParsePrefix("10.0.1.0/24"),
		PoolFirst: netip.MustParseAddr("10.0.1.10"), PoolLast: netip.MustParseAddr("10.0.1.11"), Anchor: "anchor",
		Tether: policy.Tether{Name: "b1", Key: key.Public()}})
	st, err := pb.Build()
	if err != nil {
		t.Fatal(err)
	}
	pol, _ := policy.Marshal(st)
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pp := write("policy.yaml", string(pol))
	good := write("good.yaml", cfg)
	out.Reset()
	if code := run(ctx, []string{"-check", "-config", good, "-policy", pp}, &out); code != 0 {
		t.Fatalf("good configuration: %d %s", code, out.String())
	}
	bad := write("bad.yaml", strings.Replace(cfg, "name: branch", "name: lab", 1))
	out.Reset()
	if code := run(ctx, []string{"-check", "-config", bad, "-policy", pp}, &out); code != 1 || !strings.Contains(out.String(), bad+`:2: relocated_subnets[0].name: the policy has no relocated subnet "lab"`) {
		t.Fatalf("a subnet the policy does not name: exit %d\n%s", code, out.String())
	}
	badPol := write("bad-policy.yaml", strings.Replace(string(pol), "anchor: anchor", "anchor: nowhere", 1))
	out.Reset()
	if code := run(ctx, []string{"-check", "-config", good, "-policy", badPol}, &out); code != 1 || !strings.Contains(out.String(), `relocated[0].anchor: unknown host "nowhere"`) {
		t.Fatalf("a policy whose anchor is no host: exit %d\n%s", code, out.String())
	}
	worse := write("worse.yaml", strings.Replace(cfg, "ports: [p1]", "ports: []", 1))
	out.Reset()
	if code := run(ctx, []string{"-role", "anchor", "-config", worse, "-policy", pp}, &out); code != 1 || !strings.Contains(out.String(), worse+":4: relocated_subnets[0].tether.ports") {
		t.Fatalf("no ports: exit %d\n%s", code, out.String())
	}
}

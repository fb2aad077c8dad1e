package main

import (
	"strings"
	"testing"

	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/securechan"
)

// checkSealedStep checks that a namespace story told its sealed step as
// host-a's driver has it: on softnic (crypto), green-1's sealed datagrams
// to a local and a remote VM answered and the host's views clean; on XDP
// or tc-flower (no crypto), fail closed.
func checkSealedStep(t *testing.T, story, hostADriver string) {
	t.Helper()
	want := []string{
		"198.18.30.2 (local, on host-a) opened by the NIC, delivered, and green-2's reply reached green-1",
		"2001:db8:30::2 (local, on host-a) opened by the NIC, delivered, and green-2's reply reached green-1",
		"198.18.30.3 (remote, on host-b) opened by the NIC, delivered, and green-3's reply reached green-1",
		"2001:db8:30::3 (remote, on host-b) opened by the NIC, delivered, and green-3's reply reached green-1",
		"hold none of [198.18.30.2 2001:db8:30::2 198.18.30.3 2001:db8:30::3] (checked on the bytes)",
		"the same check finds 10.0.0.11 in the earlier capture",
	}
	if hostADriver != "softnic" {
		want = []string{
			"its NIC does not open sealed frames: they are dropped (fail closed)",
			"no sealed frame got through",
			"host-a dropped and counted the 4 sealed frames",
		}
	}
	for _, w := range want {
		if !strings.Contains(story, w) {
			t.Errorf("the sealed step does not show %q", w)
		}
	}
}

// The policy the namespace story's hosts run is the embedded default with
// the green tenant added: green-1's key, the tenants and the shadow intact.
func TestStoryPolicy(t *testing.T) {
	pub, _, err := securechan.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := withSealedTenant(defaultPolicy, pub)
	if err != nil {
		t.Fatal(err)
	}
	st, err := policy.Parse("story", pol)
	if err != nil {
		t.Fatalf("%v\n%s", err, pol)
	}
	def, err := policy.Parse("default", defaultPolicy)
	if err != nil {
		t.Fatal(err)
	}
	for _, vm := range []string{"blue-web-1", "red-app-2", "green-2", "green-3"} {
		if _, ok := st.VM(vm); !ok {
			t.Errorf("no VM %s", vm)
		}
	}
	g1, ok := st.VM("green-1")
	if !ok || len(g1.SealKeys) != 1 || g1.SealKeys[0].ID != 1 || g1.SealKeys[0].Public != pub {
		t.Fatalf("green-1: %+v", g1)
	}
	if len(st.LocalVMs("host-a")) != len(def.LocalVMs("host-a"))+2 || len(st.LocalVMs("host-b")) != len(def.LocalVMs("host-b"))+1 {
		t.Errorf("host-a has %d VMs, host-b %d: want the default's and green's", len(st.LocalVMs("host-a")), len(st.LocalVMs("host-b")))
	}
	if len(st.Shadows()) != len(def.Shadows()) || len(st.Shadows()) == 0 {
		t.Errorf("%d shadows, want the default's %d", len(st.Shadows()), len(def.Shadows()))
	}
	if _, err := withSealedTenant([]byte("hosts: []\n"), pub); err == nil {
		t.Error("a policy without shadows: the tenant added nowhere, and no error")
	}
}

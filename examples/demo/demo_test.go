package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// The in-process story is the demo everyone can run: every check it makes
// must hold.
func TestInProcessStory(t *testing.T) {
	var out bytes.Buffer
	failed, err := runInProcess(&out)
	if err != nil {
		t.Fatalf("the story could not be told: %v\n%s", err, out.String())
	}
	if len(failed) > 0 {
		t.Fatalf("%d checks failed: %q\n%s", len(failed), failed, out.String())
	}
	for _, want := range []string{"Handled: NIC", "vni 1001", "vni=2001", "drop (not-local)", "pushed 4 sealed routes", "all "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the story does not show %q", want)
		}
	}
}

// The embedded default is the example policy, byte for byte: go:embed
// cannot reach examples/policies, so the copy is checked here.
func TestEmbeddedPolicyIsTheExample(t *testing.T) {
	want, err := os.ReadFile("../policies/two-tenants.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(want, defaultPolicy) {
		t.Fatal("examples/demo/default-policy.yaml differs from examples/policies/two-tenants.yaml: copy it again (go generate ./examples/demo)")
	}
}

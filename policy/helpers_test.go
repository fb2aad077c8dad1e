package policy

import "testing"

const examplePath = "../examples/policies/two-tenants.yaml"

func mustLoadExample(t testing.TB) *State {
	t.Helper()
	s, err := LoadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

package policy

import (
	"path/filepath"
	"testing"
)

const examplePath = "../examples/policies/two-tenants.yaml"

func mustLoadExample(t testing.TB) *State {
	t.Helper()
	s, err := LoadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Every example document loads.
func TestExamplesLoad(t *testing.T) {
	files, err := filepath.Glob("../examples/policies/*.yaml")
	if err != nil || len(files) < 2 {
		t.Fatalf("examples: %v %v", files, err)
	}
	for _, f := range files {
		if _, err := LoadFile(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	s, err := LoadFile("../examples/policies/migration.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if h, _, g, _ := s.Location("app-2"); h != "host-b" || g != 2 {
		t.Errorf("app-2 is live on %s generation %d, want host-b generation 2", h, g)
	}
}

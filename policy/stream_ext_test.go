package policy_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/policy/policytest"
)

// What Marshal writes and the examples are streamed: documents of the size
// that matters are written by tools.
func TestWrittenDocumentsStream(t *testing.T) {
	files, err := filepath.Glob("../examples/policies/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatal(files, err)
	}
	var docs [][]byte
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, data)
	}
	for seed := range uint64(20) {
		s, err := policytest.Generate(policytest.Config{Seed: seed, IPv6: seed%2 == 0, Routes: true, Shadows: 2})
		if err != nil {
			t.Fatal(err)
		}
		out, err := policy.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, out)
	}
	big, err := os.ReadFile(writeLarge(t, t.TempDir(), 1000, 3))
	if err != nil {
		t.Fatal(err)
	}
	docs = append(docs, big)
	for i, doc := range docs {
		if !policy.CheckStream(t, doc) {
			t.Errorf("document %d is not streamed:\n%s", i, doc)
		}
	}
}

package bpfgen

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestSplitFields(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"  a  b ", []string{"a", "b"}},
		{`-cc clang -cflags "-O2 -g" x.c`, []string{"-cc", "clang", "-cflags", "-O2 -g", "x.c"}},
	} {
		if got := SplitFields(c.in); !slices.Equal(got, c.want) {
			t.Errorf("SplitFields(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestGenerateArgs(t *testing.T) {
	p := filepath.Join(t.TempDir(), "gen.go")
	src := "package x\n\n//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang prog bpf/prog.c -- -Ibpf\n"
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	want := []string{"-cc", "clang", "prog", "bpf/prog.c", "--", "-Ibpf"}
	if got := GenerateArgs(t, p); !slices.Equal(got, want) {
		t.Errorf("GenerateArgs = %q, want %q", got, want)
	}
}

func TestCopyTree(t *testing.T) {
	src := t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	for f, s := range map[string]string{"a.c": "A", "lib/b.h": "B"} {
		if err := os.WriteFile(filepath.Join(src, f), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dst := filepath.Join(t.TempDir(), "bpf")
	if err := copyTree(src, dst); err != nil {
		t.Fatal(err)
	}
	for f, s := range map[string]string{"a.c": "A", "lib/b.h": "B"} {
		b, err := os.ReadFile(filepath.Join(dst, f))
		if err != nil || string(b) != s {
			t.Errorf("%s: %q, %v; want %q", f, b, err, s)
		}
	}
}

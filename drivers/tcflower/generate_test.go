package tcflower

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGenerated checks that the committed BPF object is what the committed C
// source compiles to: it regenerates with bpf2go into a temporary directory,
// with the flags of gen.go, and compares byte for byte. It needs clang and
// llvm-strip, not root.
func TestGenerated(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: regenerating takes a few seconds")
	}
	for _, tool := range []string{"clang", "llvm-strip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (apt-get install clang llvm): cannot regenerate the BPF object", tool)
		}
	}
	dir := t.TempDir()
	// bpf2go records the source path relative to its working directory,
	// so copy the sources to the same relative place.
	if err := os.MkdirAll(filepath.Join(dir, "bpf"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"tunmiss.c"} {
		b, err := os.ReadFile(filepath.Join("bpf", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "bpf", f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Build bpf2go at the module's pinned version, then run it where the
	// copy of the sources is.
	tool := filepath.Join(dir, "bpf2go")
	if out, err := exec.Command("go", "build", "-o", tool, "github.com/cilium/ebpf/cmd/bpf2go").CombinedOutput(); err != nil {
		t.Fatalf("build bpf2go: %v\n%s", err, out)
	}
	cmd := exec.Command(tool, generateArgs(t)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOPACKAGE=tcflower", "GOFILE=gen.go")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bpf2go: %v\n%s", err, out)
	}
	for _, f := range []string{"tunmiss_bpfel.o", "tunmiss_bpfel.go"} {
		want, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from a fresh bpf2go run (%d vs %d bytes): run go generate ./drivers/tcflower and commit", f, len(got), len(want))
		}
	}
}

// generateArgs reads the bpf2go arguments from the go:generate line of
// gen.go, so that the test and go generate cannot drift apart.
func generateArgs(t *testing.T) []string {
	b, err := os.ReadFile("gen.go")
	if err != nil {
		t.Fatal(err)
	}
	const marker = "github.com/cilium/ebpf/cmd/bpf2go "
	i := bytes.Index(b, []byte(marker))
	if i < 0 {
		t.Fatal("gen.go has no bpf2go directive")
	}
	line := b[i+len(marker):]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	return splitFields(string(line))
}

func splitFields(s string) []string {
	var out []string
	var cur []byte
	quoted := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			quoted = !quoted
		case c == ' ' && !quoted:
			if len(cur) > 0 {
				out = append(out, string(cur))
				cur = cur[:0]
			}
		default:
			cur = append(cur, c)
		}
	}
	if len(cur) > 0 {
		out = append(out, string(cur))
	}
	return out
}

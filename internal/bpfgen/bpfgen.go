// Package bpfgen checks that a committed bpf2go object is what its committed
// C compiles to. The drivers that carry BPF (drivers/xdp, drivers/tcflower)
// call Check from their TestGenerated; it takes paths and names only, so it
// imports no driver.
package bpfgen

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Check regenerates the package's BPF objects with bpf2go into a temporary
// directory, with the arguments of the go:generate line of gen.go, and
// compares each of outputs (paths relative to the package directory, the
// test's working directory) byte for byte. The C sources are the whole
// directory srcDir (e.g. "bpf", headers under it included), copied to the
// same relative place, because bpf2go records source paths relative to its
// working directory. pkg is the Go package name bpf2go writes. Check needs
// clang and llvm-strip, not root; without them, or with -short, it skips.
func Check(t *testing.T, pkg, srcDir string, outputs ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: regenerating takes a few seconds")
	}
	for _, tool := range []string{"clang", "llvm-strip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (apt-get install clang llvm): cannot regenerate the BPF object", tool)
		}
	}
	args := GenerateArgs(t, "gen.go")
	dir := t.TempDir()
	if err := copyTree(srcDir, filepath.Join(dir, srcDir)); err != nil {
		t.Fatal(err)
	}
	// Build bpf2go at the module's pinned version, then run it where the
	// copy of the sources is.
	tool := filepath.Join(dir, "bpf2go")
	if out, err := exec.Command("go", "build", "-o", tool, "github.com/cilium/ebpf/cmd/bpf2go").CombinedOutput(); err != nil {
		t.Fatalf("build bpf2go: %v\n%s", err, out)
	}
	cmd := exec.Command(tool, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOPACKAGE="+pkg, "GOFILE=gen.go")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bpf2go: %v\n%s", err, out)
	}
	for _, f := range outputs {
		want, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from a fresh bpf2go run (%d vs %d bytes): run go generate in the package and commit", f, len(got), len(want))
		}
	}
}

// copyTree copies the regular files under src to dst, keeping their
// relative paths.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}

// GenerateArgs reads the bpf2go arguments from the go:generate line of the
// file at path, so that the test and go generate cannot drift apart.
func GenerateArgs(t testing.TB, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const marker = "github.com/cilium/ebpf/cmd/bpf2go "
	i := bytes.Index(b, []byte(marker))
	if i < 0 {
		t.Fatalf("%s has no bpf2go directive", path)
	}
	line := b[i+len(marker):]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	return SplitFields(string(line))
}

// SplitFields splits a go:generate argument list at spaces, keeping
// double-quoted runs whole (quotes removed), as go generate does.
func SplitFields(s string) []string {
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

package tcflower

import (
	"testing"

	"github.com/nicpath/nicpath/internal/bpfgen"
)

// TestGenerated checks that the committed BPF object is what the committed C
// (bpf/ with its headers) compiles to: it regenerates with bpf2go into a
// temporary directory, with the flags of gen.go, and compares byte for
// byte. It needs clang and llvm-strip, not root.
func TestGenerated(t *testing.T) {
	bpfgen.Check(t, "tcflower", "bpf", "tunmiss_bpfel.o", "tunmiss_bpfel.go")
}

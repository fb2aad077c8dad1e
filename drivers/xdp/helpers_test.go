package xdp

import (
	"os"
	"testing"
)

// requireRoot skips a test that needs root (BPF, namespaces) when not root.
// As root it runs: this kernel has BPF and XDP, so failures are failures.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads BPF programs and creates network namespaces")
	}
}

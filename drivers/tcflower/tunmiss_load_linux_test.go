//go:build linux

package tcflower

import (
	"errors"
	"os"
	"testing"

	"github.com/cilium/ebpf"
)

// TestTunnelMissProgramLoads: the kernel's verifier takes the committed
// BPF action (on this machine's kernel; the VM tier loads it on Debian's
// 6.1 through Open). It needs root, not the VM.
func TestTunnelMissProgramLoads(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loading a BPF program needs root")
	}
	spec, err := loadTunmiss()
	if err != nil {
		t.Fatal(err)
	}
	if pt := spec.Programs[tunmissProgTunnelMiss].Type; pt != ebpf.SchedACT {
		t.Errorf("program type %v, want SchedACT (act_bpf)", pt)
	}
	var objs tunmissObjects
	if err := spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{LogLevel: ebpf.LogLevelInstruction}}); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			t.Fatalf("verifier: %+v", ve)
		}
		t.Fatal(err)
	}
	objs.Close()
}

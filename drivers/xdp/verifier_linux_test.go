//go:build linux

package xdp

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

// TestVerifierStats loads the program with the verifier's statistics and
// logs them: instructions processed and each function's stack depth, on
// whatever kernel runs the test (TestVM runs it on Debian's 6.1 too). The
// deepest call chain must stay within BPF's 512 bytes, which the verifier
// enforces; the test fails when the log no longer says what it checks.
func TestVerifierStats(t *testing.T) {
	requireRoot(t)
	n, err := Open(context.Background(), Config{Ports: []PortConfig{{}}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	spec := n.spec.Copy()
	if err := spec.Variables["in_port"].Set(uint32(1)); err != nil {
		t.Fatal(err)
	}
	var objs struct {
		Prog *ebpf.Program `ebpf:"nicpath_xdp"`
	}
	opts := &ebpf.CollectionOptions{MapReplacements: n.maps, Programs: ebpf.ProgramOptions{LogLevel: ebpf.LogLevelStats}}
	if err := spec.LoadAndAssign(&objs, opts); err != nil {
		t.Fatal(err)
	}
	defer objs.Prog.Close()
	log := objs.Prog.VerifierLog
	m := regexp.MustCompile(`stack depth ([0-9+]+)`).FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("no stack depth in the verifier's log:\n%s", log)
	}
	var sum int
	for _, d := range strings.Split(m[1], "+") {
		v, _ := strconv.Atoi(d)
		sum += v
	}
	t.Logf("%s\n(sum over every function, more than any one call chain: %d bytes)", strings.TrimSpace(log), sum)
}

package remotetest

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// VethNS creates a network namespace named after prefix and the process,
// with each pair of names a veth pair, both ends up, and deletes it in the
// test's cleanup. It returns the namespace's name (its path is
// /var/run/netns/NAME). It needs root; the caller checks.
func VethNS(t testing.TB, prefix string, pairs ...[2]string) string {
	t.Helper()
	ns := fmt.Sprintf("%s-%d", prefix, os.Getpid())
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	sh("ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	for _, p := range pairs {
		sh("ip", "-n", ns, "link", "add", p[0], "type", "veth", "peer", "name", p[1])
		sh("ip", "-n", ns, "link", "set", p[0], "up")
		sh("ip", "-n", ns, "link", "set", p[1], "up")
	}
	return ns
}

package vmtest

import (
	"os"
	"os/exec"
	"strings"
)

// runtimeGOROOT finds the Go installation that builds the test binary: $GOROOT,
// else what `go env GOROOT` says.
func runtimeGOROOT() string {
	if g := os.Getenv("GOROOT"); g != "" {
		return g
	}
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		return strings.TrimSpace(string(out))
	}
	return "/usr/local/go"
}

//go:build !linux

package vmtest

import "os/exec"

// startTied starts cmd; only Linux ties its life to this process's.
func startTied(cmd *exec.Cmd) (release func(), err error) {
	return func() {}, cmd.Start()
}

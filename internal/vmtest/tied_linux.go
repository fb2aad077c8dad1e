package vmtest

import (
	"os/exec"
	"runtime"
	"syscall"
)

// startTied starts cmd so that the kernel kills it (SIGKILL) when this
// process ends, however it ends: a test binary killed by its -timeout, by
// a signal or by go test itself leaves no qemu behind (parented to pid 1
// and burning a core for minutes). release must be called once cmd was
// waited for.
//
// The parent-death signal fires when the thread that started the child
// ends, not only the process: the Go runtime may end a thread a goroutine
// left locked, so the start happens on a goroutine that keeps its thread
// locked, and so alive, until release.
func startTied(cmd *exec.Cmd) (release func(), err error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		started <- cmd.Start()
		<-done
	}()
	if err := <-started; err != nil {
		close(done)
		return nil, err
	}
	return func() { close(done) }, nil
}

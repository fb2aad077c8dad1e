package vmtest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// envTiedHelper makes the test binary play the parent of
// TestChildDiesWithParent: it starts a child ("tied" through startTied, as
// Run starts qemu, or "plain"), prints the child's pid and waits to be
// killed.
const envTiedHelper = "NICPATH_VMTEST_TIED_HELPER"

// childArg marks the helper's child (a sleep) in its command line.
const childArg = "3600.25"

func TestMain(m *testing.M) {
	if mode := os.Getenv(envTiedHelper); mode != "" {
		os.Exit(tiedHelper(mode))
	}
	os.Exit(m.Run())
}

func tiedHelper(mode string) int {
	cmd := exec.Command("sleep", childArg)
	var err error
	switch mode {
	case "tied":
		_, err = startTied(cmd)
	case "plain":
		err = cmd.Start()
	default:
		err = fmt.Errorf("mode %q", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(cmd.Process.Pid)
	// Killed by the test; bounded in case the test went away first.
	time.Sleep(5 * time.Minute)
	return 0
}

// alive reports whether pid is the helper's child and not dead (a zombie
// waiting for pid 1 to reap it is dead).
func alive(t *testing.T, pid int) bool {
	t.Helper()
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || !bytes.Contains(cmdline, []byte(childArg)) {
		return false // gone (or its pid taken by another process since)
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state …: the state follows the last ')'.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// A process started as Run starts qemu is killed when its parent dies,
// without the parent's doing anything (the parent here is killed with
// SIGKILL); one started plainly outlives its parent, which is what left
// VMs running after a test timed out.
func TestChildDiesWithParent(t *testing.T) {
	for _, mode := range []string{"tied", "plain"} {
		t.Run(mode, func(t *testing.T) {
			parent := exec.Command(os.Args[0], "-test.run=^$")
			parent.Env = append(os.Environ(), envTiedHelper+"="+mode)
			parent.Stderr = os.Stderr
			out, err := parent.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			// The helper itself is tied to this test binary.
			release, err := startTied(parent)
			if err != nil {
				t.Fatal(err)
			}
			defer release()
			line := make(chan string, 1)
			go func() {
				s, _ := bufio.NewReader(out).ReadString('\n')
				line <- strings.TrimSpace(s)
			}()
			var pid int
			select {
			case s := <-line:
				if pid, err = strconv.Atoi(s); err != nil {
					parent.Process.Kill()
					parent.Wait()
					t.Fatalf("helper said %q", s)
				}
			case <-time.After(30 * time.Second):
				parent.Process.Kill()
				parent.Wait()
				t.Fatal("the helper did not start its child within 30s")
			}
			// The helper prints the pid once exec has begun, but the
			// kernel closes the exec pipe (Start returns) before it sets
			// the new image's argument area: /proc/pid/cmdline can read
			// empty for a moment after.
			for deadline := time.Now().Add(30 * time.Second); !alive(t, pid); time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					parent.Process.Kill()
					parent.Wait()
					t.Fatalf("the child %d is not running 30s after its parent started it", pid)
				}
			}
			parent.Process.Kill()
			parent.Wait()
			if mode == "plain" {
				// Killed by the kernel, it would be gone by now or
				// soon: it must stay, or this test could not fail.
				time.Sleep(200 * time.Millisecond) // room for a kill that should not come
				if !alive(t, pid) {
					t.Fatalf("the plainly started child %d died with its parent: the tied case proves nothing", pid)
				}
				syscall.Kill(pid, syscall.SIGKILL)
				return
			}
			deadline := time.Now().Add(30 * time.Second)
			for alive(t, pid) {
				if time.Now().After(deadline) {
					syscall.Kill(pid, syscall.SIGKILL)
					t.Fatalf("the child %d outlived its parent by 30s", pid)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

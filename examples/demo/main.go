package main

import (
	"fmt"
	"os"
)

func main() {
	os.Exit(run(os.Stdout, os.Stderr))
}

// run tells the story and returns the exit code: 0 only when every check held.
func run(stdout, stderr *os.File) int {
	fmt.Fprintln(stdout, "nicpath demo: in process (simulated hosts and VMs on software NICs)")
	failed, err := runInProcess(stdout)
	if err != nil {
		fmt.Fprintln(stderr, "demo:", err)
		return 1
	}
	if len(failed) > 0 {
		return 1
	}
	return 0
}

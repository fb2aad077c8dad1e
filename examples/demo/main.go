package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run tells the story and returns the exit code: 0 only when every check
// held. The subcommands serve and traffic are the VMs' applications in the
// namespace story.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		var err error
		switch args[0] {
		case "serve":
			if len(args) != 3 {
				err = errUsage
			} else {
				err = serve(args[1], args[2])
			}
		case "traffic":
			err = runTraffic(args[1:], stdout)
		case "seal":
			err = runSeal(args[1:], stdout)
		default:
			err = errUsage
		}
		if err != nil {
			fmt.Fprintln(stderr, "demo:", err)
			return 1
		}
		return 0
	}
	drivers, err := parseDrivers(os.Getenv("DRIVER"), storyHosts)
	if err != nil {
		fmt.Fprintln(stderr, "demo:", err)
		return 2
	}
	if drivers.remote, err = parseNIC(os.Getenv("NIC")); err != nil {
		fmt.Fprintln(stderr, "demo:", err)
		return 2
	}
	storeKind := os.Getenv("STORE")
	switch storeKind {
	case "", "file":
		storeKind = ""
	case "etcd":
	default:
		fmt.Fprintf(stderr, "demo: STORE=%s: want file (the default: a policy file) or etcd\n", storeKind)
		return 2
	}
	var failed []string
	if ok, why := canRunNamespaces(); ok {
		fmt.Fprintf(stdout, "nicpath demo: network namespaces on this machine, driver %s", drivers)
		if storeKind == "etcd" {
			fmt.Fprintf(stdout, ", desired state in etcd")
		}
		fmt.Fprintln(stdout)
		failed, err = runNamespaces(ctx, stdout, drivers, storeKind)
	} else if storeKind == "etcd" {
		fmt.Fprintf(stderr, "demo: STORE=etcd runs the namespace story (an etcd member and two hosts in namespaces), which cannot run here: %s\n", why)
		return 2
	} else {
		fmt.Fprintf(stdout, "nicpath demo: in process (simulated hosts and VMs on software NICs): %s\n", why)
		if drivers.remote {
			fmt.Fprintln(stdout, "NIC=remote needs the namespace story; the in-process story runs the NICs in its own process")
		}
		if drivers.String() != "softnic" && !drivers.remote {
			fmt.Fprintf(stdout, "DRIVER=%s needs the namespace story; the in-process story uses softnic\n", os.Getenv("DRIVER"))
		}
		failed, err = runInProcess(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "demo:", err)
		return 1
	}
	if len(failed) > 0 {
		return 1
	}
	return 0
}

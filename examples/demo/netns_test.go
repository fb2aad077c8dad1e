package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// As root, the namespace story runs on this machine's kernel: real
// namespaces, veths, vswitchd processes and traffic; and it leaves no
// namespace behind.
func TestNamespaceStory(t *testing.T) {
	if ok, why := canRunNamespaces(); !ok {
		t.Skip("the namespace story cannot run here: " + why)
	}
	if testing.Short() {
		t.Skip("-short: the namespace story builds two binaries and takes about half a minute")
	}
	var out bytes.Buffer
	failed, err := runNamespaces(context.Background(), &out, "softnic", "")
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(failed) > 0 {
		t.Fatalf("%d checks failed: %q\n%s", len(failed), failed, out.String())
	}
	list, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("npd%d-", os.Getpid()%100000)
	if strings.Contains(string(list), prefix) {
		t.Fatalf("namespaces left behind:\n%s", list)
	}
}

// With STORE=etcd the story runs on an etcd member in a control namespace:
// the hosts follow it, report to it, survive its outage and resync.
func TestNamespaceStoryEtcd(t *testing.T) {
	if ok, why := canRunNamespaces(); !ok {
		t.Skip("the namespace story cannot run here: " + why)
	}
	if testing.Short() {
		t.Skip("-short: the etcd story builds three binaries (two from the etcd module) and takes about a minute")
	}
	var out bytes.Buffer
	failed, err := runNamespaces(context.Background(), &out, "softnic", "etcd")
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(failed) > 0 {
		t.Fatalf("%d checks failed: %q\n%s", len(failed), failed, out.String())
	}
	for _, want := range []string{"both hosts resynced from etcd", "STALE: the store is unreachable"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the etcd story does not show %q", want)
		}
	}
}

// TestMain lets the test binary play the VMs' applications when the
// namespace story runs it (see childEnv), as the demo binary does.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

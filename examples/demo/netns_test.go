package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// storyVariants are the driver pairings the namespace story runs on in
// the tests, as DRIVER says them: every host on softnic, every host on
// XDP, and one host of each (the two datapaths exchanging VXLAN on one
// cable). tso is how many of the bulk exchanges' VMs sit on softnic hosts
// and so send TSO super-frames (the kernel turns TSO off on a VM's eth0
// whose peer runs XDP).
var storyVariants = []storyVariant{
	{"softnic", "softnic", "driver softnic", 8},
	{"xdp", "xdp", "driver xdp", 0},
	{"xdp+softnic", "host-a=xdp,host-b=softnic", "driver host-a xdp, host-b softnic", 5},
}

// As root, the namespace story runs on this machine's kernel on every
// driver pairing: real namespaces, veths, vswitchd processes and traffic
// (bulk TCP included); every check it makes holds, and it leaves no
// namespace behind. Each variant goes through the demo's main path with
// DRIVER set, as `make demo DRIVER=…` runs it (TestMakeDemoPassesDriver
// checks that the Makefile does); the binaries are built once for all.
func TestNamespaceStory(t *testing.T) {
	if ok, why := canRunNamespaces(); !ok {
		t.Skip("the namespace story cannot run here: " + why)
	}
	if testing.Short() {
		t.Skip("-short: the namespace story builds two binaries and takes about ten seconds per driver pairing")
	}
	useSharedBinaries(t, "")
	for _, v := range storyVariants {
		t.Run(v.name, func(t *testing.T) { tellStory(t, v) })
	}
}

// storyVariant is one driver pairing of the namespace story, as DRIVER
// says it; says is how the story names it, tso how many VMs of the bulk
// exchanges send TSO super-frames.
type storyVariant = struct {
	name, driver, says string
	tso                int
}

// tellStory runs the demo's main path with DRIVER set to v's and checks
// what it told: every check held, the flows went to the NIC, the bulk
// exchanges came back intact, the inbound connection through a stateful
// ACL ran on host-b's NIC both ways, and no namespace is left.
func tellStory(t *testing.T, v storyVariant) {
	t.Setenv("DRIVER", v.driver)
	t.Setenv("STORE", "")
	var out bytes.Buffer
	if code := run(context.Background(), nil, &out, &out); code != 0 {
		t.Fatalf("DRIVER=%s: the demo exits %d\n%s", v.driver, code, out.String())
	}
	story := out.String()
	for _, want := range []string{
		"network namespaces on this machine, " + v.says + "\n",
		"where=nic",
		"Handled: NIC: offloaded",
		"ok    host-b took the connection's first packet (a tunnelled miss) through its ACLs, then put the connection on its NIC both ways (where=nic)",
		"ok    red-app-2 → 10.0.0.10:5432: ACL deny-in drops the handshake on host-b",
		"ok    host-a's NIC reported blue-web-1's gratuitous ARP as an announcement of 10.0.0.10",
	} {
		if !strings.Contains(story, want) {
			t.Errorf("the story does not show %q", want)
		}
	}
	for _, l := range strings.Split(story, "\n") {
		if strings.Contains(l, "bytes back intact") || strings.Contains(l, "over its") {
			t.Log(strings.TrimSpace(l))
		}
	}
	if n := strings.Count(story, "bytes back intact"); n != 5 {
		t.Errorf("%d bulk exchanges came back intact, want 5 (4 in the bulk section, 1 inbound)", n)
	}
	checkSealedStep(t, story, strings.TrimPrefix(strings.Split(v.driver, ",")[0], "host-a="))
	if n := strings.Count(story, "sent TSO super-frames"); n != v.tso {
		t.Errorf("%d VMs showed TSO super-frames in the bulk exchanges, want %d", n, v.tso)
	}
	if !strings.Contains(story, "all ") || strings.Contains(story, "FAIL") {
		t.Errorf("the story does not say that every check held:\n%s", story)
	}
	noNamespacesLeft(t)
}

// `make demo DRIVER=…` runs the demo's main path with DRIVER in its
// environment (what TestNamespaceStory's variants set).
func TestMakeDemoPassesDriver(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	for _, d := range []string{"xdp", "host-a=xdp,host-b=softnic"} {
		out, err := exec.Command("make", "-n", "-C", "../..", "demo", "DRIVER="+d).CombinedOutput()
		if err != nil {
			t.Fatalf("make -n demo: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), `DRIVER="`+d+`"`) || !strings.Contains(string(out), "run ./examples/demo") {
			t.Errorf("make demo DRIVER=%s does not run the demo with DRIVER=%s:\n%s", d, d, out)
		}
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
	failed, err := runNamespaces(context.Background(), &out, hostDrivers{def: "softnic", host: storyHosts}, "etcd")
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
	noNamespacesLeft(t)
}

func noNamespacesLeft(t *testing.T) {
	t.Helper()
	list, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("npd%d-", os.Getpid()%100000)
	if strings.Contains(string(list), prefix) {
		t.Fatalf("namespaces left behind:\n%s", list)
	}
}

// shared holds the binaries built once for the tests' stories, by store
// kind; TestMain removes them.
var shared struct {
	sync.Mutex
	dir  string
	errs map[string]error
}

// useSharedBinaries builds the story's binaries for storeKind once per
// test binary and has the stories of t use them.
func useSharedBinaries(t *testing.T, storeKind string) {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if shared.errs == nil {
		shared.errs = map[string]error{}
	}
	if shared.dir == "" {
		d, err := os.MkdirTemp("", "nicpath-demo-bin-")
		if err != nil {
			t.Fatal(err)
		}
		shared.dir = d
	}
	dir := filepath.Join(shared.dir, "store-"+storeKind)
	if _, done := shared.errs[storeKind]; !done {
		err := os.Mkdir(dir, 0o755)
		if err == nil {
			err = buildBinaries(dir, storeKind)
		}
		shared.errs[storeKind] = err
	}
	if err := shared.errs[storeKind]; err != nil {
		t.Fatal(err)
	}
	prebuilt[storeKind] = dir
	t.Cleanup(func() { delete(prebuilt, storeKind) })
}

// TestMain lets the test binary play the VMs' applications when the
// namespace story runs it (see childEnv), as the demo binary does.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

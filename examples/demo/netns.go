package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nicpath/nicpath/control"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
)

// The namespace story: the same two hosts and VMs as the in-process story,
// made of Linux network namespaces on this machine. Each host is a
// namespace running vswitchd on its own software NIC (or DRIVER=xdp); each VM
// is a namespace whose eth0 is a veth into its host's namespace; the two
// hosts' uplinks are the two ends of one veth pair (the underlay cable).
// Nothing is added to the root namespace, and everything is removed at the
// end, also when the story fails or is interrupted.

// nsStory holds what the story created, to remove it.
type nsStory struct {
	s       *story
	prefix  string // unique to this run: every namespace's name starts with it
	dir     string // configurations, logs (and the binaries, unless prebuilt)
	bin     string // vswitchd, vswitchctl (and nicstore with etcd)
	drivers hostDrivers
	store   string // "" (a policy file) or "etcd"
	etcd    *exec.Cmd
	self    string // this binary, run inside VM namespaces as their applications
	st      *policy.State
	policy  []byte   // the policy the hosts run: the embedded default and the sealed step's tenant
	created []string // namespaces, in creation order
	procs   []*exec.Cmd
	undo    []func()
	verbose bool
	once    sync.Once
}

// vmNS is a VM's namespace name; hostNS a host's.
func (n *nsStory) vmNS(vm string) string     { return n.prefix + vm }
func (n *nsStory) hostNS(host string) string { return n.prefix + host }

// hostIf is the name of a VM's port in its host's namespace (15 bytes at most).
func hostIf(vm string) string {
	s := "v-" + vm
	if len(s) > 15 {
		s = s[:15]
	}
	return s
}

func (n *nsStory) run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	out, err := cmd.CombinedOutput()
	if n.verbose {
		fmt.Fprintf(n.s.w, "   $ %s %s\n", name, strings.Join(args, " "))
	}
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func (n *nsStory) ip(args ...string) error {
	_, err := n.run("ip", args...)
	return err
}

// in runs a command inside a namespace.
func (n *nsStory) in(ns string, name string, args ...string) (string, error) {
	return n.run("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// cleanup stops what the story started and deletes its namespaces (the
// veths inside go with them).
func (n *nsStory) cleanup() { n.once.Do(n.removeAll) }

func (n *nsStory) removeAll() {
	for _, u := range n.undo {
		u()
	}
	for _, p := range n.procs {
		if p.Process != nil {
			p.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, p := range n.procs {
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			p.Process.Kill()
			<-done
		}
	}
	for i := len(n.created) - 1; i >= 0; i-- {
		exec.Command("ip", "netns", "del", n.created[i]).Run()
	}
	if n.dir != "" {
		os.RemoveAll(n.dir)
	}
}

func (n *nsStory) addNS(name string) error {
	if err := n.ip("netns", "add", name); err != nil {
		return err
	}
	n.created = append(n.created, name)
	// IPv6 off before any interface exists: the story is about IPv4, and
	// the interfaces' router solicitations and MLD reports would only add
	// exception-path noise to the flow dumps.
	for _, k := range []string{"all", "default"} {
		n.in(name, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/"+k+"/disable_ipv6")
	}
	return n.ip("-n", name, "link", "set", "lo", "up")
}

// start runs a long-lived command inside a namespace, its output to logFile.
func (n *nsStory) start(ns, logFile string, name string, args ...string) (*exec.Cmd, error) {
	f, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	f.Close()
	n.procs = append(n.procs, cmd)
	return cmd, nil
}

// canRunNamespaces says whether this machine can run the namespace story,
// and if not, why.
func canRunNamespaces() (bool, string) {
	if runtime.GOOS != "linux" {
		return false, "network namespaces are Linux only"
	}
	if os.Geteuid() != 0 {
		return false, "not root: creating network namespaces needs root"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return false, "iproute2's ip is not installed"
	}
	if os.Getenv("NICPATH_DEMO") == "inprocess" {
		return false, "NICPATH_DEMO=inprocess"
	}
	return true, ""
}

// buildBinaries builds vswitchd and vswitchctl into dir; with the etcd
// store, vswitchd and nicstore come from the etcd module.
func buildBinaries(dir, storeKind string) error {
	goBin := os.Getenv("GO")
	if goBin == "" {
		goBin = "go"
	}
	if _, err := exec.LookPath(goBin); err != nil {
		return fmt.Errorf("the namespace story builds vswitchd with the go command: %w (set GO to its path)", err)
	}
	gomod, err := exec.Command(goBin, "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" || strings.TrimSpace(string(gomod)) == os.DevNull {
		return fmt.Errorf("finding the module (run the demo from the repository): %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	builds := [][]string{{".", "./examples/vswitchd", "./examples/vswitchctl"}}
	if storeKind == "etcd" {
		builds = [][]string{{".", "./examples/vswitchctl"}, {"store/etcd", "./cmd/vswitchd", "./cmd/nicstore"}}
	}
	builds[0] = append(builds[0], "./examples/nicd") // NIC=remote's NIC side
	for _, b := range builds {
		cmd := exec.Command(goBin, append([]string{"build", "-o", dir}, b[1:]...)...)
		cmd.Dir = filepath.Join(root, b[0])
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("building %s in %s: %v\n%s", strings.Join(b[1:], " "), cmd.Dir, err, out)
		}
	}
	return nil
}

// runNamespaces tells the story on namespaces. It returns the failed checks,
// or an error when the story could not be set up.
func runNamespaces(ctx context.Context, w io.Writer, drivers hostDrivers, storeKind string) (failed []string, err error) {
	s := &story{w: w}
	dir, err := os.MkdirTemp("", "nicpath-demo-")
	if err != nil {
		return nil, err
	}
	pol, err := storyPolicy(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	st, err := policy.Parse(defaultPolicyName+" with the sealed step's tenant", pol)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	n := &nsStory{s: s, st: st, policy: pol, dir: dir, drivers: drivers, store: storeKind, self: self, prefix: fmt.Sprintf("npd%d-", os.Getpid()%100000),
		verbose: os.Getenv("NICPATH_DEMO_VERBOSE") != ""}
	defer func() {
		n.cleanup()
		s.say("\nremoved the namespaces %s* and everything in them", n.prefix)
	}()
	// An interrupt must not leave namespaces behind.
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			n.cleanup()
			os.Exit(130)
		case <-done:
		}
	}()

	s.title("Building vswitchd and vswitchctl")
	bin := n.dir
	if prebuilt[n.store] != "" {
		bin = prebuilt[n.store]
		s.say("built before, into %s", bin)
	} else {
		if err := buildBinaries(bin, n.store); err != nil {
			return nil, err
		}
		s.say("built into %s", bin)
	}
	n.bin = bin
	vswitchd, vswitchctl := filepath.Join(bin, "vswitchd"), filepath.Join(bin, "vswitchctl")

	s.title("Creating the topology (namespaces %s*)", n.prefix)
	hosts := storyHosts
	for _, h := range hosts {
		if err := n.addNS(n.hostNS(h)); err != nil {
			return nil, err
		}
	}
	// The underlay cable: one veth pair between the two hosts' uplinks,
	// with known MACs: each host's next hop is the other's uplink.
	if err := n.ip("-n", n.hostNS("host-a"), "link", "add", "up0", "address", uplinkMACOf("host-a").String(), "type", "veth",
		"peer", "name", "up0", "address", uplinkMACOf("host-b").String(), "netns", n.hostNS("host-b")); err != nil {
		return nil, err
	}
	for i, h := range hosts {
		if err := n.ip("-n", n.hostNS(h), "link", "set", "up0", "up"); err != nil {
			return nil, err
		}
		if drivers.of(h) == "tcflower" {
			if err := n.tcflowerHost(h, hosts[1-i]); err != nil {
				return nil, err
			}
		}
		// A softnic host cabled to an XDP host receives what the XDP
		// program redirects to its uplink.
		if peer := hosts[1-i]; drivers.of(h) != "xdp" && drivers.of(peer) == "xdp" {
			undo, err := prepareXDPPeer(n.hostNS(h), "up0")
			if err != nil {
				return nil, fmt.Errorf("%s's uplink: %w", h, err)
			}
			n.undo = append(n.undo, undo)
		}
	}
	router := st.RouterMAC()
	ports := map[string]map[string]string{}
	for _, h := range hosts {
		ports[h] = map[string]string{}
		for _, vm := range st.LocalVMs(h) {
			if err := n.addVM(vm, h, router); err != nil {
				return nil, err
			}
			ports[h][vm.Name] = hostIf(vm.Name)
			var cas []string
			for _, ca := range vm.CAs {
				if ca.Is4() {
					cas = append(cas, ca.String())
				}
			}
			s.say("%-8s %-11s tenant %-4s CA %-11s MAC %s  (namespace %s)", h, vm.Name, vm.Tenant, strings.Join(cas, ","), vm.MAC, n.vmNS(vm.Name))
		}
	}
	s.say("underlay: host-a up0 <-> host-b up0 (a veth pair); VXLAN between PAs 198.18.0.1 and 198.18.0.2")

	if n.store == "etcd" {
		if err := n.startEtcd(hosts); err != nil {
			return nil, err
		}
	}

	s.title("Starting one vswitchd per host (driver %s)", drivers)
	socks := map[string]string{}
	for _, h := range hosts {
		if drivers.remote {
			if err := n.writeNICD(h, ports[h]); err != nil {
				return nil, err
			}
			if err := n.startNICD(h); err != nil {
				return nil, err
			}
		}
		cfg, sock, err := n.writeConfig(h, ports[h])
		if err != nil {
			return nil, err
		}
		socks[h] = sock
		if _, err := n.start(n.hostNS(h), filepath.Join(n.dir, h+".log"), vswitchd, "-config", cfg); err != nil {
			return nil, err
		}
	}
	ctl := func(h string, args ...string) (string, error) {
		return n.run(vswitchctl, append([]string{"-s", socks[h]}, args...)...)
	}
	for _, h := range hosts {
		if err := waitFor(n.wait(startWait), func() error { _, err := ctl(h, "show"); return err }); err != nil {
			hint := ""
			if drivers.of(h) == "tcflower" {
				hint = "\n(tc-flower needs a kernel with cls_flower and the tc actions; the VM tier tells this story on one: go test -run TestNamespaceStoryVM ./examples/demo)"
			}
			return nil, fmt.Errorf("%s's vswitchd did not come up: %v\n%s%s", h, err, n.tail(h+".log"), hint)
		}
	}
	var out string
	for _, h := range hosts {
		out, _ = ctl(h, "show")
		if h == hosts[0] || !drivers.uniform() {
			s.say("$ vswitchctl -s %s show", socks[h])
			s.say("%s", indent(out, "  "))
		}
		s.check(strings.Contains(out, drivers.shows(h)), "%s's vswitchd runs the %s driver", h, drivers.of(h))
	}

	s.title("Starting the VMs' applications (UDP 53 and 7, TCP 22 and 5432: each answers with its VM's name)")
	for _, h := range hosts {
		for _, vm := range st.LocalVMs(h) {
			if err := n.startServer(vm.Name); err != nil {
				return nil, err
			}
		}
	}

	traffic := func(vm string, args ...string) (string, error) {
		return n.in(n.vmNS(vm), "env", append([]string{childEnv + "=1", n.self, "traffic"}, n.scaleWaits(args)...)...)
	}
	check := func(ok bool, out string, err error, format string, a ...any) {
		if err != nil {
			s.check(false, format+": %v", append(a, err)...)
			return
		}
		s.check(ok, format, a...)
		_ = out
	}

	s.title("ping blue-web-1 (host-a) → 10.0.0.11 (blue-web-2, host-b)")
	out, err = traffic("blue-web-1", "ping", "-n", "5", "-w", "2s", "10.0.0.11")
	s.say("%s", indent(out, "  "))
	check(strings.Count(out, "bytes from 10.0.0.11") == 5, out, err, "5 echo replies from 10.0.0.11")

	s.title("flows on host-a after the ping: the first packet went through the host, the rest stayed on the NIC")
	out, _ = ctl("host-a", "flows")
	s.say("$ vswitchctl flows\n%s", indent(out, "  "))
	check(strings.Contains(out, "where=nic"), out, nil, "host-a's ping flows are on the NIC")
	n.learnedStep(ctl)
	if drivers.remote {
		if err := n.remoteFaults(ctl, traffic); err != nil {
			return nil, err
		}
	}

	s.title("UDP blue-web-1 → 10.0.0.11:53, with host-a's exception path captured")
	capFile := filepath.Join(n.dir, "host-a-exceptions.pcapng")
	out, _ = ctl("host-a", "capture", "start", capFile)
	s.say("$ vswitchctl capture start %s\n%s", capFile, indent(out, "  "))
	out, err = traffic("blue-web-1", "udp", "-n", "5", "-w", "3s", "-m", "query", "10.0.0.11:53")
	s.say("%s", indent(out, "  "))
	check(strings.Count(out, "blue-web-2 got query") == 5, out, err, "5 answers, all from blue-web-2")
	out, _ = ctl("host-a", "capture", "stop")
	s.say("$ vswitchctl capture stop\n%s", indent(out, "  "))
	summary, err := readCapture(capFile)
	s.say("%s", indent(summary, "  "))
	check(err == nil && strings.Contains(summary, "reason=miss"), summary, err,
		"the capture reads back as pcapng (gopacket's pcapgo): the first packets, with their reasons")

	s.title("TCP blue-web-2 → 10.0.1.10:5432 (blue-db-1 in VNET db: routed on host-b, allowed by ACL db-from-web)")
	out, err = traffic("blue-web-2", "tcp", "-n", "3", "-w", "3s", "-m", "SELECT 1", "10.0.1.10:5432")
	s.say("%s", indent(out, "  "))
	check(strings.Count(out, "blue-db-1 got SELECT 1") == 3, out, err, "3 connections answered by blue-db-1")

	out, err = traffic("blue-web-2", "tcp", "-n", "1", "-w", "1s", "10.0.1.10:22")
	check(err != nil && !strings.Contains(out, "got"), out, nil, "blue-web-2 → blue-db-1:22 is refused by ACL db-default-deny (no answer)")

	s.title("Bulk TCP: %d MB each way, every byte checked (the kernels' segmentation offloads at work)", bulkSize>>20)
	for _, b := range []struct{ from, to, server, why string }{
		{"blue-web-1", "10.0.0.11:22", "blue-web-2", "host-a → host-b, VXLAN"},
		{"blue-web-2", "10.0.0.10:22", "blue-web-1", "host-b → host-a, VXLAN"},
		{"red-app-2", "10.0.0.10:22", "red-app-1", "host-a → host-b, tenant red's stateful ACL ssh-in"},
		{"blue-web-2", "10.0.1.10:5432", "blue-db-1", "routed on host-b, stateful ACL db-from-web"},
	} {
		watches := map[string]*frameWatch{}
		for _, vm := range []string{b.from, b.server} {
			v, _ := st.VM(vm)
			watches[vm] = watchFrames(n.vmNS(vm), "eth0", v.MAC[:], vmMTU)
		}
		out, err = traffic(b.from, "bulk", "-n", "1", "-w", "5s", "-s", fmt.Sprint(bulkSize), b.to)
		s.say("$ %s: bulk to %s\n%s", b.from, b.to, indent(out, "  "))
		check(strings.Contains(out, b.server+" got bulk") && strings.Contains(out, "back intact"), out, err,
			"%s → %s (%s): %d MB intact both ways, answered by %s", b.from, b.to, b.why, bulkSize>>20, b.server)
		for _, vm := range []string{b.from, b.server} {
			frames, over, largest, werr := watches[vm].stop()
			v, _ := st.VM(vm)
			if werr != nil {
				s.check(false, "watching %s's eth0: %v", vm, werr)
				continue
			}
			s.say("  %s's eth0 sent %d frames, %d of them over its %d-byte MTU, the largest %d bytes", vm, frames, over, vmMTU, largest)
			// Attaching XDP to a veth turns its peer's TSO/USO off
			// (veth_xdp_set): a VM on an XDP host segments itself, and the
			// story on XDP has no super-frames to show. softnic segments
			// them itself; on tc-flower the kernel's tunnel device
			// encapsulates them whole and the stack segments them.
			if drv := drivers.of(v.Host); drv == "softnic" || drv == "tcflower" {
				s.check(over > 0, "%s (on %s) sent TSO super-frames (64 KB segments), which its host's %s carried: every byte arrived", vm, drv, drv)
			}
		}
	}

	s.title("Isolation: the tenants share addresses, never packets")
	out, err = traffic("red-app-2", "tcp", "-n", "3", "-w", "3s", "-m", "ssh", "10.0.0.10:22")
	s.say("%s", indent(out, "  "))
	check(strings.Count(out, "red-app-1 got ssh") == 3, out, err,
		"red-app-2 → 10.0.0.10:22 reaches red-app-1 (host-b), not blue-web-1 (10.0.0.10 on red-app-2's own host)")
	out, err = traffic("blue-web-1", "udp", "-n", "3", "-w", "3s", "-m", "who", "10.0.0.11:7")
	s.say("%s", indent(out, "  "))
	check(strings.Count(out, "blue-web-2 got who") == 3, out, err, "blue-web-1 → 10.0.0.11:7 is answered by blue-web-2, never red-app-2 (10.0.0.11 on host-a)")
	// blue-web-1 addresses red-app-2's MAC directly.
	red2, _ := st.VM("red-app-2")
	web1, _ := st.VM("blue-web-1")
	if err := n.ip("-n", n.vmNS("blue-web-1"), "neigh", "replace", "10.0.0.11", "lladdr", hal.MAC(red2.MAC).String(), "dev", "eth0", "nud", "permanent"); err != nil {
		return nil, err
	}
	out, err = traffic("blue-web-1", "udp", "-n", "2", "-m", "cross-tenant", "10.0.0.11:7")
	s.say("%s", indent(out, "  "))
	logRed := n.readFile("red-app-2.recv")
	check(!strings.Contains(logRed, "cross-tenant") && !strings.Contains(logRed, "who"), out, nil,
		"blue-web-1 sending to red-app-2's MAC (02:00:00:0e:00:02): red-app-2 received nothing from tenant blue")
	// The flow of the frames addressed to red-app-2's MAC, explained.
	var cross []control.Flow
	if raw, err := ctl("host-a", "-json", "flows"); err == nil && json.Unmarshal([]byte(raw), &cross) == nil {
		for _, f := range cross {
			if strings.Contains(f.Match, "eth_src="+hal.MAC(web1.MAC).String()) && strings.Contains(f.Match, "eth_dst="+hal.MAC(red2.MAC).String()) {
				out, _ = ctl("host-a", "explain", fmt.Sprint(f.Rule))
				s.say("why, by host-a's explain of that flow (the sender's VNET decides, whatever the MAC says):\n$ vswitchctl explain %d\n%s", f.Rule, indent(out, "  "))
				break
			}
		}
	}

	n.inboundStory(ctl, traffic, check)

	n.sealedStep(ctl, capFile, netip.MustParseAddr("10.0.0.11"))

	s.title("Flows and counters")
	total := 0
	for _, h := range hosts {
		out, _ := ctl(h, "flows")
		s.say("$ vswitchctl -s %s flows\n%s", socks[h], indent(out, "  "))
		var fs []control.Flow
		if raw, err := ctl(h, "-json", "flows", "--nic"); err == nil && json.Unmarshal([]byte(raw), &fs) == nil {
			total += len(fs)
		}
		out, _ = ctl(h, "stats")
		s.say("$ vswitchctl -s %s stats\n%s", socks[h], indent(out, "  "))
	}
	s.check(total > 0, "%d flows on the two NICs", total)
	var fs []control.Flow
	raw, _ := ctl("host-a", "-json", "flows", "--nic")
	json.Unmarshal([]byte(raw), &fs)
	var udp *control.Flow
	for i := range fs {
		m := fs[i].Match
		// Exact, or a port-wildcard flow from blue-web-1 (no l4 fields:
		// every UDP connection to blue-web-2, port 53 included).
		wild := strings.HasPrefix(m, "in_port=1,") && strings.HasSuffix(m, ",ip_dst=10.0.0.11/32,proto=17")
		if strings.Contains(m, ",l4_dst=53,") || strings.HasSuffix(m, ",l4_dst=53") || wild {
			udp = &fs[i]
		}
	}
	if udp != nil {
		out, _ = ctl("host-a", "explain", fmt.Sprint(udp.Rule))
		s.say("$ vswitchctl explain %d\n%s", udp.Rule, indent(out, "  "))
	}
	s.check(udp != nil, "the UDP flow blue-web-1 → blue-web-2:53 is on host-a's NIC")

	if n.store == "etcd" {
		n.etcdStory(ctl, traffic)
	}

	s.title("Summary")
	if len(s.failed) == 0 {
		s.say("all %d checks held", s.checks)
	} else {
		s.say("%d of %d checks FAILED:", len(s.failed), s.checks)
		for _, f := range s.failed {
			s.say("  - %s", f)
		}
		for _, h := range hosts {
			s.say("%s's vswitchd log (end):\n%s", h, n.tail(h+".log"))
		}
	}
	return s.failed, nil
}

// addVM makes vm's namespace, its eth0 (MAC and customer address from the
// policy) and the port in its host's namespace. The vswitch does not answer
// ARP, so the VM gets static neighbours: its VNET's peers by their MACs, and
// a default route through the routing domain's MAC.
func (n *nsStory) addVM(vm policy.VM, host string, router policy.MAC) error {
	ns := n.vmNS(vm.Name)
	if err := n.addNS(ns); err != nil {
		return err
	}
	hif := hostIf(vm.Name)
	if err := n.ip("-n", n.hostNS(host), "link", "add", hif, "type", "veth", "peer", "name", "eth0", "netns", ns); err != nil {
		return err
	}
	// 1450 bytes: an encapsulated packet (50 bytes of VXLAN over IPv4) still
	// fits the underlay's 1500.
	for _, args := range [][]string{
		{"-n", n.hostNS(host), "link", "set", hif, "mtu", fmt.Sprint(vmMTU), "up"},
		{"-n", ns, "link", "set", "eth0", "address", hal.MAC(vm.MAC).String(), "mtu", fmt.Sprint(vmMTU), "up"},
	} {
		if err := n.ip(args...); err != nil {
			return err
		}
	}
	vn, _ := n.st.VNET(vm.Tenant, vm.VNET)
	var ca netip.Addr
	for _, a := range vm.CAs {
		if a.Is4() {
			ca = a
			break
		}
	}
	var subnet netip.Prefix
	for _, p := range vn.Subnets {
		if p.Contains(ca) {
			subnet = p
		}
	}
	if n.drivers.of(host) == "xdp" {
		undo, err := prepareXDPPeer(ns, "eth0")
		if err != nil {
			return fmt.Errorf("%s: %w", vm.Name, err)
		}
		n.undo = append(n.undo, undo)
	}
	if err := n.ip("-n", ns, "addr", "replace", netip.PrefixFrom(ca, subnet.Bits()).String(), "dev", "eth0"); err != nil {
		return err
	}
	for m := range n.st.Mappings() {
		if m.VNI == vn.VNI && m.CA.Is4() && m.CA != ca {
			if err := n.ip("-n", ns, "neigh", "replace", m.CA.String(), "lladdr", hal.MAC(m.MAC).String(), "dev", "eth0", "nud", "permanent"); err != nil {
				return err
			}
		}
	}
	if err := n.sealedVMIPv6(vm); err != nil {
		return err
	}
	// The gateway address is the subnet's first; only its MAC matters.
	gw := subnet.Addr().Next()
	if err := n.ip("-n", ns, "neigh", "replace", gw.String(), "lladdr", hal.MAC(router).String(), "dev", "eth0", "nud", "permanent"); err != nil {
		return err
	}
	return n.ip("-n", ns, "route", "replace", "default", "via", gw.String(), "dev", "eth0")
}

func (n *nsStory) writeConfig(host string, ports map[string]string) (cfgPath, sock string, err error) {
	pol := filepath.Join(n.dir, "policy.yaml")
	if err := os.WriteFile(pol, n.policy, 0o644); err != nil {
		return "", "", err
	}
	source := "policy: policy.yaml"
	if n.store == "etcd" {
		source = "store: " + etcdStore
	}
	sock = filepath.Join(n.dir, host+".sock")
	var b strings.Builder
	// The next hop is the other host's uplink: a host accepts tunnelled
	// frames only for its own uplink's MAC.
	peer := "host-a"
	if host == peer {
		peer = "host-b"
	}
	drv := n.drivers.of(host)
	if n.drivers.remote {
		drv = "remote\n" + n.remoteDriverLines(host)
	}
	fmt.Fprintf(&b, "host: %s\ndriver: %s\n%s\nuplink: up0\nnext_hop_mac: %s\ncontrol: %s\nlog_level: info\nseal_public_key: %s\nports:\n",
		host, drv, source, uplinkMACOf(peer), sock, n.sealPubFile(host))
	names := make([]string, 0, len(ports))
	for vm := range ports {
		names = append(names, vm)
	}
	sort.Strings(names)
	for _, vm := range names {
		fmt.Fprintf(&b, "  %s: %s\n", vm, ports[vm])
	}
	if timeScale() > 1 {
		// The story looks at its first flows again at its end: under a
		// stretched clock (an emulated machine, loaded) they must not idle
		// out before (vswitch's default is 30 s); ten minutes bound the
		// whole story there.
		fmt.Fprintf(&b, "flow_idle: %s\n", 10*time.Minute)
	}
	switch kind := n.drivers.of(host); {
	case n.drivers.remote:
		// nicd opens the driver (remote.go).
	case kind == "xdp":
		fmt.Fprintf(&b, "netns: %s\n", filepath.Join("/run/netns", n.hostNS(host)))
	case kind == "tcflower":
		fmt.Fprintf(&b, "netns: %s\ntunnels:\n  vxlan: %s\n", filepath.Join("/run/netns", n.hostNS(host)), tunnelDev)
	}
	cfgPath = filepath.Join(n.dir, host+".yaml")
	return cfgPath, sock, os.WriteFile(cfgPath, []byte(b.String()), 0o644)
}

// tcflowerHost readies host's namespace for the tc-flower driver, whose
// encapsulation and decapsulation the kernel's own tunnel device does: a
// flow-based VXLAN device (tunnelDev), the host's provider address on its
// uplink (the device writes the outer source from it and takes in what is
// sent to it), and a permanent neighbour entry for the peer's provider
// address with the peer's uplink MAC (the outer destination MAC; a softnic
// or XDP peer answers no ARP). Replace, not add: the kernel may have made
// an entry of its own by then.
func (n *nsStory) tcflowerHost(host, peer string) error {
	hns := n.hostNS(host)
	pa, ok := n.hostPA(host)
	if !ok {
		return fmt.Errorf("no host %s in the policy", host)
	}
	peerPA, ok := n.hostPA(peer)
	if !ok {
		return fmt.Errorf("no host %s in the policy", peer)
	}
	for _, args := range [][]string{
		{"-n", hns, "addr", "replace", netip.PrefixFrom(pa, 24).String(), "dev", "up0"},
		{"-n", hns, "neigh", "replace", peerPA.String(), "lladdr", uplinkMACOf(peer).String(), "dev", "up0", "nud", "permanent"},
		{"-n", hns, "link", "add", tunnelDev, "type", "vxlan", "external", "dstport", "4789"},
		{"-n", hns, "link", "set", tunnelDev, "up"},
	} {
		if err := n.ip(args...); err != nil {
			return fmt.Errorf("%s's tc-flower tunnel: %w", host, err)
		}
	}
	return nil
}

// hostPA is host's provider address in the policy.
func (n *nsStory) hostPA(host string) (netip.Addr, bool) {
	h, ok := n.st.Host(host)
	return h.PA, ok
}

// tunnelDev is a tc-flower host's flow-based VXLAN device.
const tunnelDev = "vx0"

// wait is d scaled by NICPATH_DEMO_TIMESCALE (a whole number, default 1):
// the VM tier emulates its CPUs, and everything there takes longer.
func (n *nsStory) wait(d time.Duration) time.Duration {
	return d * time.Duration(timeScale())
}

// scaleWaits returns a traffic command line whose -w wait is scaled by
// wait.
func (n *nsStory) scaleWaits(args []string) []string {
	out := append([]string(nil), args...)
	for i := 0; i+1 < len(out); i++ {
		if out[i] == "-w" {
			if d, err := time.ParseDuration(out[i+1]); err == nil {
				out[i+1] = n.wait(d).String()
			}
		}
	}
	return out
}

func timeScale() int {
	if k, err := strconv.Atoi(os.Getenv("NICPATH_DEMO_TIMESCALE")); err == nil && k > 1 && k <= 100 {
		return k
	}
	return 1
}

// startServer runs the VM's applications and waits until they listen.
func (n *nsStory) startServer(vm string) error {
	logFile := filepath.Join(n.dir, vm+".out")
	if _, err := n.start(n.vmNS(vm), logFile, "env", childEnv+"=1", n.self, "serve", vm, filepath.Join(n.dir, vm+".recv")); err != nil {
		return err
	}
	return waitFor(n.wait(startWait), func() error {
		b, _ := os.ReadFile(logFile)
		if bytes.Contains(b, []byte("ready")) {
			return nil
		}
		return fmt.Errorf("%s's applications did not start: %s", vm, b)
	})
}

func (n *nsStory) readFile(name string) string {
	b, _ := os.ReadFile(filepath.Join(n.dir, name))
	return string(b)
}

// tail returns the last lines of a log in the story's directory.
func (n *nsStory) tail(name string) string {
	f, err := os.Open(filepath.Join(n.dir, name))
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 20 {
			lines = lines[1:]
		}
	}
	return indent(strings.Join(lines, "\n"), "  ")
}

func waitFor(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// childEnv marks the runs of this binary as a VM's application. The test
// binary is "this binary" when the story runs under go test: its TestMain
// dispatches on it rather than run the tests again inside a VM.
const childEnv = "NICPATH_DEMO_CHILD"

var errUsage = errors.New("usage: demo [traffic ping|udp|tcp … | serve <vm> <log> | seal -nic-key K -key F dst…]")

// uplinkMACOf is host's uplink MAC in the namespace story.
func uplinkMACOf(host string) hal.MAC {
	if host == "host-a" {
		return hal.MustMAC("02:00:00:00:fe:0a")
	}
	return hal.MustMAC("02:00:00:00:fe:0b")
}

// storyHosts are the hosts of the namespace story (the embedded policy's).
var storyHosts = []string{"host-a", "host-b"}

// prebuilt, by store kind, names a directory holding binaries built
// before (buildBinaries' output): the tests set it to build once for every
// story they tell. The demo itself always builds.
var prebuilt = map[string]string{}

// bulkSize is what each bulk TCP exchange of the story sends each way.
const bulkSize = 4 << 20

// vmMTU is the VMs' MTU: 1450 bytes, so that an encapsulated packet (50
// bytes of VXLAN over IPv4) still fits the underlay's 1500.
const vmMTU = 1450

// startWait bounds how long a daemon or a VM's applications may take to
// come up. It is a bound, not an expectation: under load (CI, two cores
// shared) loading and verifying the XDP program alone has taken seconds.
const startWait = 30 * time.Second

package main

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/nicpath/nicpath/drivers/remote"
	"github.com/nicpath/nicpath/policy"
)

// NIC=remote: each host's NIC runs in a process of its own, nicd (the
// NIC side of a SmartNIC or DPU, examples/nicd), serving the host's driver
// (DRIVER: softnic bound to the veths, or XDP) over securechan on a unix
// socket; the host's vswitchd opens it with driver: remote. Both ends pin
// each other's key, from files the story writes with remote's key
// helpers (what nicd keygen writes).

// parseNIC reads NIC: "" or "local" (the NIC in vswitchd's process) or
// "remote" (in nicd's).
func parseNIC(s string) (bool, error) {
	switch strings.TrimSpace(s) {
	case "", "local":
		return false, nil
	case "remote":
		return true, nil
	}
	return false, fmt.Errorf("NIC=%s: want local (the default: the NIC in vswitchd's process) or remote (in a nicd process of its own)", s)
}

// nicdConfig is where host's nicd configuration is.
func (n *nsStory) nicdConfig(host string) string { return filepath.Join(n.dir, host+"-nicd.yaml") }

// nicdSocket is where host's nicd listens.
func (n *nsStory) nicdSocket(host string) string { return filepath.Join(n.dir, host+"-nic.sock") }

// writeNICD writes host's keys and nicd configuration: the host's driver
// on its namespace's interfaces (ports maps each VM to its interface).
func (n *nsStory) writeNICD(host string, ports map[string]string) error {
	keyPath := func(s string) string { return filepath.Join(n.dir, host+"-"+s) }
	if _, err := remote.GenerateKeyFiles(rand.Reader, keyPath("host.key"), keyPath("host.pub"), host+" vswitchd"); err != nil {
		return err
	}
	if _, err := remote.GenerateKeyFiles(rand.Reader, keyPath("nic.key"), keyPath("nic.pub"), host+" nicd"); err != nil {
		return err
	}
	ifs := make([]string, 0, len(ports))
	for _, ifname := range ports {
		ifs = append(ifs, ifname)
	}
	sort.Strings(ifs)
	drv := n.drivers.of(host)
	var b strings.Builder
	fmt.Fprintf(&b, "driver: %s\nkey: %s-nic.key\nhosts: [%s-host.pub]\nlisten: [\"unix:%s\"]\n", drv, host, host, n.nicdSocket(host))
	switch drv {
	case "softnic":
		// crypto: the NIC opens sealed frames (the sealed step).
		fmt.Fprintf(&b, "softnic:\n  device: %s\n  crypto: true\n  binding: afpacket\n  ports:\n", host)
		for _, ifname := range ifs {
			fmt.Fprintf(&b, "    - {name: %s, kind: vport, mtu: %d}\n", ifname, vmMTU)
		}
		fmt.Fprintf(&b, "    - {name: up0, kind: uplink, mac: \"%s\", mtu: 1500}\n", uplinkMACOf(host))
	case "xdp":
		fmt.Fprintf(&b, "xdp:\n  netns: %s\n  ports:\n", filepath.Join("/run/netns", n.hostNS(host)))
		for _, ifname := range ifs {
			fmt.Fprintf(&b, "    - {name: %s, kind: vport}\n", ifname)
		}
		b.WriteString("    - {name: up0, kind: uplink}\n")
	default:
		return fmt.Errorf("NIC=remote: nicd does not serve %s in the story", drv)
	}
	return os.WriteFile(n.nicdConfig(host), []byte(b.String()), 0o644)
}

// startNICD starts host's nicd in the host's namespace and waits until it
// serves.
func (n *nsStory) startNICD(host string) error {
	logFile := filepath.Join(n.dir, host+"-nicd.log")
	os.Remove(n.nicdSocket(host))
	if _, err := n.start(n.hostNS(host), logFile, filepath.Join(n.bin, "nicd"), "serve", "-config", n.nicdConfig(host)); err != nil {
		return err
	}
	// As long as a vswitchd gets: nicd over XDP loads the program first,
	// which takes seconds on a loaded machine.
	return waitFor(n.wait(startWait), func() error {
		b, _ := os.ReadFile(logFile)
		if strings.Contains(string(b), "nicd: serving") {
			return nil
		}
		return fmt.Errorf("%s's nicd did not start:\n%s", host, b)
	})
}

// remoteDriverLines is what a vswitchd configuration says to open host's
// NIC through nicd.
func (n *nsStory) remoteDriverLines(host string) string {
	return fmt.Sprintf("driver_options:\n  address: \"unix:%s\"\n  key: %s-host.key\n  server_key: %s-nic.pub\n", n.nicdSocket(host), host, host)
}

// stopProc stops the story's process whose command line has arg (a
// configuration file), and waits for it.
func (n *nsStory) stopProc(arg string) error {
	for i, p := range n.procs {
		if p.Process == nil || !containsArg(p.Args, arg) {
			continue
		}
		p.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- p.Wait() }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			p.Process.Kill()
			<-done
		}
		n.procs = append(n.procs[:i], n.procs[i+1:]...)
		return nil
	}
	return fmt.Errorf("no process of the story runs with %s", arg)
}

func containsArg(args []string, a string) bool {
	for _, x := range args {
		if x == a {
			return true
		}
	}
	return false
}

// remoteFaults is the story's part about the two processes: the host's
// vswitchd goes away and the NIC keeps forwarding on its rules; it comes
// back and takes over; the NIC side restarts (a fresh NIC: nicd holds the
// NIC itself) and the host reconnects and puts the rules back; what the NIC
// learned of the VMs' addresses, over the channel.
func (n *nsStory) remoteFaults(ctl func(string, ...string) (string, error), traffic func(string, ...string) (string, error)) error {
	s, st := n.s, n.st
	web2, _ := st.VM("blue-web-2")
	// The VM's neighbour entry stays put while vswitchd (which answers
	// ARP) is away: this part is about the NIC's forwarding, not ARP.
	if err := n.ip("-n", n.vmNS("blue-web-1"), "neigh", "replace", "10.0.0.11", "lladdr", macString(web2.MAC), "dev", "eth0", "nud", "permanent"); err != nil {
		return err
	}

	s.title("NIC=remote: what host-a's NIC learned over the channel")
	out, err := ctl("host-a", "learned")
	s.say("$ vswitchctl learned\n%s", indent(out, "  "))
	if n.drivers.of("host-a") == "softnic" {
		s.check(err == nil && strings.Contains(out, "blue-web-1") && strings.Contains(out, "10.0.0.10") && strings.Contains(out, "owned"),
			"host-a's nicd reported blue-web-1's address 10.0.0.10 over the secure channel, owned by its policy")
	} else {
		s.check(err == nil && strings.Contains(out, "does not report learned addresses"),
			"host-a's nicd serves %s, which does not learn addresses, and vswitchctl says so", n.drivers.of("host-a"))
	}

	s.title("NIC=remote: host-a's vswitchd stops; the NIC keeps forwarding on its last rules")
	if err := n.stopProc(filepath.Join(n.dir, "host-a.yaml")); err != nil {
		return err
	}
	s.say("stopped host-a's vswitchd")
	out, err = traffic("blue-web-1", "ping", "-n", "3", "-w", "2s", "10.0.0.11")
	s.say("%s", indent(out, "  "))
	s.check(err == nil && strings.Count(out, "bytes from 10.0.0.11") == 3, "3 echo replies from 10.0.0.11 with no vswitchd on host-a: its NIC (nicd) forwards the flows it holds")
	if err := n.startVswitchd("host-a", ctl); err != nil {
		return err
	}
	out, err = traffic("blue-web-1", "ping", "-n", "3", "-w", "2s", "10.0.0.11")
	s.say("host-a's vswitchd is back\n%s", indent(out, "  "))
	s.check(err == nil && strings.Count(out, "bytes from 10.0.0.11") == 3, "3 echo replies after host-a's vswitchd came back")

	s.title("NIC=remote: host-a's nicd restarts (a fresh NIC); vswitchd reconnects and reconciles")
	before, _ := ctl("host-a", "stats")
	if err := n.stopProc(n.nicdConfig("host-a")); err != nil {
		return err
	}
	if err := n.startNICD("host-a"); err != nil {
		return err
	}
	var after string
	werr := waitFor(n.wait(startWait), func() error {
		after, _ = ctl("host-a", "stats")
		if reconciles(after) > reconciles(before) {
			return nil
		}
		return fmt.Errorf("no reconcile after nicd restarted:\n%s", after)
	})
	s.say("$ vswitchctl stats\n%s", indent(after, "  "))
	s.check(werr == nil, "host-a's vswitchd reconnected to the new nicd and reconciled its rules")
	out, err = traffic("blue-web-1", "ping", "-n", "3", "-w", "2s", "10.0.0.11")
	s.say("%s", indent(out, "  "))
	s.check(err == nil && strings.Count(out, "bytes from 10.0.0.11") == 3, "3 echo replies through the restarted NIC")
	out, _ = ctl("host-a", "flows", "--nic")
	s.say("$ vswitchctl flows --nic\n%s", indent(out, "  "))
	s.check(strings.Contains(out, "where=nic"), "host-a's flows are on the new NIC")
	return nil
}

// reconciles reads "reconciles N:" from vswitchctl stats.
func reconciles(stats string) int {
	for _, l := range strings.Split(stats, "\n") {
		var n int
		if _, err := fmt.Sscanf(strings.TrimSpace(l), "reconciles %d:", &n); err == nil {
			return n
		}
	}
	return -1
}

func macString(m policy.MAC) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// startVswitchd starts host's vswitchd again on its configuration and
// waits until it answers.
func (n *nsStory) startVswitchd(host string, ctl func(string, ...string) (string, error)) error {
	log := filepath.Join(n.dir, host+"-again.log")
	if _, err := n.start(n.hostNS(host), log, filepath.Join(n.bin, "vswitchd"), "-config", filepath.Join(n.dir, host+".yaml")); err != nil {
		return err
	}
	if err := waitFor(startWait, func() error { _, err := ctl(host, "show"); return err }); err != nil {
		b, _ := os.ReadFile(log)
		return fmt.Errorf("%s's vswitchd did not come back: %v\n%s", host, err, b)
	}
	return nil
}

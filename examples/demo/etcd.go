package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// With STORE=etcd the desired state lives in etcd: a one-member cluster
// (nicstore serve, the etcd module's tool) runs in a control namespace on a
// management network, 192.0.2.0/24 (TEST-NET-1), that reaches every host's
// namespace; nicstore publishes the policy there, and every vswitchd follows
// it instead of a policy file. Then the story stops etcd: the hosts say they
// are stale and go on forwarding on their last state; it starts etcd again
// on the same data, and the hosts resync.

const (
	etcdAddr  = "192.0.2.1"
	etcdStore = "etcd://" + etcdAddr + ":2379/nicpath/"
)

func (n *nsStory) ctlNS() string { return n.prefix + "ctl" }

// startEtcd makes the control namespace and the management network, starts
// etcd there and publishes the policy.
func (n *nsStory) startEtcd(hosts []string) error {
	s := n.s
	s.title("The desired state in etcd (management network 192.0.2.0/24, control namespace %s)", n.ctlNS())
	ctl := n.ctlNS()
	if err := n.addNS(ctl); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"-n", ctl, "link", "add", "br0", "type", "bridge"},
		{"-n", ctl, "addr", "replace", etcdAddr + "/24", "dev", "br0"},
		{"-n", ctl, "link", "set", "br0", "up"},
	} {
		if err := n.ip(args...); err != nil {
			return err
		}
	}
	for i, h := range hosts {
		peer := fmt.Sprintf("m-%d", i)
		addr := fmt.Sprintf("192.0.2.%d/24", 11+i)
		for _, args := range [][]string{
			{"-n", ctl, "link", "add", peer, "type", "veth", "peer", "name", "mgmt0", "netns", n.hostNS(h)},
			{"-n", ctl, "link", "set", peer, "master", "br0", "up"},
			{"-n", n.hostNS(h), "addr", "replace", addr, "dev", "mgmt0"},
			{"-n", n.hostNS(h), "link", "set", "mgmt0", "up"},
		} {
			if err := n.ip(args...); err != nil {
				return err
			}
		}
		s.say("%s mgmt0 %s", h, addr)
	}
	if err := n.runEtcd(); err != nil {
		return err
	}
	out, err := n.nicstore("publish", filepath.Join(n.dir, "policy.yaml"))
	s.say("$ nicstore -store %s publish policy.yaml\n%s", etcdStore, indent(out, "  "))
	return err
}

// runEtcd starts (or restarts, on the same data) the etcd member and waits
// until it serves.
func (n *nsStory) runEtcd() error {
	if err := os.WriteFile(filepath.Join(n.dir, "policy.yaml"), n.policy, 0o644); err != nil {
		return err
	}
	logFile := filepath.Join(n.dir, "etcd.log")
	cmd, err := n.start(n.ctlNS(), logFile, filepath.Join(n.bin, "nicstore"), "serve",
		"-listen", etcdAddr+":2379", "-peer", etcdAddr+":2380", "-data", filepath.Join(n.dir, "etcd"), "-unsafe-no-fsync")
	if err != nil {
		return err
	}
	n.etcd = cmd
	err = waitFor(n.wait(startWait), func() error {
		b, _ := os.ReadFile(logFile)
		if bytes.Contains(b, []byte("ready")) {
			return nil
		}
		return fmt.Errorf("etcd did not come up: %s", b)
	})
	if err == nil {
		n.s.say("etcd serves on %s:2379 (nicstore serve, in %s)", etcdAddr, n.ctlNS())
	}
	return err
}

// stopEtcd stops the etcd member, as an outage would.
func (n *nsStory) stopEtcd() {
	if n.etcd == nil || n.etcd.Process == nil {
		return
	}
	n.etcd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { n.etcd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		n.etcd.Process.Kill()
		<-done
	}
	n.etcd = nil
}

// nicstore runs the etcd module's tool in the control namespace.
func (n *nsStory) nicstore(args ...string) (string, error) {
	return n.in(n.ctlNS(), filepath.Join(n.bin, "nicstore"), append([]string{"-store", etcdStore}, args...)...)
}

// etcdStory shows the hosts following etcd, an etcd outage and the resync.
func (n *nsStory) etcdStory(ctl func(h string, args ...string) (string, error), traffic func(vm string, args ...string) (string, error)) {
	s := n.s
	s.title("The hosts report to etcd what they apply")
	out, err := n.nicstore("status")
	s.say("$ nicstore status\n%s", indent(out, "  "))
	s.check(err == nil && strings.Count(out, "following") == 2, "both hosts report the state they follow")

	s.title("etcd stops: the hosts keep forwarding on their last state, and say so")
	n.stopEtcd()
	var show string
	// Waits end as soon as the hosts say so; their bounds leave room
	// for a loaded machine (heartbeats late, resync attempts backing off).
	werr := waitFor(n.wait(startWait), func() error {
		show, _ = ctl("host-a", "show")
		if strings.Contains(show, "STALE") {
			return nil
		}
		return fmt.Errorf("host-a does not say stale")
	})
	s.say("$ vswitchctl -s host-a show   (etcd stopped)\n%s", indent(firstLines(show, 3), "  "))
	s.check(werr == nil, "host-a's vswitchd reports the store unreachable")
	out, err = traffic("blue-web-1", "ping", "-n", "5", "-w", "2s", "10.0.0.11")
	s.say("%s", indent(out, "  "))
	s.check(err == nil && strings.Count(out, "bytes from 10.0.0.11") == 5, "with etcd down, blue-web-1 still reaches blue-web-2 (5 echo replies)")

	s.title("etcd is back: the hosts resync")
	if err := n.runEtcd(); err != nil {
		s.check(false, "etcd restarts on its data: %v", err)
		return
	}
	werr = waitFor(n.wait(startWait), func() error {
		for _, h := range []string{"host-a", "host-b"} {
			show, _ = ctl(h, "show")
			if strings.Contains(show, "STALE") || !strings.Contains(show, "store "+etcdStore) {
				return fmt.Errorf("%s still stale", h)
			}
		}
		return nil
	})
	s.say("$ vswitchctl -s host-b show\n%s", indent(firstLines(show, 2), "  "))
	s.check(werr == nil, "both hosts resynced from etcd")
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

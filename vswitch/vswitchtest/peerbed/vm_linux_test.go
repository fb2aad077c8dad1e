//go:build linux

package peerbed

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/internal/vmtest"
	"github.com/nicpath/nicpath/vswitch"
)

var (
	vmRun = flag.String("vm.run", "^TestLinuxPeerTCFlowerInVM$", "the tests TestLinuxPeerTCFlowerVM runs inside the VM (a -test.run pattern)")
)

// TestLinuxPeerTCFlowerVM boots the VM tier (Debian's kernel, which has
// cls_flower and the tc actions this machine's kernel lacks) and runs
// TestLinuxPeerTCFlowerInVM there.
func TestLinuxPeerTCFlowerVM(t *testing.T) {
	vmtest.SkipHost(t)
	bin := vmtest.BuildTest(t, t.TempDir(), "peerbed.test")
	// Emulated (TCG): the transfers are slow; the bounds leave room for a
	// loaded machine.
	cfg := vmtest.Config{
		TestBinary:  bin,
		Args:        []string{"-test.run", *vmRun, "-test.v", "-test.timeout", "10m"},
		Modules:     slices.Concat(vmtest.TCModules, []string{"bridge"}),
		Executables: []string{"/usr/sbin/ip", "/usr/sbin/tc"},
		MemoryMB:    2048,
		Timeout:     12 * time.Minute,
	}
	res := vmtest.RunTest(t, cfg)
	t.Logf("in-VM output:\n%s", res.Output)
	if !res.Passed() {
		t.Fatalf("in-VM test failed (exit %d)", res.ExitCode)
	}
	if *vmRun != "^TestLinuxPeerTCFlowerInVM$" {
		return // a part was asked for
	}
	for _, sub := range []string{"rules", "vswitch", "vswitch-acl"} {
		if !res.PassedTest("TestLinuxPeerTCFlowerInVM/" + sub) {
			t.Errorf("TestLinuxPeerTCFlowerInVM/%s did not pass in the VM (skipped, or did not run)", sub)
		}
	}
}

// TestLinuxPeerTCFlowerInVM is TestLinuxPeer on the tc-flower driver, host-b
// plain Linux, default offloads everywhere.
//
//   - rules: the driver programmed with the rules the vswitch would install
//     for the two VMs (rulesFor), without a vswitch: encapsulation with
//     tunnel_key toward host-b, decapsulation from the flow-based VXLAN
//     device.
//   - vswitch: the vswitch on tc-flower (an in-process vswitchd), the
//     overlay's checks both ways: every first packet from host-b reaches
//     it as a tunnelled miss (the driver's BPF action carries the VNI and
//     the outer addresses), and its exact-match flows (tun=none, no VLAN
//     tag) land in tc.
//   - vswitch-acl: the same with vm-a's stateful inbound ACLs: vm-b opens a
//     TCP connection to vm-a's allowed port, which then runs on the NIC
//     both ways (the flows say where=nic and the tc filters' counters
//     move); a connection to a port the ACLs deny, and one vm-a opens
//     itself (outbound TCP is denied but for replies), never connect.
func TestLinuxPeerTCFlowerInVM(t *testing.T) {
	if !vmtest.InVM() {
		t.Skip("runs inside the VM tier (TestLinuxPeerTCFlowerVM boots it)")
	}
	t.Run("rules", func(t *testing.T) {
		bed := newBed(t, Config{A: TCFlowerRules, B: Linux})
		runOverlayChecks(t, bed)
		// The traffic went through the flower filters: host-a's kernel has
		// no other way between vp0 and the tunnel.
		ids := []hal.RuleID{1, 2}
		cs := make([]hal.Counters, len(ids))
		if err := bed.Hosts()[0].NIC.RuleCounters(context.Background(), ids, cs); err != nil {
			t.Fatal(err)
		}
		for i, c := range cs {
			t.Logf("rule %d: %d packets, %d bytes", ids[i], c.Packets, c.Bytes)
			if c.Bytes < TransferBytes {
				t.Errorf("rule %d carried %d bytes, less than one TCP transfer (%d)", ids[i], c.Bytes, TransferBytes)
			}
		}
	})
	t.Run("vswitch", func(t *testing.T) {
		bed := newBed(t, Config{A: "tcflower", B: Linux})
		caps := bed.Hosts()[0].NIC.Capabilities()
		if caps.TunnelMissesUnseen || !caps.ExceptionPath {
			t.Fatalf("tc-flower: tunnelled misses unseen %v, exception path %v:\n%s", caps.TunnelMissesUnseen, caps.ExceptionPath, &caps)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("host-a's tc filters:\n%s", tcFilters(bed.Hosts()[0]))
			}
		})
		runOverlayChecks(t, bed)
		// The transfers ran on the NIC: the switch's flows carrying them
		// are tc filters.
		s := bed.Hosts()[0].Daemon.Switch().Stats()
		t.Logf("host-a's switch: %d flows (%d on the NIC, %d in the host), %d packets handled, %d injected", s.Flows, s.FlowsNIC, s.FlowsHost, s.Packets, s.Injected)
		// tc takes every flow the switch makes for the bed's traffic.
		for _, f := range bed.Hosts()[0].Daemon.Switch().Flows() {
			if f.Path != vswitch.PathNIC {
				t.Errorf("flow in the %v (%v: %v): %v → %v", f.Path, f.Why, f.Err, &f.Match, f.Actions)
			}
		}
		if s.FlowsNIC == 0 || s.Packets > 2000 {
			t.Errorf("host-a's switch: %d flows on the NIC, %d packets on the slow path: the transfers did not run on the NIC\n%s", s.FlowsNIC, s.Packets, bed.Report(context.Background()))
		}
	})
	t.Run("vswitch-acl", func(t *testing.T) {
		runACLChecks(t, newBed(t, Config{A: "tcflower", B: Linux, ACLs: aclYAML}))
	})
}

// tcFilters lists the filters of h's tc block with their counters (tc -s
// filter show), for a failed check's log.
func tcFilters(h *Host) string {
	caps := h.NIC.Capabilities()
	var block string
	if _, err := fmt.Sscanf(caps.Device, "tc block %s", &block); err != nil {
		return err.Error()
	}
	out, err := exec.Command("ip", "netns", "exec", filepath.Base(h.NS), "tc", "-s", "filter", "show", "block", block).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%v: %s", err, out)
	}
	return string(out) + "\n" + caps.String()
}

// The ports of the ACL checks.
const (
	aclAllowedPort = 5001
	aclDeniedPort  = 5002
)

// aclYAML: vm-a takes inbound TCP on aclAllowedPort only (stateful, so
// that its replies pass), and opens no TCP connection itself.
var aclYAML = fmt.Sprintf(`      - id: a-in-allowed
        priority: 10
        direction: in
        dst: [%[1]s/32]
        protocol: tcp
        dst_ports: [%[2]d]
        action: allow
        stateful: true
      - id: a-in-tcp
        priority: 20
        direction: in
        dst: [%[1]s/32]
        protocol: tcp
        action: deny
      - id: a-out-tcp
        priority: 20
        direction: out
        src: [%[1]s/32]
        protocol: tcp
        action: deny
`, caA, aclAllowedPort)

// runACLChecks: on a bed whose host-a runs the vswitch with aclYAML, vm-b
// connects to vm-a's allowed port and transfers both ways; the connection's
// flows are on the NIC and their tc filters count what follows; the denied
// connections never connect.
func runACLChecks(t *testing.T, bed *Bed) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	vms := bed.VMs()
	a, b := vms[0], vms[1]
	host := bed.Hosts()[0]
	sw := host.Daemon.Switch()
	c := checker{t: t, ctx: ctx, bed: bed}

	// denyOnNIC checks that the switch's flow for the denied handshake is
	// a drop rule on the NIC (the SYN's retransmissions never reach the
	// host again).
	denyOnNIC := func(t *testing.T, match func(k *hal.FlowKey) bool) {
		t.Helper()
		for _, f := range sw.Flows() {
			if k := &f.Match.Key; k.Proto == hal.ProtoTCP && match(k) {
				if f.Path != vswitch.PathNIC || len(f.Actions) == 0 || f.Actions[len(f.Actions)-1].Kind != hal.ActionDrop {
					t.Errorf("deny flow %v: where=%v (%v: %v), actions %v", &f.Match, f.Path, f.Why, f.Err, f.Actions)
				}
				return
			}
		}
		t.Error("no flow for the denied handshake")
	}
	c.run("denied-port", func(t *testing.T) {
		if err := refused(ctx, b, a, aclDeniedPort); err != nil {
			t.Error(err)
		}
		denyOnNIC(t, func(k *hal.FlowKey) bool { return k.TunKind == hal.EncapVXLAN && k.L4Dst == aclDeniedPort })
	})
	c.run("denied-outbound", func(t *testing.T) {
		if err := refused(ctx, a, b, aclAllowedPort); err != nil {
			t.Error(err)
		}
		denyOnNIC(t, func(k *hal.FlowKey) bool { return k.TunKind == hal.EncapNone && k.L4Dst == aclAllowedPort })
	})
	c.run("allowed", func(t *testing.T) {
		st, err := OpenTCPPort(ctx, b, a, aclAllowedPort)
		if err != nil {
			t.Fatal(err)
		}
		defer st.abort()
		if _, err := st.Send(ctx, 1<<20); err != nil {
			t.Fatal(err)
		}
		// The connection's flows, both ways: vm-b → vm-a arrives
		// tunnelled from the uplink, vm-a → vm-b leaves vm-a's vport.
		var in, out *vswitch.FlowInfo
		deadline := time.Now().Add(10 * time.Second)
		for {
			in, out = nil, nil
			for _, f := range sw.Flows() {
				f := f
				k := &f.Match.Key
				switch {
				case k.Proto == hal.ProtoTCP && k.TunKind == hal.EncapVXLAN && k.L4Dst == aclAllowedPort:
					in = &f
				case k.Proto == hal.ProtoTCP && k.TunKind == hal.EncapNone && k.L4Src == aclAllowedPort:
					out = &f
				}
			}
			if in != nil && out != nil && in.Path == vswitch.PathNIC && out.Path == vswitch.PathNIC || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, f := range []struct {
			name string
			f    *vswitch.FlowInfo
		}{{"vm-b → vm-a (decap)", in}, {"vm-a → vm-b (encap)", out}} {
			if f.f == nil {
				t.Fatalf("no flow %s", f.name)
			}
			t.Logf("flow %s: %v where=%v (%v) rule %d", f.name, &f.f.Match, f.f.Path, f.f.Err, f.f.ID)
			if f.f.Path != vswitch.PathNIC || f.f.ID == 0 {
				t.Errorf("flow %s is not on the NIC: %v (%v: %v)", f.name, f.f.Path, f.f.Why, f.f.Err)
			}
		}
		if t.Failed() {
			return
		}
		// What follows runs on the NIC: its tc filters count it.
		ids := []hal.RuleID{in.ID, out.ID}
		before := make([]hal.Counters, 2)
		if err := host.NIC.RuleCounters(ctx, ids, before); err != nil {
			t.Fatal(err)
		}
		slow := sw.Stats().Packets
		const more = 4 << 20
		if _, err := st.Send(ctx, more); err != nil {
			t.Fatal(err)
		}
		if err := st.Close(ctx); err != nil {
			t.Fatal(err)
		}
		after := make([]hal.Counters, 2)
		if err := host.NIC.RuleCounters(ctx, ids, after); err != nil {
			t.Fatal(err)
		}
		for i, name := range []string{"decap", "encap"} {
			dp, db := after[i].Packets-before[i].Packets, after[i].Bytes-before[i].Bytes
			t.Logf("%s rule %d: +%d packets, +%d bytes", name, ids[i], dp, db)
			if dp == 0 {
				t.Errorf("the %s rule's tc filter counted nothing of the transfer", name)
			}
		}
		if db := after[0].Bytes - before[0].Bytes; db < more {
			t.Errorf("the decap rule counted %d bytes of a %d-byte transfer", db, more)
		}
		if d := sw.Stats().Packets - slow; d > 8 {
			t.Errorf("%d packets of the offloaded connection reached the slow path", d)
		}
	})
}

// refused checks that a TCP connection from from to to's port never
// connects, while to listens on it: the ACLs drop the handshake (a closed
// port would answer with a reset instead).
func refused(ctx context.Context, from, to VM, port uint16) error {
	dctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	st, err := OpenTCPPort(dctx, from, to, port)
	if err == nil {
		st.abort()
		return fmt.Errorf("%s connected to %s:%d, which the ACLs deny", from.Name, to.Name, port)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s → %s:%d refused with a reset, not dropped: %w", from.Name, to.Name, port, err)
	}
	var ne net.Error
	if !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Errorf("%s → %s:%d: %w, want a timeout", from.Name, to.Name, port, err)
	}
	return nil
}

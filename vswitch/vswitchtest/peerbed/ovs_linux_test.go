//go:build linux

package peerbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// needOVS skips when an OVS host cannot be built here, saying why.
func needOVS(tb testing.TB) {
	tb.Helper()
	if ok, why := CanRun(); !ok {
		tb.Skip(why)
	}
	if err := OVSAvailable(); err != nil {
		tb.Skipf("Open vSwitch: %v", err)
	}
}

// TestOVSPeer: nicpath on host-a (softnic over AF_PACKET, then xdp), Open
// vSwitch's userspace datapath on host-b; the VMs ping each other, exchange
// UDP datagrams from 8 bytes to the overlay's largest, and send 1 MiB over
// TCP, both ways, and neither VM's kernel sees a bad checksum. "ovs" is
// the control: both hosts OVS (the pair the peer benchmarks compare
// nicpath with), so that a failure on a driver is the driver's and not the
// bed's.
func TestOVSPeer(t *testing.T) {
	needOVS(t)
	for _, a := range []string{OVS, "softnic", "xdp"} {
		t.Run(a, func(t *testing.T) {
			bed := newBed(t, Config{A: a, B: OVS})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c := checker{t: t, ctx: ctx, bed: bed}
			vms := bed.VMs()
			for _, p := range [][2]VM{{vms[0], vms[1]}, {vms[1], vms[0]}} {
				way := p[0].Name + "→" + p[1].Name
				c.run("ping/"+way, func(t *testing.T) {
					r, err := Ping(ctx, p[0], p[1].CA, PingOptions{Count: 3})
					if err != nil {
						t.Fatal(err)
					}
					if r.Replies != r.Sent || r.Damaged != 0 {
						t.Errorf("%d of %d echo replies (%d damaged)", r.Replies, r.Sent, r.Damaged)
					}
				})
				c.run("udp/"+way, func(t *testing.T) {
					const n = 100
					r, err := UDP(ctx, p[0], p[1], n)
					if err != nil {
						t.Fatal(err)
					}
					if r.Received != n || r.Damaged != 0 || r.Duplicates != 0 {
						t.Errorf("%d of %d datagrams (payloads 8 to %d bytes) arrived intact; %d damaged, %d duplicated",
							r.Received, r.Sent, MaxUDPPayload, r.Damaged, r.Duplicates)
					}
				})
				c.run("tcp-1MiB/"+way, func(t *testing.T) {
					tctx, tcancel := context.WithTimeout(ctx, 20*time.Second)
					defer tcancel()
					if _, err := TCP(tctx, p[0], p[1], 1<<20); err != nil {
						t.Fatal(err)
					}
				})
			}
		})
	}
}

// TestOVSRefusesKernelTunnelPeers: a bed that would pair an OVS host with
// one whose kernel writes the outer headers is refused before anything is
// built (see ovsPairs).
func TestOVSRefusesKernelTunnelPeers(t *testing.T) {
	for _, k := range []string{Linux, "tcflower", TCFlowerRules} {
		for _, cfg := range []Config{{A: OVS, B: k}, {A: k, B: OVS}} {
			cfg.Dir = t.TempDir()
			if _, err := New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "OVS host facing") {
				t.Errorf("%s ↔ %s: %v, want a refusal", cfg.A, cfg.B, err)
			}
		}
	}
}

// TestOVSCloseLeavesNothing: closing a bed with OVS hosts stops both
// daemons of each (by the pids in their pid files), removes their run
// directories and deletes the namespaces; closing again is harmless.
func TestOVSCloseLeavesNothing(t *testing.T) {
	needOVS(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bed, err := New(ctx, Config{A: OVS, B: "softnic", Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	o := bed.Hosts()[0].OVS
	if o == nil {
		bed.Close()
		t.Fatal("host-a has no OVS daemons")
	}
	pids, dir := o.Pids(), o.Dir
	if len(pids) != 2 {
		t.Errorf("%d daemons, want ovsdb-server and ovs-vswitchd", len(pids))
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err != nil {
			t.Errorf("daemon %d not running before Close: %v", pid, err)
		}
	}
	if err := bed.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := bed.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	for _, pid := range pids {
		// The bed waited for its children: a pid still in use is another
		// process's, or a daemon that outlived Close.
		if comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm"); err == nil && strings.HasPrefix(string(comm), "ovs") {
			t.Errorf("daemon %d (%s) still running after Close", pid, strings.TrimSpace(string(comm)))
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("run directory %s left behind (%v)", dir, err)
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), bed.prefix) {
		t.Errorf("namespaces left behind:\n%s", out)
	}
}

// TestOVSStartFailureLeavesNothing: daemons that cannot start (here: their
// namespace does not exist) leave no process and no run directory behind.
func TestOVSStartFailureLeavesNothing(t *testing.T) {
	needOVS(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	o, err := startOVS(ctx, fmt.Sprintf("npb-absent-%d", os.Getpid()))
	if err == nil {
		o.Close()
		t.Fatal("started in a namespace that does not exist")
	}
	if o == nil {
		t.Fatalf("no daemons to look at after %v", err)
	}
	t.Logf("as expected: %v", err)
	if len(o.procs) != 0 || o.thread != nil {
		t.Errorf("after the failure: %d daemons still tracked, thread %v", len(o.procs), o.thread != nil)
	}
	if _, err := os.Stat(o.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("run directory %s left behind (%v)", o.Dir, err)
	}
}

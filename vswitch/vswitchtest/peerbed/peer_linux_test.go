//go:build linux

package peerbed

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// tLog writes a vswitchd's log lines into the test's log.
type tLog struct{ t testing.TB }

func (w tLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newBed builds a bed for a test or benchmark and closes it when it ends;
// it skips when the machine cannot run one.
func newBed(tb testing.TB, cfg Config) *Bed {
	tb.Helper()
	if ok, why := CanRun(); !ok {
		tb.Skip(why)
	}
	cfg.Dir = tb.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(tLog{tb}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := New(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := b.Close(); err != nil {
			tb.Errorf("closing the bed: %v", err)
		}
	})
	return b
}

// TransferBytes is how much each TCP transfer of the tests carries each way.
const TransferBytes = 16 << 20

// checker runs the bed's checks as subtests, each asserting besides its own
// result that neither VM's kernel counted a checksum error meanwhile, and
// logging what the hosts counted when it fails.
type checker struct {
	t   *testing.T
	ctx context.Context
	bed *Bed
}

func (c checker) run(name string, fn func(t *testing.T)) {
	c.t.Run(name, func(t *testing.T) {
		vms := c.bed.VMs()
		var before [2]Counters
		for i, vm := range vms {
			var err error
			if before[i], err = SNMP(vm); err != nil {
				t.Fatal(err)
			}
		}
		// Deferred: a check that stops with t.Fatal is reported too.
		defer func() {
			for i, vm := range vms {
				after, err := SNMP(vm)
				if err != nil {
					t.Error(err)
					continue
				}
				d := after.Sub(before[i])
				for _, k := range CsumErrors {
					if d[k] != 0 {
						t.Errorf("%s's kernel counted %d %s", vm.Name, d[k], k)
					}
				}
			}
			if t.Failed() {
				t.Logf("what the hosts counted:\n%s", c.bed.Report(c.ctx))
			}
		}()
		fn(t)
	})
}

// runOverlayChecks is the overlay's checks between the bed's two VMs: ping
// both ways, a ping of the largest packet the overlay carries with Don't
// Fragment both ways, UDP both ways, and a TCP transfer of TransferBytes
// each way. Every check also asserts that neither VM counted a checksum
// error.
func runOverlayChecks(t *testing.T, bed *Bed) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := checker{t: t, ctx: ctx, bed: bed}
	vms := bed.VMs()
	pairs := [][2]VM{{vms[0], vms[1]}, {vms[1], vms[0]}}
	way := func(p [2]VM) string { return p[0].Name + "→" + p[1].Name }

	for _, p := range pairs {
		c.run("ping/"+way(p), func(t *testing.T) {
			// The first request may wait for the flow to be set up; 5 of 5
			// must come back all the same.
			r, err := Ping(ctx, p[0], p[1].CA, PingOptions{Count: 5})
			if err != nil {
				t.Fatal(err)
			}
			if r.Replies != r.Sent || r.Damaged != 0 {
				t.Errorf("%d of %d echo replies (%d damaged)", r.Replies, r.Sent, r.Damaged)
			}
		})
	}
	for _, p := range pairs {
		size := OverlayMTU - 20 - 8
		c.run(fmt.Sprintf("ping-df-%d/%s", OverlayMTU, way(p)), func(t *testing.T) {
			r, err := Ping(ctx, p[0], p[1].CA, PingOptions{Count: 3, Size: size, DF: true})
			if err != nil {
				t.Fatal(err)
			}
			if r.Replies != r.Sent || r.Damaged != 0 {
				t.Errorf("%d of %d echo replies of %d bytes with DF (%d damaged)", r.Replies, r.Sent, OverlayMTU, r.Damaged)
			}
		})
	}
	for _, p := range pairs {
		c.run("udp/"+way(p), func(t *testing.T) {
			const n = 200
			r, err := UDP(ctx, p[0], p[1], n)
			if err != nil {
				t.Fatal(err)
			}
			if r.Received != n || r.Damaged != 0 || r.Duplicates != 0 {
				t.Errorf("%d of %d datagrams (payloads 8 to %d bytes) arrived intact; %d damaged, %d duplicated",
					r.Received, r.Sent, MaxUDPPayload, r.Damaged, r.Duplicates)
			}
		})
	}
	for _, p := range pairs {
		c.run(fmt.Sprintf("tcp-%dMiB/%s", TransferBytes>>20, way(p)), func(t *testing.T) {
			tctx, tcancel := context.WithTimeout(ctx, 90*time.Second)
			defer tcancel()
			r, err := TCP(tctx, p[0], p[1], TransferBytes)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d bytes in %v: %.2f Gbit/s", r.Bytes, r.Elapsed.Round(time.Millisecond), r.Gbps())
		})
	}
}

// TestLinuxPeer: nicpath on host-a, a plain Linux host (the kernel's VXLAN
// device and a bridge) on host-b, every interface with the kernel's default
// offloads; the VMs ping, exchange UDP and transfer 16 MiB over TCP each
// way, and neither VM's kernel sees a bad checksum. "linux" is the control:
// both hosts plain Linux, so that a failure on a driver is the driver's and
// not the bed's.
func TestLinuxPeer(t *testing.T) {
	for _, a := range []string{Linux, "softnic", "xdp"} {
		t.Run(a, func(t *testing.T) {
			runOverlayChecks(t, newBed(t, Config{A: a, B: Linux}))
		})
	}
}

// TestTCPBulkBetweenNicpathHosts: both hosts nicpath on the same driver,
// default offloads everywhere: the overlay's checks, whose TCP transfers
// are the bulk streams BenchmarkTCPStreamTwoNicpathHosts measures.
func TestTCPBulkBetweenNicpathHosts(t *testing.T) {
	for _, d := range []string{"softnic", "xdp"} {
		t.Run(d, func(t *testing.T) {
			runOverlayChecks(t, newBed(t, Config{A: d, B: d}))
		})
	}
}

// TestCloseLeavesNothing: a closed bed leaves no namespace behind, on every
// kind of host, and closing it again is harmless.
func TestCloseLeavesNothing(t *testing.T) {
	if ok, why := CanRun(); !ok {
		t.Skip(why)
	}
	for _, kinds := range [][2]string{{"softnic", Linux}, {"xdp", "xdp"}} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		bed, err := New(ctx, Config{A: kinds[0], B: kinds[1], Dir: t.TempDir()})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if err := bed.Close(); err != nil {
			t.Errorf("%v: Close: %v", kinds, err)
		}
		if err := bed.Close(); err != nil {
			t.Errorf("%v: second Close: %v", kinds, err)
		}
		out, err := exec.Command("ip", "netns", "list").CombinedOutput()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), bed.prefix) {
			t.Errorf("%v: namespaces left behind:\n%s", kinds, out)
		}
	}
}

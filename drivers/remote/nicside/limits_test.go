package nicside

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/drivers/remote/remotetest"
	"github.com/nicpath/nicpath/drivers/tcflower"
	"github.com/nicpath/nicpath/hal"
)

// TestLimitsReachTheDriver: max_rules and max_batch of each driver's
// section are the opened NIC's Capabilities.MaxRules and MaxBatch; left
// out, the driver's defaults stay. softnic runs anywhere; xdp and
// tcflower attach to veths in a namespace of the test's own.
func TestLimitsReachTheDriver(t *testing.T) {
	dir := remotetest.Dir(t, "nicside-limits")
	remotetest.KeyFiles(t, dir)
	base := "key: nic.key\nhosts: [host.pub]\nlisten: [unix:" + filepath.Join(dir, "s") + "]\n"
	sections := map[string]string{
		"softnic": strings.Replace(softnicSection, "device: dpu0", "device: dpu0\n  max_rules: 300\n  max_batch: 20", 1),
	}
	var ns string
	if os.Geteuid() == 0 {
		ns = remotetest.VethNS(t, "np-nicside-lim", [2]string{"p1", "p2"})
		ports := "  ports: [{name: p1, kind: vport, id: 1}, {name: p2, kind: uplink, id: 2}]\n"
		sections["xdp"] = "xdp:\n  netns: /var/run/netns/" + ns + "\n  mode: generic\n  max_rules: 300\n  max_batch: 20\n" + ports
		sections["tcflower"] = "tcflower:\n  netns: /var/run/netns/" + ns + "\n  placement: software\n  max_rules: 300\n  max_batch: 20\n" + ports
	} else {
		t.Log("xdp and tcflower not opened: they need root (BPF programs, qdiscs, namespaces)")
	}
	for _, drv := range []string{"softnic", "xdp", "tcflower"} {
		sec, ok := sections[drv]
		if !ok {
			continue
		}
		t.Run(drv, func(t *testing.T) {
			if drv == "tcflower" {
				// The section's limits are tcflower.Config's (whose
				// Capabilities TestProbeLimits of package tcflower
				// checks); the NIC is opened where the kernel has
				// cls_flower.
				c, err := LoadConfig(remotetest.WriteNICConfig(t, dir, "driver: "+drv+"\n"+base+sec))
				if err != nil {
					t.Fatal(err)
				}
				cfg, err := tcflowerConfig(c.TCFlower)
				if err != nil || cfg.MaxRules != 300 || cfg.MaxBatch != 20 {
					t.Fatalf("tcflower.Config of max_rules 300, max_batch 20: MaxRules %d, MaxBatch %d, %v", cfg.MaxRules, cfg.MaxBatch, err)
				}
				n, err := tcflower.Open(context.Background(), cfg)
				if errors.Is(err, hal.ErrNotSupported) {
					t.Logf("tcflower not opened, this kernel refuses it: %v", err)
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				n.Close()
			}
			open := func(sec string) (int, int) {
				t.Helper()
				c, err := LoadConfig(remotetest.WriteNICConfig(t, dir, "driver: "+drv+"\n"+base+sec))
				if err != nil {
					t.Fatal(err)
				}
				n, release, err := openNIC(context.Background(), c, slog.New(slog.DiscardHandler))
				if err != nil {
					t.Fatal(err)
				}
				defer release()
				caps := n.Capabilities()
				return caps.MaxRules, caps.MaxBatch
			}
			if rules, batch := open(sec); rules != 300 || batch != 20 {
				t.Errorf("max_rules 300, max_batch 20 configured: the NIC says MaxRules %d, MaxBatch %d", rules, batch)
			}
			var plain []string
			for _, l := range strings.Split(sec, "\n") {
				if !strings.Contains(l, "max_rules") && !strings.Contains(l, "max_batch") {
					plain = append(plain, l)
				}
			}
			if rules, batch := open(strings.Join(plain, "\n")); rules == 300 || batch == 20 || rules <= 0 || batch <= 0 {
				t.Errorf("no limits configured: the NIC says MaxRules %d, MaxBatch %d, want the driver's defaults", rules, batch)
			}
		})
	}
}

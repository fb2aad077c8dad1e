package agent

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/agent/driver"
	"github.com/nicpath/nicpath/drivers/remote/remotetest"
	"github.com/nicpath/nicpath/drivers/tcflower"
	"github.com/nicpath/nicpath/hal"
)

// TestLimitOptionsReachTheDriver: driver_options max_rules and max_batch
// of a configuration are the opened NIC's Capabilities.MaxRules and
// MaxBatch, for softnic (anywhere) and xdp (on veths in a namespace of the
// test's own); tcflower's are its Config's (the NIC is opened where the
// kernel has cls_flower). Left out, the driver's defaults stay; a bad
// value given in Go, past ParseConfig, is refused by the opener, naming
// the option.
func TestLimitOptionsReachTheDriver(t *testing.T) {
	ctx := context.Background()
	ns := ""
	if os.Geteuid() == 0 {
		ns = remotetest.VethNS(t, "np-agent-lim", [2]string{"p1", "p2"})
	} else {
		t.Log("xdp and tcflower not opened: they need root (BPF programs, qdiscs, namespaces)")
	}
	dcfg := func(drv string, opts map[string]string) driver.Config {
		doc := strings.Replace(goodConfig, "driver: softnic", "driver: "+drv+"\nnetns: /var/run/netns/"+ns, 1)
		if drv == "softnic" {
			doc += "binding: none\n"
		}
		if len(opts) > 0 {
			doc += "driver_options:\n"
			for k, v := range opts {
				doc += "  " + k + ": " + v + "\n"
			}
		}
		c, err := ParseConfig("c.yaml", []byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		return driver.Config{Host: c.Host, NetNS: c.NetNS, Binding: c.Binding, Options: c.DriverOptions, Ports: []driver.Port{
			{ID: 1, Name: "p1", Kind: hal.PortVPort}, {ID: 2, Name: "p2", Kind: hal.PortUplink}}}
	}
	limits := map[string]string{"max_rules": "300", "max_batch": "20"}
	for _, drv := range []string{"softnic", "xdp", "tcflower"} {
		t.Run(drv, func(t *testing.T) {
			if drv == "tcflower" {
				cfg, err := tcflowerConfig(dcfg(drv, limits))
				if err != nil || cfg.MaxRules != 300 || cfg.MaxBatch != 20 {
					t.Fatalf("tcflower.Config of max_rules 300, max_batch 20: MaxRules %d, MaxBatch %d, %v", cfg.MaxRules, cfg.MaxBatch, err)
				}
				if ns == "" {
					return
				}
				n, err := tcflower.Open(ctx, cfg)
				if errors.Is(err, hal.ErrNotSupported) {
					t.Logf("tcflower not opened, this kernel refuses it: %v", err)
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				n.Close()
			}
			if drv != "softnic" && ns == "" {
				return
			}
			open := func(opts map[string]string) hal.Capabilities {
				t.Helper()
				n, err := driver.Open(ctx, drv, dcfg(drv, opts))
				if err != nil {
					t.Fatal(err)
				}
				defer n.Close()
				return n.Capabilities()
			}
			if caps := open(limits); caps.MaxRules != 300 || caps.MaxBatch != 20 {
				t.Errorf("max_rules 300, max_batch 20 configured: the NIC says MaxRules %d, MaxBatch %d", caps.MaxRules, caps.MaxBatch)
			}
			if caps := open(nil); caps.MaxRules == 300 || caps.MaxBatch == 20 || caps.MaxRules <= 0 || caps.MaxBatch <= 0 {
				t.Errorf("no limits configured: the NIC says MaxRules %d, MaxBatch %d, want the driver's defaults", caps.MaxRules, caps.MaxBatch)
			}
			bad := dcfg(drv, nil)
			bad.Options = map[string]string{"max_batch": "-1"}
			if n, err := driver.Open(ctx, drv, bad); err == nil || !strings.Contains(err.Error(), "driver_options.max_batch") {
				if n != nil {
					n.Close()
				}
				t.Errorf("max_batch -1 given in Go: %v, want a refusal naming driver_options.max_batch", err)
			}
		})
	}
}

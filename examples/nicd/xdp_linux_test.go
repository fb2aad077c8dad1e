package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/drivers/remote"
	"github.com/nicpath/nicpath/drivers/remote/remotetest"
	"github.com/nicpath/nicpath/hal"
)

// TestServeXDP: nicd opens the XDP driver through its configuration, on
// veth pairs in a namespace of the test's own, and a host programs it
// over the channel: the rule lands in the BPF maps (the Dump reads them
// back) and the capabilities are XDP's, with the configured table size and
// batch bound.
func TestServeXDP(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: XDP programs and network namespaces")
	}
	ns := remotetest.VethNS(t, "np-nicd", [2]string{"p1", "w1"}, [2]string{"p2", "w2"})
	dir := remotetest.Dir(t, "nicd-xdp")
	keys(t, dir)
	sock := filepath.Join(dir, "nicd.sock")
	p := remotetest.WriteNICConfig(t, dir, fmt.Sprintf(`driver: xdp
key: nic.key
hosts: [host.pub]
listen: [unix:%s]
xdp:
  netns: /var/run/netns/%s
  mode: generic
  max_rules: 512
  max_batch: 64
  ports:
    - {name: p1, kind: vport, id: 1}
    - {name: p2, kind: uplink, id: 2}
`, sock, ns))
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan []string, 1)
	done := make(chan error, 1)
	logs := &lockedWriter{w: &bytes.Buffer{}}
	go func() {
		done <- run(ctx, []string{"serve", "-config", p}, &bytes.Buffer{}, logs, func(a []string) { addrs <- a })
	}()
	select {
	case <-addrs:
	case err := <-done:
		t.Fatalf("nicd exited: %v\n%s", err, logs.w.String())
	case <-time.After(30 * time.Second):
		t.Fatal("nicd did not come up")
	}
	n, err := remote.Open(context.Background(), remote.Config{Address: "unix:" + sock,
		KeyFile: filepath.Join(dir, "host.key"), ServerKeyFile: filepath.Join(dir, "nic.pub")})
	if err != nil {
		t.Fatal(err)
	}
	caps := n.Capabilities()
	if !strings.HasPrefix(caps.Device, "xdp ") || caps.Location != hal.LocationKernel {
		t.Errorf("capabilities of the served XDP NIC: %s", caps.String())
	}
	if caps.MaxRules != 512 || caps.MaxBatch != 64 {
		t.Errorf("xdp.max_rules 512, max_batch 64 configured: the host sees MaxRules %d, MaxBatch %d", caps.MaxRules, caps.MaxBatch)
	}
	r := hal.Rule{ID: 7, Priority: 1, Actions: []hal.Action{hal.Output(2)}}
	r.Match.InPort(1)
	res := make([]hal.OpResult, 1)
	if err := n.Apply(context.Background(), []hal.Op{hal.AddOp(r)}, res); err != nil {
		t.Fatalf("apply through nicd to XDP: %v", err)
	}
	var got []hal.RuleInfo
	n.Dump(context.Background(), func(ri *hal.RuleInfo) error { got = append(got, *ri); return nil })
	if len(got) != 1 || got[0].Rule.ID != 7 || got[0].Location != hal.LocationKernel {
		t.Fatalf("dump through nicd: %+v", got)
	}
	n.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("nicd: %v", err)
	}
}

package remote_test

import (
	"context"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nicpath/nicpath/drivers/remote"
	"github.com/nicpath/nicpath/drivers/remote/remotetest"
	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/vswitch"
)

const policyYAML = `
hosts:
  - name: host-a
    pa: 198.19.0.1
  - name: host-b
    pa: 198.19.0.2
tenants:
  - name: blue
    vnets:
      - name: web
        vni: 5001
        subnets: [198.18.10.0/24]
        vms:
          - name: a1
            mac: 02:00:00:0a:00:01
            ca: 198.18.10.1
            host: host-a
          - name: a2
            mac: 02:00:00:0a:00:02
            ca: 198.18.10.2
            host: host-a
          - name: b1
            mac: 02:00:00:0b:00:01
            ca: 198.18.10.20
            host: host-b
`

var (
	macA1 = hal.MustMAC("02:00:00:0a:00:01")
	macB1 = hal.MustMAC("02:00:00:0b:00:01")
)

func hostA(t *testing.T) *softnic.NIC {
	t.Helper()
	n, err := softnic.New(softnic.Config{Device: "host-a", Ports: []softnic.PortConfig{
		{Name: "a1", Kind: hal.PortVPort, MAC: macA1},
		{Name: "a2", Kind: hal.PortVPort, MAC: hal.MustMAC("02:00:00:0a:00:02")},
		{Name: "uplink", Kind: hal.PortUplink, MAC: hal.MustMAC("02:00:00:00:ff:01"), MTU: 1600},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func flowFrame(sport uint16) []byte {
	return wire.Build(wire.FrameSpec{SrcMAC: macA1, DstMAC: macB1,
		Src: netip.MustParseAddr("198.18.10.1"), Dst: netip.MustParseAddr("198.18.10.20"),
		Proto: hal.ProtoUDP, SrcPort: sport, DstPort: 7000, Payload: []byte("hello")})
}

// TestVswitchOverRemote: a vswitch on remote(softnic) offloads flows
// through the channel; the NIC side restarts, on the same NIC and then on a
// fresh one, and the reconnect the driver reports makes the vswitch
// reconcile by cookie: the Dump afterwards shows exactly the rules it
// wants, none twice, and the NIC forwards them by itself again.
func TestVswitchOverRemote(t *testing.T) {
	st, err := policy.Parse("remote.yaml", []byte(policyYAML))
	if err != nil {
		t.Fatal(err)
	}
	bed := remotetest.NewBed(t)
	soft1 := hostA(t)
	s1 := bed.Serve(t, soft1)

	var sw atomic.Pointer[vswitch.Switch]
	reports := make(chan vswitch.ReconcileReport, 4)
	nic := bed.Open(t, func(c *remote.Config) {
		// The hook a daemon installs: reconcile when the channel is back.
		c.OnReconnect = func(remote.Reconnect) {
			if s := sw.Load(); s != nil {
				rep, err := s.Reconcile(context.Background())
				if err != nil {
					t.Errorf("reconcile after the reconnect: %v", err)
				}
				reports <- rep
			}
		}
	})
	// Exact flows: the ten connections below are ten rules through the
	// channel (port-wildcard flows would make them one).
	s, err := vswitch.New(vswitch.Config{NIC: nic, Host: "host-a", State: st,
		Ports: map[string]hal.PortID{"a1": 1, "a2": 2}, Uplink: 3, Logger: slog.New(slog.DiscardHandler),
		DisablePortWildcards: true})
	if err != nil {
		t.Fatal(err)
	}
	sw.Store(s)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		<-done
		s.Close()
	}()

	// Ten flows: each first packet goes to the host, is offloaded and
	// reinjected; the NIC forwards the next ones.
	far := softnic.FarSide{NIC: soft1}
	for i := range 10 {
		if err := far.Send(1, flowFrame(uint16(2000+i))); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(remotetest.Rules(t, soft1)) < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("the vswitch offloaded %d of 10 flows through the channel", len(remotetest.Rules(t, soft1)))
		}
		time.Sleep(5 * time.Millisecond)
	}
	want := remotetest.Rules(t, soft1)
	remotetest.SameRules(t, "remote dump", remotetest.Rules(t, nic), want)

	waitReport := func() vswitch.ReconcileReport {
		t.Helper()
		select {
		case r := <-reports:
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("no reconcile after the restart")
		}
		return vswitch.ReconcileReport{}
	}

	// The NIC side restarts on the same NIC: its rules are still there,
	// and while no server runs the NIC forwards the offloaded flows by
	// itself.
	s1.Stop()
	dctx, dcancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	far.Recv(dctx, 3, 64) // what the first packets left on the uplink
	dcancel()
	for _, sport := range []uint16{2000, 2005, 2009} {
		before, _ := soft1.Stats(context.Background())
		if err := far.Send(1, flowFrame(sport)); err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		got, _ := far.Recv(rctx, 3, 4)
		rcancel()
		after, _ := soft1.Stats(context.Background())
		if len(got) != 1 || after.Exceptions != before.Exceptions {
			t.Fatalf("flow %d while the NIC side's server was down: %d frames out, exceptions %d → %d", sport, len(got), before.Exceptions, after.Exceptions)
		}
	}
	s2 := bed.Serve(t, soft1)
	rep := waitReport()
	if rep.Added != 0 || rep.Removed != 0 || rep.Modified != 0 {
		t.Errorf("reconcile after a restart that kept the rules: %+v", rep)
	}
	remotetest.SameRules(t, "after a restart on the same NIC", remotetest.Rules(t, nic), want)

	// The NIC side restarts on a fresh NIC: the rules are gone, and the
	// reconcile puts each back once.
	s2.Stop()
	soft2 := hostA(t)
	bed.Serve(t, soft2)
	rep = waitReport()
	if rep.Added != len(want) || rep.Removed != 0 {
		t.Errorf("reconcile after a restart on a fresh NIC: %+v, want %d added", rep, len(want))
	}
	remotetest.SameRules(t, "after a restart on a fresh NIC", remotetest.Rules(t, nic), want)
	remotetest.SameRules(t, "the fresh NIC itself", remotetest.Rules(t, soft2), want)
	// A second reconcile finds nothing to do: no duplicates.
	if rep, err := s.Reconcile(context.Background()); err != nil || rep.Added+rep.Removed+rep.Modified != 0 {
		t.Errorf("a second reconcile: %+v, %v", rep, err)
	}
	// The fresh NIC forwards the flows by itself.
	far2 := softnic.FarSide{NIC: soft2}
	before, _ := soft2.Stats(context.Background())
	if err := far2.Send(1, flowFrame(2003)); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer rcancel()
	got, _ := far2.Recv(rctx, 3, 4)
	after, _ := soft2.Stats(context.Background())
	if len(got) != 1 || after.Exceptions != before.Exceptions {
		t.Fatalf("the fresh NIC did not forward the reconciled flow by itself (%d frames out)", len(got))
	}
}

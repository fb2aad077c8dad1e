package remotetest_test

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/nicpath/nicpath/drivers/remote"
	"github.com/nicpath/nicpath/drivers/remote/nicside"
	"github.com/nicpath/nicpath/drivers/remote/remotetest"
	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
)

func newSoftnic(t *testing.T) *softnic.NIC {
	t.Helper()
	n, err := softnic.New(softnic.Config{Ports: []softnic.PortConfig{
		{Name: "vm1", Kind: hal.PortVPort, MAC: hal.MAC{0x02, 0, 0, 0, 0, 1}},
		{Name: "uplink", Kind: hal.PortUplink, MAC: hal.MAC{0x02, 0, 0, 0, 0, 2}, MTU: 1600},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// Start's NIC is the served one: a rule applied through it lands on the
// softnic.
func TestStart(t *testing.T) {
	soft := newSoftnic(t)
	nic := remotetest.Start(t, soft)
	k := hal.FlowKey{InPort: 1, EthType: hal.EtherTypeIPv4, Proto: hal.ProtoUDP,
		IPSrc: hal.Addr16(netip.MustParseAddr("198.18.0.1")), IPDst: hal.Addr16(netip.MustParseAddr("198.18.0.2")), L4Src: 1, L4Dst: 2}
	res := make([]hal.OpResult, 1)
	if err := nic.Apply(context.Background(), []hal.Op{hal.AddOp(hal.Rule{ID: 7, Priority: 1, Match: hal.Exact(&k), Actions: []hal.Action{hal.Output(2)}})}, res); err != nil || res[0].Err != nil {
		t.Fatalf("apply through the channel: %v, %v", err, res[0].Err)
	}
	// The table through the channel is the served NIC's.
	remotetest.SameRules(t, "the served softnic", remotetest.Rules(t, soft), remotetest.Rules(t, nic))
	if got := remotetest.Rules(t, soft); len(got) != 1 || got[7].Priority != 1 {
		t.Fatalf("the served softnic holds %v, want rule 7", got)
	}
}

// A bed's keys pin each other: a host with another key is refused, and a
// server stopped and started again at the same address takes the host
// back.
func TestBed(t *testing.T) {
	bed := remotetest.NewBed(t)
	soft := newSoftnic(t)
	s := bed.Serve(t, soft)
	stranger := remotetest.NewKeys(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := bed.Config(bed.Addr)
	cfg.PrivateKey = stranger.HostPriv
	if n, err := remote.Open(ctx, cfg); !errors.Is(err, remote.ErrHandshake) {
		if n != nil {
			n.Close()
		}
		t.Fatalf("a host with another key: %v, want %v", err, remote.ErrHandshake)
	}
	s.Stop()
	bed.Serve(t, soft)
	nic := bed.Open(t, nil)
	if got := remotetest.Rules(t, nic); len(got) != 0 {
		t.Fatalf("a fresh softnic dumps %d rules through the channel", len(got))
	}
}

// KeyFiles' keys are the files' keys.
func TestKeyFiles(t *testing.T) {
	bed := remotetest.NewBedFiles(t)
	cfg := remote.Config{Address: bed.Addr, KeyFile: bed.Dir + "/host.key", ServerKeyFile: bed.Dir + "/nic.pub"}
	bed.Serve(t, newSoftnic(t))
	remotetest.Open(t, cfg)
}

// WriteNICConfig with SoftnicSection and a bed's key files is a NIC
// side's configuration that nicside loads and serves: the bed's keys open
// it, and the softnic it serves has the section's three ports.
func TestWriteNICConfig(t *testing.T) {
	bed := remotetest.NewBedFiles(t)
	p := remotetest.WriteNICConfig(t, bed.Dir, "driver: softnic\nkey: nic.key\nhosts: [host.pub]\nlisten: [\""+bed.Addr+"\"]\nlog_level: warn\n"+remotetest.SoftnicSection)
	c, err := nicside.LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Driver != "softnic" || c.HostKeys() != 1 || c.Softnic == nil || c.Softnic.Device != "dpu0" || len(c.Softnic.Ports) != 3 {
		t.Fatalf("loaded %+v", c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan []string, 1)
	done := make(chan error, 1)
	go func() { done <- nicside.Serve(ctx, c, slog.New(slog.DiscardHandler), func(a []string) { ready <- a }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		done <- err
		t.Fatalf("serve ended before listening: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not listen within 30 s")
	}
	nic := bed.Open(t, nil)
	if ports := nic.Ports(); len(ports) != 3 || ports[2].Kind != hal.PortUplink || ports[2].MTU != 1600 {
		t.Fatalf("the served NIC has ports %+v, want the section's three", ports)
	}
}

package lease

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/nicpath/nicpath/store"
)

var (
	macA = net.HardwareAddr{2, 0, 0, 0, 0, 0xa}
	macB = net.HardwareAddr{2, 0, 0, 0, 0, 0xb}
	macC = net.HardwareAddr{2, 0, 0, 0, 0, 0xc}
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func open(t *testing.T, kv store.KV, c *clock) *Broker {
	t.Helper()
	b, err := Open(context.Background(), kv, Config{Subnet: "branch", First: netip.MustParseAddr("10.0.1.10"),
		Last: netip.MustParseAddr("10.0.1.11"), LeaseTime: time.Hour, Prefix: "/t/", Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBrokerLeasesSurviveReopenAndExpire(t *testing.T) {
	ctx := context.Background()
	kv := store.NewMemory()
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	b := open(t, kv, c)
	a, err := b.Offer(macA, netip.Addr{})
	if err != nil || a != netip.MustParseAddr("10.0.1.10") {
		t.Fatalf("offer: %v %v", a, err)
	}
	if _, err := b.Acquire(ctx, macA, a, "p1", "n1"); err != nil {
		t.Fatal(err)
	}
	bAddr, _ := b.Offer(macB, a) // asks for A's address: gets the next one
	if bAddr != netip.MustParseAddr("10.0.1.11") {
		t.Fatalf("B offered %v", bAddr)
	}
	if _, err := b.Acquire(ctx, macB, a, "p2", ""); !errors.Is(err, ErrNotOffered) {
		t.Fatalf("B took A's address: %v", err)
	}
	b.Acquire(ctx, macB, bAddr, "p2", "n2")
	if _, err := b.Offer(macC, netip.Addr{}); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("third node: %v", err)
	}
	// A restart: a new broker on the same store has the same leases, and
	// hands each node its address again.
	b2 := open(t, kv, c)
	if got := b2.Leases(); len(got) != 2 || got[0].MAC != macA.String() || got[1].Port != "p2" {
		t.Fatalf("after reopen: %+v", got)
	}
	if a2, _ := b2.Offer(macA, netip.Addr{}); a2 != a {
		t.Fatalf("A offered %v after reopen, had %v", a2, a)
	}
	listed, err := List(ctx, kv, "/t/")
	if err != nil || len(listed) != 2 {
		t.Fatalf("List: %v %v", listed, err)
	}
	// Expiry frees an address for another node.
	c.t = c.t.Add(2 * time.Hour)
	if _, ok := b2.Lookup(a); ok {
		t.Fatal("expired lease still looked up")
	}
	if got, err := b2.Offer(macC, netip.Addr{}); err != nil || got != a {
		t.Fatalf("C after expiry: %v %v", got, err)
	}
	if err := b2.Release(ctx, macB, bAddr); err != nil {
		t.Fatal(err)
	}
	if listed, _ := List(ctx, kv, "/t/"); len(listed) != 1 {
		t.Fatalf("after release: %+v", listed)
	}
}

func TestServerDORA(t *testing.T) {
	ctx := context.Background()
	c := &clock{time.Now()}
	b := open(t, store.NewMemory(), c)
	s := NewServer(b, ServerConfig{Prefix: netip.MustParsePrefix("10.0.1.0/24"), Gateway: netip.MustParseAddr("10.0.1.1"), MTU: 1426})
	disc, _ := dhcpv4.NewDiscovery(macA)
	offer, err := s.Handle(ctx, disc, "p1")
	if err != nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("offer: %v %v", offer, err)
	}
	if !offer.YourIPAddr.Equal(net.IPv4(10, 0, 1, 10)) || !offer.Router()[0].Equal(net.IPv4(10, 0, 1, 1)) {
		t.Fatalf("offer %s", offer.Summary())
	}
	mtu := offer.Options.Get(dhcpv4.OptionInterfaceMTU)
	if len(mtu) != 2 || int(mtu[0])<<8|int(mtu[1]) != 1426 {
		t.Fatalf("MTU option %v", mtu)
	}
	req, _ := dhcpv4.NewRequestFromOffer(offer)
	ack, err := s.Handle(ctx, req, "p1")
	if err != nil || ack.MessageType() != dhcpv4.MessageTypeAck || ack.IPAddressLeaseTime(0) != time.Hour {
		t.Fatalf("ack: %v %v", ack, err)
	}
	if l, ok := b.Lookup(netip.MustParseAddr("10.0.1.10")); !ok || l.Port != "p1" {
		t.Fatalf("lease %+v", l)
	}
	// Another node asking for the same address is refused.
	req2, _ := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithHwAddr(macB))
	nak, err := s.Handle(ctx, req2, "p2")
	if err != nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("second node: %v %v", nak, err)
	}
}

func TestFileKVKeepsLeasesAcrossOpen(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir() + "/leases.json"
	kv, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{time.Now()}
	b := open(t, kv, c)
	a, _ := b.Offer(macA, netip.Addr{})
	if _, err := b.Acquire(ctx, macA, a, "p1", "n1"); err != nil {
		t.Fatal(err)
	}
	kv2, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b2 := open(t, kv2, c)
	if l, ok := b2.Lookup(a); !ok || l.MAC != macA.String() || l.Hostname != "n1" {
		t.Fatalf("after reopening the file: %+v %v", l, ok)
	}
}

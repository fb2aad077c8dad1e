package lease_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/nicpath/nicpath/store"
	"github.com/nicpath/nicpath/tether/lease"
)

// A broker hands a node an address, keeps the lease in the store, and a
// broker opened again on the same store (a tether that restarted) hands
// the node the same address.
func Example() {
	ctx := context.Background()
	kv := store.NewMemory()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cfg := lease.Config{
		Subnet:    "branch",
		First:     netip.MustParseAddr("10.0.1.10"),
		Last:      netip.MustParseAddr("10.0.1.20"),
		LeaseTime: time.Hour,
		Prefix:    "/tether/",
		Now:       func() time.Time { return now },
	}
	b, err := lease.Open(ctx, kv, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	node := net.HardwareAddr{2, 0, 0, 0, 0, 0xa}
	addr, err := b.Offer(node, netip.Addr{})
	if err != nil {
		fmt.Println(err)
		return
	}
	l, err := b.Acquire(ctx, node, addr, "port1", "sensor-1")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("leased", l.Addr, "to", l.MAC, "until", l.Expiry.Format(time.RFC3339))

	// The tether restarts: a new broker on the same store.
	b2, err := lease.Open(ctx, kv, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	again, _ := b2.Offer(node, netip.Addr{})
	fmt.Println("after restart the node is offered", again)

	stored, _ := lease.List(ctx, kv, "/tether/")
	for _, l := range stored {
		fmt.Println("stored:", l.Subnet, l.Addr, l.Port, l.Hostname)
	}
	// Output:
	// leased 10.0.1.10 to 02:00:00:00:00:0a until 2026-01-01T01:00:00Z
	// after restart the node is offered 10.0.1.10
	// stored: branch 10.0.1.10 port1 sensor-1
}

// The DHCP server answers a node's discover and request (messages in,
// messages out: the tether frames them on its ports).
func ExampleServer_Handle() {
	ctx := context.Background()
	b, err := lease.Open(ctx, store.NewMemory(), lease.Config{
		Subnet:    "branch",
		First:     netip.MustParseAddr("10.0.1.10"),
		Last:      netip.MustParseAddr("10.0.1.20"),
		LeaseTime: time.Hour,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	s := lease.NewServer(b, lease.ServerConfig{
		Prefix:  netip.MustParsePrefix("10.0.1.0/24"),
		Gateway: netip.MustParseAddr("10.0.1.1"),
		MTU:     1426,
	})

	disc, err := dhcpv4.NewDiscovery(net.HardwareAddr{2, 0, 0, 0, 0, 0xa})
	if err != nil {
		fmt.Println(err)
		return
	}
	offer, err := s.Handle(ctx, disc, "port1")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(offer.MessageType(), offer.YourIPAddr, "router", offer.Router()[0], "mask", net.IP(offer.SubnetMask()))

	req, err := dhcpv4.NewRequestFromOffer(offer)
	if err != nil {
		fmt.Println(err)
		return
	}
	ack, err := s.Handle(ctx, req, "port1")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(ack.MessageType(), ack.YourIPAddr, "for", ack.IPAddressLeaseTime(0))
	l, ok := b.Lookup(netip.MustParseAddr("10.0.1.10"))
	fmt.Println("lease on", l.Port, ok)
	// Output:
	// OFFER 10.0.1.10 router 10.0.1.1 mask 255.255.255.0
	// ACK 10.0.1.10 for 1h0m0s
	// lease on port1 true
}

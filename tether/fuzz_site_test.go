package tether

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/store"
	"github.com/nicpath/nicpath/tether/lease"
)

// FuzzParseConfig: the configuration parser never panics, and what it
// takes it takes whole (every entry named, with ports); held to a policy,
// it either takes every subnet from the policy (every pool inside its
// prefix) or is refused and left as it was.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(goodConfig()))
	f.Add([]byte("relocated_subnets: []\n"))
	f.Add([]byte("relocated_subnets:\n  - name: x\n    prefix: 10.0.0.0/33\n"))
	f.Add([]byte(strings.Replace(goodConfig(), "ports: [p1, p2]", "ports: [p1, p2]\n      path_mtu: 9000\n      keepalive: 10s\n      probe: 1s", 1)))
	f.Add([]byte(strings.Replace(goodConfig(), "name: branch", "name: lab", 1)))
	f.Add([]byte(strings.Replace(goodConfig(), "key: "+otherKey, "key: "+goodKey, 1)))
	st := testPolicy(f, true, false)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig("f.yaml", b)
		if err != nil {
			if c != nil {
				t.Fatal("a config with errors")
			}
			return
		}
		for _, r := range c.Subnets {
			if r.Name == "" || len(r.Ports) == 0 || !r.AnchorEndpoint.IsValid() {
				t.Fatalf("took %+v", r)
			}
		}
		if err := c.CheckPolicy(st); err != nil {
			var ce ConfigErrors
			if !errors.As(err, &ce) {
				t.Fatalf("error %T: %v", err, err)
			}
			for _, r := range c.Subnets {
				if r.bound || r.Prefix.IsValid() {
					t.Fatalf("a refused configuration was changed: %+v", r)
				}
			}
			return
		}
		for _, r := range c.Subnets {
			if !r.bound || !r.Prefix.Contains(r.PoolFirst) || !r.Prefix.Contains(r.PoolLast) || r.PoolLast.Less(r.PoolFirst) {
				t.Fatalf("took %+v", r)
			}
			if n := len(PoolVMs(&r)); n == 0 || n > MaxPool {
				t.Fatalf("pool of %d", n)
			}
		}
	})
}

type sinkPort struct{ frames [][]byte }

func (s *sinkPort) Send(f []byte) error {
	s.frames = append(s.frames, append([]byte(nil), f...))
	return nil
}

func fuzzSite(t testing.TB) (*Site, *SitePort, *sinkPort, *lease.Broker) {
	br, err := lease.Open(context.Background(), store.NewMemory(), lease.Config{Subnet: "b", First: netip.MustParseAddr("10.0.1.10"),
		Last: netip.MustParseAddr("10.0.1.12"), LeaseTime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	prefix, gw := netip.MustParsePrefix("10.0.1.0/24"), netip.MustParseAddr("10.0.1.1")
	s := NewSite(SiteConfig{VNI: 7, Prefix: prefix, Gateway: gw, MTU: 1426, Broker: br,
		DHCP:   lease.NewServer(br, lease.ServerConfig{Prefix: prefix, Gateway: gw, MTU: 1426}),
		Tunnel: func(uint32, []byte) error { return nil }, Logger: quiet()})
	sink := &sinkPort{}
	p := s.AddPort("p1", hal.MAC{2, 0, 0, 0, 0, 0x99}, sink)
	br.Acquire(context.Background(), net.HardwareAddr{2, 0, 0, 0, 0, 1}, netip.MustParseAddr("10.0.1.10"), "p1", "")
	return s, p, sink, br
}

// FuzzSiteFromNode: whatever a node sends, the site never panics, answers
// only on the port it came from, and never hands the tunnel a frame from
// an address not leased to the sender.
func FuzzSiteFromNode(f *testing.F) {
	node := hal.MAC{2, 0, 0, 0, 0, 1}
	disc, _ := dhcpv4.NewDiscovery(net.HardwareAddr(node[:]))
	f.Add(udpFrame(node, netip.IPv4Unspecified(), netip.AddrFrom4([4]byte{255, 255, 255, 255}), 68, 67, disc.ToBytes()))
	f.Add(udpFrame(node, netip.MustParseAddr("10.0.1.10"), netip.MustParseAddr("10.0.0.10"), 5000, 53, []byte("hello")))
	f.Add(udpFrame(node, netip.MustParseAddr("10.0.1.11"), netip.MustParseAddr("10.0.0.10"), 5000, 53, []byte("spoofed")))
	f.Add(arpRequest(node, netip.MustParseAddr("10.0.1.10"), netip.MustParseAddr("10.0.1.1")))
	f.Add(udpFrame(node, netip.MustParseAddr("10.0.1.10"), netip.MustParseAddr("10.0.0.10"), 5000, 53, make([]byte, 1500)))
	f.Fuzz(func(t *testing.T, frame []byte) {
		// A site and a lease broker of their own for every input, so that
		// an input's path depends on the input alone. Shared by all
		// inputs, they carried each input's leases into the next: a DHCP
		// exchange could take the free addresses, or release the node's
		// own, and later frames then took other paths (or, with the lease
		// of 10.0.1.10 gone to another MAC, failed the check below for a
		// reason no single input shows).
		s, p, _, _ := fuzzSite(t)
		var tunnelled [][]byte
		s.cfg.Tunnel = func(_ uint32, fr []byte) error {
			tunnelled = append(tunnelled, append([]byte(nil), fr...))
			return nil
		}
		s.FromNode(context.Background(), p, frame)
		for _, fr := range tunnelled {
			if len(fr) < 34 || netip.AddrFrom4([4]byte(fr[26:30])) != netip.MustParseAddr("10.0.1.10") || hal.MAC(fr[6:12]) != node {
				t.Fatalf("tunnelled a frame not from the lease: %x", fr)
			}
			if len(fr)-14 > 1426 {
				t.Fatalf("tunnelled %d bytes over the MTU", len(fr))
			}
		}
	})
}

func udpFrame(src hal.MAC, from, to netip.Addr, sport, dport uint16, payload []byte) []byte {
	b := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	b = append(b, src[:]...)
	b = append(b, 0x08, 0x00)
	ip := len(b)
	n := 28 + len(payload)
	b = append(b, 0x45, 0, byte(n>>8), byte(n), 0, 0, 0x40, 0, 64, 17, 0, 0)
	b = append(b, from.AsSlice()...)
	b = append(b, to.AsSlice()...)
	b = append(b, byte(sport>>8), byte(sport), byte(dport>>8), byte(dport), byte((8+len(payload))>>8), byte(8+len(payload)), 0, 0)
	b = append(b, payload...)
	sum := uint32(0)
	for i := ip; i < ip+20; i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	b[ip+10], b[ip+11] = byte(^sum>>8), byte(^sum)
	return b
}

func arpRequest(src hal.MAC, spa, tpa netip.Addr) []byte {
	b := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	b = append(b, src[:]...)
	b = append(b, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1)
	b = append(b, src[:]...)
	b = append(b, spa.AsSlice()...)
	b = append(b, 0, 0, 0, 0, 0, 0)
	return append(b, tpa.AsSlice()...)
}

// The site answers ARP for the gateway with the port's MAC, serves DHCP,
// tunnels a leased node's packet, refuses a spoofed one and answers a too
// big one with an ICMP error announcing the MTU.
func TestSiteFromNode(t *testing.T) {
	s, p, sink, _ := fuzzSite(t)
	var tunnelled [][]byte
	s.cfg.Tunnel = func(_ uint32, fr []byte) error { tunnelled = append(tunnelled, fr); return nil }
	node := hal.MAC{2, 0, 0, 0, 0, 1}
	ctx := context.Background()
	s.FromNode(ctx, p, arpRequest(node, netip.MustParseAddr("10.0.1.10"), netip.MustParseAddr("10.0.1.1")))
	if len(sink.frames) != 1 || hal.MAC(sink.frames[0][22:28]) != p.MAC || netip.AddrFrom4([4]byte(sink.frames[0][28:32])) != netip.MustParseAddr("10.0.1.1") {
		t.Fatalf("ARP answer %x", sink.frames)
	}
	disc, _ := dhcpv4.NewDiscovery(net.HardwareAddr{2, 0, 0, 0, 0, 2})
	s.FromNode(ctx, p, udpFrame(hal.MAC{2, 0, 0, 0, 0, 2}, netip.IPv4Unspecified(), netip.AddrFrom4([4]byte{255, 255, 255, 255}), 68, 67, disc.ToBytes()))
	if len(sink.frames) != 2 {
		t.Fatal("no DHCP offer")
	}
	offer, err := dhcpv4.FromBytes(sink.frames[1][42:])
	if err != nil || offer.MessageType() != dhcpv4.MessageTypeOffer || !offer.YourIPAddr.Equal(net.IPv4(10, 0, 1, 11)) {
		t.Fatalf("offer %v %v", offer, err)
	}
	s.FromNode(ctx, p, udpFrame(node, netip.MustParseAddr("10.0.1.10"), netip.MustParseAddr("10.0.0.10"), 5000, 53, []byte("ok")))
	s.FromNode(ctx, p, udpFrame(node, netip.MustParseAddr("10.0.1.12"), netip.MustParseAddr("10.0.0.10"), 5000, 53, []byte("spoof")))
	if len(tunnelled) != 1 || s.Stats().Spoofed.Load() != 1 {
		t.Fatalf("tunnelled %d, spoofed %d", len(tunnelled), s.Stats().Spoofed.Load())
	}
	big := udpFrame(node, netip.MustParseAddr("10.0.1.10"), netip.MustParseAddr("10.0.0.10"), 5000, 53, make([]byte, 1420))
	copy(big[0:6], p.MAC[:]) // to the tether: no ICMP error answers a broadcast
	s.FromNode(ctx, p, big)
	if len(tunnelled) != 1 || len(sink.frames) != 3 {
		t.Fatalf("a too-big packet: tunnelled %d, answers %d", len(tunnelled), len(sink.frames))
	}
	icmp := sink.frames[2]
	if icmp[23] != 1 || icmp[34] != 3 || icmp[35] != 4 || int(icmp[40])<<8|int(icmp[41]) != 1426 {
		t.Fatalf("too-big answer %x", icmp[:42])
	}
}

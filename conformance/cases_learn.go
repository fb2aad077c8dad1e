package conformance

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/nicpath/nicpath/hal"
)

func init() {
	register("learning", "a NIC that learns addresses (AddressLearner) reports the sources its vports use, once, and their gratuitous ARPs and unsolicited neighbour advertisements as announcements; nothing from an uplink", caseLearning)
}

func caseLearning(t T, tg *Target) {
	t.Run("seen", func(t T) {
		e, l := openLearner(t, tg)
		in := e.vport()
		ll := netip.MustParseAddr("fe80::4e50:b")
		sent := [][]byte{
			build(udpSpec()),
			build(tcpSpec()), // the same source again: no second report
			build(udp6Spec()),
			arpFrame(macB, caC, caB, false), // an ordinary request: its sender, seen
			naFrame(macB, ll, ca6C, true),   // solicited: its source only
		}
		e.send(in, sent...)
		back := map[hal.PortID][][]byte{in.ID: sent}
		if up := e.uplinkOther(in); up != nil {
			// An uplink's sources are remote hosts', not a vport's: its
			// miss reaches the host and teaches nothing.
			s := udpSpec()
			s.Src, s.IPSrc = macX, caNAT
			f := build(s)
			e.send(*up, f)
			back[up.ID] = [][]byte{f}
		}
		e.drainSent(back)
		e.expectLearned(l, []hal.LearnedAddress{
			{Port: in.ID, Kind: hal.LearnSeen, MAC: macA, Addr: caA},
			{Port: in.ID, Kind: hal.LearnSeen, MAC: macA, Addr: ca6A},
			{Port: in.ID, Kind: hal.LearnSeen, MAC: macB, Addr: caC},
			{Port: in.ID, Kind: hal.LearnSeen, MAC: macB, Addr: ll},
		})
	})
	t.Run("announced", func(t T) {
		e, l := openLearner(t, tg)
		in := e.vport()
		sent := [][]byte{
			arpFrame(macA, caA, caA, false), // gratuitous ARP request
			arpFrame(macB, caC, caC, true),  // gratuitous ARP reply
			naFrame(macA, netip.MustParseAddr("fe80::4e50:a"), ca6A, false),
		}
		e.send(in, sent...)
		e.drainSent(map[hal.PortID][][]byte{in.ID: sent})
		e.expectLearned(l, []hal.LearnedAddress{
			{Port: in.ID, Kind: hal.LearnAnnounced, MAC: macA, Addr: caA},
			{Port: in.ID, Kind: hal.LearnAnnounced, MAC: macB, Addr: caC},
			{Port: in.ID, Kind: hal.LearnAnnounced, MAC: macA, Addr: ca6A},
		})
	})
}

// openLearner opens the case's NIC and its AddressLearner, skipping when
// the NIC does not advertise learning.
func openLearner(t T, tg *Target) (*env, hal.AddressLearner) {
	t.Helper()
	e := open(t, tg)
	if !e.caps.AddressLearning {
		need(t, "address learning", "the NIC does not report learned addresses")
	}
	l, ok := e.nic.(hal.AddressLearner)
	if !ok {
		t.Fatalf("AddressLearning is advertised but the NIC does not implement AddressLearner")
	}
	return e, l
}

// uplinkOther returns an uplink other than in, if the NIC has one.
func (e *env) uplinkOther(in hal.Port) *hal.Port {
	for i := range e.uplinks {
		if e.uplinks[i].ID != in.ID {
			return &e.uplinks[i]
		}
	}
	return nil
}

// drainSent reads the exception path, as a host does, until each frame of
// sent came back from the port it was sent into (a NIC may learn as its
// exceptions are read), and fails the case for one that did not: a NIC
// that learns hands its vports' first packets, ARP and neighbour
// discovery to the host. The suite's neighbour discovery frames count
// here, although the other cases ignore them (ours).
func (e *env) drainSent(sent map[hal.PortID][][]byte) {
	e.t.Helper()
	if !e.caps.ExceptionPath {
		return
	}
	ctx, cancel := context.WithTimeout(e.t.Context(), e.tg.timeout())
	defer cancel()
	left := map[hal.PortID][][]byte{}
	n := 0
	for p, fs := range sent {
		left[p] = slices.Clone(fs)
		n += len(fs)
	}
	batch := make([]hal.Exception, 16)
	for n > 0 && ctx.Err() == nil {
		for i := range batch {
			batch[i] = hal.Exception{Buf: make([]byte, 2048)}
		}
		k, err := e.nic.ReadExceptions(ctx, batch)
		if err != nil && ctx.Err() == nil {
			e.t.Fatalf("ReadExceptions: %v", err)
		}
		for _, x := range batch[:k] {
			fs := left[x.InPort]
			// A short frame may come back padded to Ethernet's minimum.
			if i := slices.IndexFunc(fs, func(f []byte) bool { return bytes.HasPrefix(x.Frame(), f) }); i >= 0 {
				left[x.InPort] = slices.Delete(fs, i, i+1)
				n--
			}
		}
	}
	for p, fs := range left {
		for _, f := range fs {
			e.t.Errorf("a frame sent into port %d never reached the exception path (a learning NIC learns from it there): % x", p, f)
		}
	}
}

// expectLearned reads the NIC's reports until want arrived, in any order,
// and fails on any other report of the suite's MACs (the kernel behind a
// real port may send frames of its own) until the quiet time after.
func (e *env) expectLearned(l hal.AddressLearner, want []hal.LearnedAddress) {
	e.t.Helper()
	left := slices.Clone(want)
	var extra []hal.LearnedAddress
	read := func(wait time.Duration, all bool) {
		ctx, cancel := context.WithTimeout(e.t.Context(), wait)
		defer cancel()
		batch := make([]hal.LearnedAddress, 16)
		for (all || len(left) > 0) && ctx.Err() == nil {
			k, err := l.ReadLearned(ctx, batch)
			if err != nil && ctx.Err() == nil {
				e.t.Fatalf("ReadLearned: %v", err)
			}
			for _, a := range batch[:k] {
				if !bytes.Equal(a.MAC[:3], testOUI[:]) {
					continue
				}
				if i := slices.Index(left, a); i >= 0 {
					left = slices.Delete(left, i, i+1)
				} else {
					extra = append(extra, a)
				}
			}
		}
	}
	read(e.tg.timeout(), false)
	read(e.tg.quiet(), true)
	for _, a := range left {
		e.t.Errorf("not reported: %s", learnedString(a))
	}
	for _, a := range extra {
		e.t.Errorf("reported, not expected (a second report of the same address, or one from a frame that teaches nothing): %s", learnedString(a))
	}
}

func learnedString(a hal.LearnedAddress) string {
	return fmt.Sprintf("port %d %v %v %v", a.Port, a.Kind, a.MAC, a.Addr)
}

// arpFrame is an ARP request (or reply) from mac, sender spa, target tpa;
// a gratuitous one when spa == tpa.
func arpFrame(mac hal.MAC, spa, tpa netip.Addr, reply bool) []byte {
	op := uint16(layers.ARPRequest)
	dst, tha := hw(hal.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}), make([]byte, 6)
	if reply {
		op = layers.ARPReply
		tha = hw(mac)
	}
	eth := &layers.Ethernet{SrcMAC: hw(mac), DstMAC: dst, EthernetType: layers.EthernetTypeARP}
	arp := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: op, SourceHwAddress: hw(mac), SourceProtAddress: spa.AsSlice(), DstHwAddress: tha, DstProtAddress: tpa.AsSlice()}
	return serialize(eth, arp)
}

// naFrame is a neighbour advertisement of target from mac and src to all
// nodes; solicited sets the S flag (a reply to a solicitation, not an
// announcement).
func naFrame(mac hal.MAC, src, target netip.Addr, solicited bool) []byte {
	eth := &layers.Ethernet{SrcMAC: hw(mac), DstMAC: hw(hal.MAC{0x33, 0x33, 0, 0, 0, 1}), EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: layers.IPProtocolICMPv6, SrcIP: src.AsSlice(),
		DstIP: netip.MustParseAddr("ff02::1").AsSlice()}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeNeighborAdvertisement, 0)}
	_ = icmp.SetNetworkLayerForChecksum(ip)
	flags := uint8(0x20) // override
	if solicited {
		flags |= 0x40
	}
	na := &layers.ICMPv6NeighborAdvertisement{Flags: flags, TargetAddress: target.AsSlice(),
		Options: layers.ICMPv6Options{{Type: layers.ICMPv6OptTargetAddress, Data: hw(mac)}}}
	return serialize(eth, ip, icmp, na)
}

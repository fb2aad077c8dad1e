package tcflower

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/mdlayher/netlink"

	"github.com/nicpath/nicpath/hal"
)

// fakeGroups records the groups joined and left.
type fakeGroups struct {
	mu     sync.Mutex
	joined map[netip.Addr]int // memberships held, by group
	fail   error
}

type fakeMembership struct {
	g      *fakeGroups
	groups []netip.Addr
}

func (m *fakeMembership) Close() error {
	m.g.mu.Lock()
	defer m.g.mu.Unlock()
	for _, g := range m.groups {
		m.g.joined[g]--
	}
	return nil
}

func (f *fakeGroups) joinGroups(ifindex uint32, groups []netip.Addr) (io.Closer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	for _, g := range groups {
		f.joined[g]++
	}
	return &fakeMembership{f, slices.Clone(groups)}, nil
}

func (f *fakeGroups) held() []netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netip.Addr
	for g, c := range f.joined {
		if c > 0 {
			out = append(out, g)
		}
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}

// fakeEndpointNIC is fakeNIC with VXLAN and Geneve ports and a tunnel
// filter.
func fakeEndpointNIC(t *testing.T, k *fakeKernel) (*NIC, *fakeGroups) {
	n := fakeNIC(t, k)
	n.caps.TunnelFilter = true
	n.tunPorts = []uint16{4789, 6081}
	g := &fakeGroups{joined: map[netip.Addr]int{}}
	n.groups = g
	n.lay.ports[3].MAC = hal.MustMAC("02:4e:50:00:00:a1")
	return n, g
}

var (
	epPA  = netip.MustParseAddr("198.19.0.1")
	epPA6 = netip.MustParseAddr("2001:db8:ff::1")
	epGrp = netip.MustParseAddr("233.252.0.11")
)

// checkUDPKeys checks the keys every endpoint filter has.
func checkUDPKeys(t *testing.T, f *sentFilter, v6 bool, port uint16, what string) {
	t.Helper()
	wantAttr(t, f.opts, flowerIndev, cstr("up0"), what+": indev")
	et := hal.EtherTypeIPv4
	if v6 {
		et = hal.EtherTypeIPv6
	}
	wantAttr(t, f.opts, flowerEthType, be16(et), what+": eth_type")
	wantAttr(t, f.opts, flowerIPProto, []byte{hal.ProtoUDP}, what+": ip_proto")
	wantAttr(t, f.opts, flowerUDPDst, be16(port), what+": udp dst")
	wantAttr(t, f.opts, flowerUDPDstMask, be16(0xffff), what+": udp dst mask")
	if got := binary.NativeEndian.Uint32(f.opts[flowerFlags]); got != clsFlagsSkipHW {
		t.Errorf("%s: flags %#x, want the NIC's (skip_hw)", what, got)
	}
}

func gactControl(f *sentFilter) int32 {
	if len(f.actOpts) != 1 || len(f.actOpts[0][gactParms]) != 20 {
		return -100
	}
	return int32(binary.NativeEndian.Uint32(f.actOpts[0][gactParms][8:]))
}

func TestTunnelEndpointFilters(t *testing.T) {
	k := &fakeKernel{}
	n, groups := fakeEndpointNIC(t, k)
	ctx := context.Background()
	ep := hal.TunnelEndpoint{Port: 3, Addrs: []netip.Addr{epPA, epPA6}, Groups: []netip.Addr{epGrp}}
	if err := n.SetTunnelEndpoint(ctx, ep); err != nil {
		t.Fatal(err)
	}
	sent := k.allSent()
	fs := decodeSent(t, sent)
	// 2 ports × (2 addresses + 1 group) accepts, 2 ports × 2 families drops,
	// in one batch, the accepts first.
	if len(fs) != 10 || len(sent) != 10 {
		t.Fatalf("%d filters in %d messages, want 10", len(fs), len(sent))
	}
	for i, m := range sent {
		if (m.Header.Flags&netlink.Acknowledge != 0) != (i == len(sent)-1) || m.Header.Flags&(netlink.Create|netlink.Excl) != netlink.Create|netlink.Excl {
			t.Errorf("message %d: flags %v, want create|excl, ack on the last only", i, m.Header.Flags)
		}
	}
	mac := hal.MustMAC("02:4e:50:00:00:a1")
	accepts, drops := 0, 0
	handles := map[uint32]bool{}
	for i, f := range fs {
		if f.chain != 0 {
			t.Errorf("filter %d in chain %d, want 0 (ahead of every rule)", i, f.chain)
		}
		if f.handle>>endpointHandleBits != 3 || handles[uint32(f.prio)<<24|f.handle] {
			t.Errorf("filter %d: handle %#x, want a unique one in port slot 3", i, f.handle)
		}
		handles[uint32(f.prio)<<24|f.handle] = true
		switch f.prio {
		case prioEndpointAccept:
			if drops > 0 {
				t.Errorf("accept filter %d after a drop filter", i)
			}
			accepts++
			if c := gactControl(&f); c != tcActOK {
				t.Errorf("accept filter %d: gact %d, want ok", i, c)
			}
			port := uint16(4789)
			if accepts > 3 {
				port = 6081
			}
			switch (accepts - 1) % 3 {
			case 0:
				checkUDPKeys(t, &f, false, port, "accept 198.19.0.1")
				wantAttr(t, f.opts, flowerIPv4Dst, []byte{198, 19, 0, 1}, "accept: dst")
				wantAttr(t, f.opts, flowerIPv4DstMask, []byte{255, 255, 255, 255}, "accept: dst mask")
				wantAttr(t, f.opts, flowerEthDst, mac[:], "accept: the port's MAC")
			case 1:
				checkUDPKeys(t, &f, true, port, "accept 2001:db8:ff::1")
				b := epPA6.As16()
				wantAttr(t, f.opts, flowerIPv6Dst, b[:], "accept: dst")
				wantAttr(t, f.opts, flowerEthDst, mac[:], "accept: the port's MAC")
			case 2:
				checkUDPKeys(t, &f, false, port, "accept group")
				wantAttr(t, f.opts, flowerIPv4Dst, []byte{233, 252, 0, 11}, "accept group: dst")
				wantAttr(t, f.opts, flowerEthDst, []byte{0x01, 0x00, 0x5e, 0x7c, 0x00, 0x0b}, "accept group: the group's MAC")
			}
			wantAttr(t, f.opts, flowerEthDstMask, onesMAC[:], "accept: MAC mask")
		case prioEndpointDrop:
			drops++
			if c := gactControl(&f); c != tcActShot {
				t.Errorf("drop filter %d: gact %d, want shot", i, c)
			}
			checkUDPKeys(t, &f, drops%2 == 0, []uint16{4789, 4789, 6081, 6081}[drops-1], "drop")
			for _, a := range []uint16{flowerIPv4Dst, flowerIPv6Dst, flowerEthDst} {
				if _, ok := f.opts[a]; ok {
					t.Errorf("drop filter %d matches attribute %d; it takes every address", i, a)
				}
			}
		default:
			t.Errorf("filter %d at priority %d", i, f.prio)
		}
	}
	if !(prioSealed < prioEndpointAccept && prioEndpointAccept < prioEndpointDrop && prioEndpointDrop < prioHead) {
		t.Errorf("chain 0 priorities sealed %d, accept %d, drop %d, head %d: want them in that order", prioSealed, prioEndpointAccept, prioEndpointDrop, prioHead)
	}
	if got := groups.held(); !slices.Equal(got, []netip.Addr{epGrp}) {
		t.Errorf("groups held %v, want %v", got, epGrp)
	}

	// Replace: the address that stays keeps its filters, the new one's
	// land before the old ones go; the drops stay; the group is left.
	k.reset()
	newPA := netip.MustParseAddr("198.19.0.9")
	if err := n.SetTunnelEndpoint(ctx, hal.TunnelEndpoint{Port: 3, Addrs: []netip.Addr{epPA, newPA}}); err != nil {
		t.Fatal(err)
	}
	sent = k.allSent()
	var added, removed []uint32
	sawDelete := false
	for _, m := range sent {
		tm, err := parseTcmsg(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		prio := uint16(tm.Info >> 16)
		switch m.Header.Type {
		case rtmNewFilter:
			if sawDelete {
				t.Errorf("an add after a delete: the new accept filters must land first")
			}
			added = append(added, tm.Handle)
			if prio != prioEndpointAccept {
				t.Errorf("replace added a filter at priority %d", prio)
			}
		case rtmDelFilter:
			sawDelete = true
			removed = append(removed, tm.Handle)
			if prio != prioEndpointAccept {
				t.Errorf("replace removed a filter at priority %d", prio)
			}
		}
	}
	if len(added) != 2 || len(removed) != 4 {
		t.Errorf("replace added %d and removed %d filters, want 2 (198.19.0.9 on both ports) and 4 (the IPv6 address and the group)", len(added), len(removed))
	}
	for _, h := range added {
		if slices.Contains(removed, h) {
			t.Errorf("handle %#x removed and added in one replace", h)
		}
	}
	if got := groups.held(); len(got) != 0 {
		t.Errorf("groups still held after the replace: %v", got)
	}

	// Remove: every filter goes.
	k.reset()
	if err := n.SetTunnelEndpoint(ctx, hal.TunnelEndpoint{Port: 3}); err != nil {
		t.Fatal(err)
	}
	dels := 0
	for _, m := range k.allSent() {
		if m.Header.Type == rtmDelFilter {
			dels++
		}
	}
	if dels != 4+4 {
		t.Errorf("removing the endpoint deleted %d filters, want 8 (4 accepts, 4 drops)", dels)
	}
	if len(n.endpoints) != 0 {
		t.Errorf("endpoints left: %v", n.endpoints)
	}
}

func TestTunnelEndpointRefusals(t *testing.T) {
	k := &fakeKernel{}
	n, groups := fakeEndpointNIC(t, k)
	ctx := context.Background()
	for _, c := range []struct {
		name string
		ep   hal.TunnelEndpoint
		is   error
	}{
		{"unknown port", hal.TunnelEndpoint{Port: 9, Addrs: []netip.Addr{epPA}}, hal.ErrNotFound},
		{"a vport", hal.TunnelEndpoint{Port: 1, Addrs: []netip.Addr{epPA}}, hal.ErrNotSupported},
		{"a group as an address", hal.TunnelEndpoint{Port: 3, Addrs: []netip.Addr{epGrp}}, nil},
		{"an address as a group", hal.TunnelEndpoint{Port: 3, Addrs: []netip.Addr{epPA}, Groups: []netip.Addr{epPA}}, nil},
		{"a group MAC", hal.TunnelEndpoint{Port: 3, MAC: hal.MustMAC("01:00:5e:00:00:01"), Addrs: []netip.Addr{epPA}}, nil},
		{"an IPv4-mapped address", hal.TunnelEndpoint{Port: 3, Addrs: []netip.Addr{netip.AddrFrom16(epPA.As16())}}, nil},
	} {
		err := n.SetTunnelEndpoint(ctx, c.ep)
		if err == nil || (c.is != nil && !errors.Is(err, c.is)) {
			t.Errorf("%s: %v, want an error (%v)", c.name, err, c.is)
		}
	}
	if sent := k.allSent(); len(sent) != 0 {
		t.Errorf("refused endpoints sent %d messages", len(sent))
	}
	// The kernel refuses a filter: nothing is left behind, groups included.
	k.refuse = func(m netlink.Message) (int32, string) {
		if m.Header.Type != rtmNewFilter {
			return 0, ""
		}
		tm, _ := parseTcmsg(m.Data)
		if uint16(tm.Info>>16) == prioEndpointDrop {
			return errnoEINVAL, "refused by the test"
		}
		return 0, ""
	}
	err := n.SetTunnelEndpoint(ctx, hal.TunnelEndpoint{Port: 3, Addrs: []netip.Addr{epPA}, Groups: []netip.Addr{epGrp}})
	var ke *KernelError
	if !errors.As(err, &ke) {
		t.Fatalf("a refused filter: %v, want the kernel's error", err)
	}
	var adds, dels int
	for _, m := range k.allSent() {
		switch m.Header.Type {
		case rtmNewFilter:
			adds++
		case rtmDelFilter:
			dels++
		}
	}
	// 4 accepts land (2 ports × address and group), 4 drops are refused,
	// the 4 accepts are removed.
	if adds != 8 || dels != 4 || len(n.endpoints) != 0 || len(groups.held()) != 0 {
		t.Errorf("after a refusal: %d adds, %d deletes, endpoints %v, groups %v; want 8, 4, none, none", adds, dels, n.endpoints, groups.held())
	}
	k.refuse = nil
	groups.fail = errors.New("join refused by the test")
	k.reset()
	if err := n.SetTunnelEndpoint(ctx, hal.TunnelEndpoint{Port: 3, Addrs: []netip.Addr{epPA}, Groups: []netip.Addr{epGrp}}); err == nil || len(k.allSent()) != 0 {
		t.Errorf("a failed join: %v, %d messages; want an error and nothing programmed", err, len(k.allSent()))
	}

	n.caps.TunnelFilter = false
	if err := n.SetTunnelEndpoint(ctx, hal.TunnelEndpoint{Port: 3, Addrs: []netip.Addr{epPA}}); !errors.Is(err, hal.ErrNotSupported) {
		t.Errorf("without the capability: %v, want ErrNotSupported", err)
	}
	n.caps.TunnelFilter = true
	n.closed = true
	if err := n.SetTunnelEndpoint(ctx, hal.TunnelEndpoint{Port: 3, Addrs: []netip.Addr{epPA}}); !errors.Is(err, hal.ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
	n.closed = false
}

package tcflower

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sort"

	"github.com/mdlayher/netlink"

	"github.com/nicpath/nicpath/hal"
)

var _ hal.TunnelTerminator = (*NIC)(nil)

// The tunnel endpoint (hal.TunnelTerminator).
//
// The uplink is a real kernel interface, and the kernel keeps some foreign
// tunnelled frames from its tunnel devices by itself: a frame for another
// station's MAC (PACKET_OTHERHOST; a veth, or a NIC in promiscuous mode,
// delivers it) and one for an address that is not local never reach the
// UDP socket of a VXLAN or Geneve device. But a frame for the subnet's
// broadcast, or for a multicast group anything on the host joined, does:
// the device decapsulates it, and a decap rule that does not match the
// outer destination delivers it. A frame for our address with a broadcast
// or multicast MAC does too. And every one of them meets the rules of the
// uplink's ingress first, and is forwarded by the kernel when the
// namespace forwards. So the driver filters at the head of chain 0, before
// any rule, on the uplink's ingress (indev), for UDP to the tunnel devices'
// ports:
//
//	chain 0, prio 1  sealed-address frames: drop (every port)
//	chain 0, prio 2  accept: dst_ip one of Addrs and dst_mac the endpoint's,
//	                 or dst_ip one of Groups and dst_mac the group's:
//	                 gact ok, into the kernel's stack, past the rules (a
//	                 tunnelled frame is matched by decap rules on the tunnel
//	                 device, after the kernel removed the outer headers)
//	chain 0, prio 3  drop: the rest of the UDP to the tunnel ports (IPv4 and
//	                 IPv6): gact shot, counted as ReasonNotLocal
//	chain 0, prio 4  jump to the rules
//
// flower's EtherType is the one after any VLAN tags (the flow dissector
// walks two), so tagged frames are filtered alike. A later IP fragment
// carries no UDP header: the exception path hands it to the host (reason
// fragment), and the first fragment, whose ports flower does not dissect,
// is a miss too; neither reaches the tunnel devices. The groups are joined
// on the uplink (a UDP socket per group holds the membership while the
// endpoint is set), so that the kernel takes their frames at all.

// Chain 0 priorities: the endpoint's filters sit between the sealed-frame
// drop (prioSealed) and the jump to the rules (prioHead).
const (
	prioEndpointAccept = 2
	prioEndpointDrop   = 3
)

// endpointHandleBits: an endpoint filter's handle is the port's slot in the
// high 16 bits and an index below.
const endpointHandleBits = 16

// acceptKey names one accept filter: a tunnel port, an outer destination
// and the outer destination MAC it takes.
type acceptKey struct {
	port uint16
	dst  netip.Addr
	mac  hal.MAC
}

// endpointState is one uplink's endpoint as the kernel holds it.
type endpointState struct {
	ep      hal.TunnelEndpoint
	slot    uint16
	accepts map[acceptKey]uint32 // accept filters by what they take → handle
	drops   []uint32             // handles of the drop filters
	groups  io.Closer            // the group memberships; nil when none
}

// groupJoiner joins multicast groups on an interface; closing what it
// returns leaves them.
type groupJoiner interface {
	joinGroups(ifindex uint32, groups []netip.Addr) (io.Closer, error)
}

// groupMAC is the Ethernet address a multicast group's frames are sent to
// (RFC 1112, RFC 2464).
func groupMAC(g netip.Addr) hal.MAC {
	if g.Is4() {
		a := g.As4()
		return hal.MAC{0x01, 0x00, 0x5e, a[1] & 0x7f, a[2], a[3]}
	}
	b := g.As16()
	return hal.MAC{0x33, 0x33, b[12], b[13], b[14], b[15]}
}

func (n *NIC) portSlot(id hal.PortID) uint16 {
	for i, p := range n.ports {
		if p.ID == id {
			return uint16(i + 1)
		}
	}
	return 0
}

// checkEndpoint says what is wrong with ep, if anything, and fills in the
// port's MAC when ep has none.
func (n *NIC) checkEndpoint(ep *hal.TunnelEndpoint) (*device, error) {
	d := n.lay.ports[ep.Port]
	if d == nil {
		return nil, fmt.Errorf("tcflower: tunnel endpoint: port %d: %w", ep.Port, hal.ErrNotFound)
	}
	if d.Kind != hal.PortUplink {
		return nil, fmt.Errorf("tcflower: tunnel endpoint: port %d (%s) is a vport; tunnels end on an uplink: %w", ep.Port, d.Name, hal.ErrNotSupported)
	}
	if ep.MAC.IsZero() {
		ep.MAC = d.MAC
	}
	if ep.MAC[0]&1 != 0 {
		return nil, fmt.Errorf("tcflower: tunnel endpoint: MAC %s is a group address, not a station's", ep.MAC)
	}
	for _, a := range ep.Addrs {
		if !a.IsValid() || a.Is4In6() || a.Zone() != "" || a.IsMulticast() || a.IsUnspecified() {
			return nil, fmt.Errorf("tcflower: tunnel endpoint: %v is not a unicast provider address", a)
		}
	}
	for _, g := range ep.Groups {
		if !g.IsValid() || g.Is4In6() || g.Zone() != "" || !g.IsMulticast() {
			return nil, fmt.Errorf("tcflower: tunnel endpoint: %v is not a multicast group", g)
		}
	}
	return d, nil
}

func udpDstKeys(e *netlink.AttributeEncoder, indev string, v6 bool, port uint16) {
	e.String(flowerIndev, indev)
	if v6 {
		e.Bytes(flowerEthType, be16(hal.EtherTypeIPv6))
	} else {
		e.Bytes(flowerEthType, be16(hal.EtherTypeIPv4))
	}
	e.Uint8(flowerIPProto, hal.ProtoUDP)
	e.Bytes(flowerUDPDst, be16(port))
	e.Bytes(flowerUDPDstMask, be16(0xffff))
}

var onesMAC = hal.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// acceptFilter is the filter that lets frames of k into the kernel's stack.
func (n *NIC) acceptFilter(d *device, k acceptKey, handle uint32) *filterSpec {
	e := netlink.NewAttributeEncoder()
	v6 := k.dst.Is6()
	udpDstKeys(e, d.Name, v6, k.port)
	if v6 {
		ipAttr(e, k.dst.As16(), ones16, true, flowerIPv6Dst, flowerIPv6DstMask)
	} else {
		ipAttr(e, k.dst.As16(), ones16, false, flowerIPv4Dst, flowerIPv4DstMask)
	}
	e.Bytes(flowerEthDst, k.mac[:])
	e.Bytes(flowerEthDstMask, onesMAC[:])
	keys, _ := e.Encode()
	return &filterSpec{Chain: 0, Prio: prioEndpointAccept, Handle: handle, Flags: n.flags, Keys: keys, Actions: []tcAction{gactAction(tcActOK)}}
}

// dropFilters drop what the accept filters did not take of the UDP to the
// tunnel ports on d: one filter per port and family.
func (n *NIC) dropFilters(d *device, slot uint16) []*filterSpec {
	var fs []*filterSpec
	h := uint32(slot) << endpointHandleBits
	for _, port := range n.tunPorts {
		for _, v6 := range []bool{false, true} {
			e := netlink.NewAttributeEncoder()
			udpDstKeys(e, d.Name, v6, port)
			keys, _ := e.Encode()
			h++
			fs = append(fs, &filterSpec{Chain: 0, Prio: prioEndpointDrop, Handle: h, Flags: n.flags, Keys: keys, Actions: []tcAction{gactAction(tcActShot)}})
		}
	}
	return fs
}

var ones16 = [16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// acceptKeys lists what ep accepts, one key per tunnel port, destination
// and MAC.
func (n *NIC) acceptKeys(ep *hal.TunnelEndpoint) []acceptKey {
	var ks []acceptKey
	for _, port := range n.tunPorts {
		for _, a := range ep.Addrs {
			ks = append(ks, acceptKey{port, a, ep.MAC})
		}
		for _, g := range ep.Groups {
			ks = append(ks, acceptKey{port, g, groupMAC(g)})
		}
	}
	return ks
}

// SetTunnelEndpoint makes the uplink ep.Port accept tunnelled frames only
// for ep (see hal.TunnelTerminator and the comment above): the filters are
// programmed ahead of every rule, the groups joined on the uplink.
// Setting it again replaces it: the new accept filters land before the old
// ones go, so a frame for an address in both is never dropped. An endpoint
// without Addrs removes the filters and leaves the groups.
func (n *NIC) SetTunnelEndpoint(ctx context.Context, ep hal.TunnelEndpoint) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return hal.ErrClosed
	}
	if !n.caps.TunnelFilter {
		return unsupported("tunnel endpoint", "the NIC decapsulates nothing (no tunnel device in Config.Tunnels): the kernel's own tunnel devices, if any, are not the driver's to filter")
	}
	ep.Addrs = append([]netip.Addr(nil), ep.Addrs...)
	ep.Groups = append([]netip.Addr(nil), ep.Groups...)
	d, err := n.checkEndpoint(&ep)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	old := n.endpoints[ep.Port]
	if len(ep.Addrs) == 0 {
		if old == nil {
			return nil
		}
		return n.removeEndpoint(old)
	}
	st := &endpointState{ep: ep, slot: n.portSlot(ep.Port), accepts: map[acceptKey]uint32{}}
	var add []*filterSpec
	used := map[uint32]bool{}
	if old != nil {
		for _, h := range old.accepts {
			used[h] = true
		}
	}
	next := uint32(st.slot)<<endpointHandleBits | 1
	for _, k := range n.acceptKeys(&ep) {
		if _, dup := st.accepts[k]; dup {
			continue
		}
		if old != nil {
			if h, ok := old.accepts[k]; ok {
				st.accepts[k] = h // already there
				continue
			}
		}
		for used[next] {
			next++
		}
		if next>>endpointHandleBits != uint32(st.slot) {
			return unsupported("tunnel endpoint", "too many addresses and groups for one uplink")
		}
		used[next] = true
		st.accepts[k] = next
		add = append(add, n.acceptFilter(d, k, next))
	}
	if old == nil {
		drops := n.dropFilters(d, st.slot)
		for _, f := range drops {
			st.drops = append(st.drops, f.Handle)
		}
		// The accept filters first: a frame for this endpoint is never
		// dropped while the filters land.
		add = append(add, drops...)
	} else {
		st.drops = old.drops
	}
	if len(ep.Groups) > 0 && n.groups != nil {
		if st.groups, err = n.groups.joinGroups(d.Ifindex, ep.Groups); err != nil {
			return fmt.Errorf("tcflower: tunnel endpoint: joining %v on %s: %w", ep.Groups, d.Name, err)
		}
	}
	if err := n.addFilters(add, func(f *filterSpec, err error) error {
		return opError(fmt.Sprintf("tunnel endpoint filter %#x (prio %d)", f.Handle, f.Prio), 0, err)
	}); err != nil {
		if st.groups != nil {
			st.groups.Close()
		}
		return err
	}
	// What the new endpoint no longer accepts goes; then the old groups.
	var del []filterID
	if old != nil {
		for k, h := range old.accepts {
			if _, keep := st.accepts[k]; !keep {
				del = append(del, filterID{0, prioEndpointAccept, h})
			}
		}
	}
	n.endpoints[ep.Port] = st
	n.publishEndpoints()
	errDel := n.delFilters(del)
	if old != nil && old.groups != nil {
		errDel = errors.Join(errDel, old.groups.Close())
	}
	return errDel
}

// epTarget is where a tunnelled miss for one outer destination comes from:
// the uplink whose endpoint holds the address, and the outer destination
// MAC that endpoint accepts for it.
type epTarget struct {
	port hal.PortID
	mac  hal.MAC
}

// publishEndpoints makes the endpoints' addresses what decodeTunnelMiss
// reads. It runs under mu; the reader takes no lock (Close holds mu while
// it waits for the reader to leave).
func (n *NIC) publishEndpoints() {
	ids := make([]hal.PortID, 0, len(n.endpoints))
	for id := range n.endpoints {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] > ids[j] })
	m := map[netip.Addr]epTarget{}
	for _, id := range ids { // the lowest port ID wins an address two hold
		ep := &n.endpoints[id].ep
		for _, a := range ep.Addrs {
			m[a] = epTarget{id, ep.MAC}
		}
		for _, g := range ep.Groups {
			m[g] = epTarget{id, groupMAC(g)}
		}
	}
	n.epAddrs.Store(&m)
}

// addFilters creates fs in one batch; when one fails, the ones that landed
// are removed again, and the first failure is returned as fail makes it of
// the filter and the kernel's error.
func (n *NIC) addFilters(fs []*filterSpec, fail func(f *filterSpec, err error) error) error {
	if len(fs) == 0 {
		return nil
	}
	msgs := make([]netlink.Message, 0, len(fs))
	for _, f := range fs {
		m, err := n.filterMsg(f, netlink.Create|netlink.Excl)
		if err != nil {
			return err
		}
		msgs = append(msgs, m)
	}
	var failed error
	var landed []filterID
	for i, err := range n.sendBatch(msgs) {
		if err != nil {
			if failed == nil {
				failed = fail(fs[i], err)
			}
			continue
		}
		landed = append(landed, filterID{fs[i].Chain, fs[i].Prio, fs[i].Handle})
	}
	if failed != nil {
		_ = n.delFilters(landed)
	}
	return failed
}

func (n *NIC) delFilters(ids []filterID) error {
	if len(ids) == 0 {
		return nil
	}
	msgs := make([]netlink.Message, len(ids))
	for i, id := range ids {
		msgs[i] = n.delFilterMsg(id.chain, id.prio, id.handle)
	}
	var errs []error
	for i, err := range n.sendBatch(msgs) {
		if err != nil {
			errs = append(errs, opError(fmt.Sprintf("remove tunnel endpoint filter %#x (prio %d)", ids[i].handle, ids[i].prio), 0, err))
		}
	}
	return errors.Join(errs...)
}

// removeEndpoint deletes st's filters (the drops first: from then on the
// kernel decides, as without an endpoint) and leaves its groups.
func (n *NIC) removeEndpoint(st *endpointState) error {
	var ids []filterID
	for _, h := range st.drops {
		ids = append(ids, filterID{0, prioEndpointDrop, h})
	}
	hs := make([]uint32, 0, len(st.accepts))
	for _, h := range st.accepts {
		hs = append(hs, h)
	}
	sort.Slice(hs, func(i, j int) bool { return hs[i] < hs[j] })
	for _, h := range hs {
		ids = append(ids, filterID{0, prioEndpointAccept, h})
	}
	delete(n.endpoints, st.ep.Port)
	n.publishEndpoints()
	// The drop filters' counts outlive them: Stats only grows.
	if err := n.dumpChain(0, func(f *dumpedFilter) error {
		if f.Prio == prioEndpointDrop && uint16(f.Handle>>endpointHandleBits) == st.slot {
			n.retiredNotLocal[st.ep.Port] += f.Packets
		}
		return nil
	}); err != nil {
		return err
	}
	err := n.delFilters(ids)
	if st.groups != nil {
		err = errors.Join(err, st.groups.Close())
	}
	return err
}

// notLocalDrops reads the drop filters' counters: frames dropped as not
// local, by port ID.
func (n *NIC) notLocalDrops() (map[hal.PortID]uint64, error) {
	out := map[hal.PortID]uint64{}
	for id, c := range n.retiredNotLocal {
		out[id] = c
	}
	if len(n.endpoints) == 0 {
		return out, nil
	}
	bySlot := map[uint16]hal.PortID{}
	for id, st := range n.endpoints {
		bySlot[st.slot] = id
	}
	err := n.dumpChain(0, func(f *dumpedFilter) error {
		if f.Prio != prioEndpointDrop {
			return nil
		}
		if id, ok := bySlot[uint16(f.Handle>>endpointHandleBits)]; ok {
			out[id] += f.Packets
		}
		return nil
	})
	return out, err
}

// closeEndpoints leaves every endpoint's groups (Close; the filters go with
// the block).
func (n *NIC) closeEndpoints() error {
	var errs []error
	for id, st := range n.endpoints {
		if st.groups != nil {
			errs = append(errs, st.groups.Close())
		}
		delete(n.endpoints, id)
	}
	n.publishEndpoints()
	return errors.Join(errs...)
}

package tcflower

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/mdlayher/netlink"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// The exception path.
//
// Open creates a veth pair in the ports' namespace: the channel. Frames for
// the host leave the block by mirred egress redirect to the channel's send
// end and come out of its receive end, where the driver reads them with an
// AF_PACKET socket. Two 802.1Q tags pushed in front of the frame (act_vlan)
// say where it came from and why:
//
//	dst src | 8100 port tag | 8100 reason tag | the frame as it arrived, from its EtherType (or its own tags) on
//
// The port tag's VID is the in-port's slot (its position in Ports, from 1).
// The reason tag's TCI (VID plus priority bits, 15 bits in all) is a hal.Reason
// below firstHostSlot for the exceptions the driver's own filters make (miss,
// fragment) and, from firstHostSlot up, the slot of a ToHost rule, which
// names the rule and its reason.
//
// Misses: the chain where a packet that no rule took ends up (chain 0 while
// there are no scopes, and the tail of every generation chain of the last
// scope) jumps to missChain, which holds one catch-all per port (indev): push
// the reason tag, push the port tag, redirect. Before them, per port,
// non-first IP fragments get reason fragment (flower cannot see their ports),
// and on uplinks the frames the kernel itself must receive pass into its
// stack: UDP to the tunnel devices' ports (the kernel decapsulates them, and
// decap rules match them on the tunnel device) and ARP and IPv6 neighbour
// discovery (the tunnel devices resolve next hops through the kernel's
// neighbour table).
//
// ToHost: the rule pushes the reason tag carrying its slot and jumps to
// hostChain, which holds one filter per port: push the port tag, redirect.
// The extra jump fits the kernel's budget (see maxScopes): at most 15 jumps
// reach the last scope's generation chain, and the kernel allows 16.

// Structural chains of the exception path, apart from the rules' chains
// (allocated from 1 up): probeChain is 0x0ffffffe.
const (
	missChainIndex = 0x0ffffffc
	hostChainIndex = 0x0ffffffd
)

// Priorities in missChain: passes, then fragments, then the catch-alls,
// then the tunnel devices' catch-alls.
const (
	prioExcPass   = 1
	prioExcFrag   = 2
	prioExcMiss   = 3
	prioExcTunnel = 4
	prioHost      = 1      // hostChain's per-port filters
	prioCatch     = 0xffff // chain 0: to missChain when no scope exists
)

// firstHostSlot is the first reason-tag value that names a ToHost rule;
// smaller values are hal.Reasons.
const firstHostSlot = 16

// maxHostSlot is the last reason-tag value: act_vlan pushes VIDs 0..4094
// and 3 priority bits, so a tag carries 8×4095 values.
const maxHostSlot = 8*4095 - 1

// channelMTU is the channel's MTU: the largest a veth takes, so that no
// frame a port received is too large once tagged.
const channelMTU = 65535

// excBufLen is the reader's scratch buffer: a frame of the channel's MTU,
// its Ethernet header and two tags.
const excBufLen = channelMTU + 14 + 8

// excPoll bounds how long one receive blocks, so that ReadExceptions sees
// its context end and Close promptly.
const excPoll = 20 // milliseconds

// tagValue splits a 15-bit reason-tag value into act_vlan's VID and
// priority.
func tagValue(v uint16) (vid uint16, prio uint8) { return v % 4095, uint8(v / 4095) }

// tagFromTCI is the inverse of tagValue.
func tagFromTCI(tci uint16) uint16 { return uint16(tci>>13)*4095 + tci&0x0fff }

// excReader is the channel's receive end.
type excReader interface {
	// recv receives one frame into buf, blocking up to the poll interval
	// when wait is set; it returns errNoFrame when none came. partial says
	// that the sender left the frame's transport checksum to the device
	// (the field holds the pseudo-header's sum).
	recv(buf []byte, wait bool) (f []byte, partial bool, err error)
	close() error
}

// errNoFrame is an excReader's "nothing within the poll interval".
var errNoFrame = errors.New("tcflower: no exception frame")

// hostSlot is what a reason tag names: a rule that hands frames to the
// host and its reason.
type hostSlot struct {
	rule   hal.RuleID
	reason hal.Reason
}

// slotKey names a rule's use of a tag: its ToHost action, or the TTL check
// of its DecTTL.
type slotKey struct {
	rule hal.RuleID
	ttl  bool
}

// hostSlots hands out reason-tag values to rules. Freed values are reused
// oldest first, so that a frame still queued for a deleted rule is unlikely
// to be credited to a new one.
type hostSlots struct {
	mu     sync.Mutex
	byRule map[slotKey]uint16
	slots  map[uint16]hostSlot
	free   []uint16
	next   uint16
}

func (s *hostSlots) get(key slotKey, reason hal.Reason) (uint16, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.byRule[key]; ok {
		s.slots[v] = hostSlot{key.rule, reason}
		return v, nil
	}
	if s.byRule == nil {
		s.byRule, s.slots, s.next = map[slotKey]uint16{}, map[uint16]hostSlot{}, firstHostSlot
	}
	var v uint16
	switch {
	case len(s.free) > 0:
		v = s.free[0]
		s.free = s.free[1:]
	case s.next <= maxHostSlot:
		v = s.next
		s.next++
	default:
		return 0, unsupported("to_host", "the exception channel tells %d to_host rules apart (two VLAN tags); all are taken", maxHostSlot-firstHostSlot+1)
	}
	s.byRule[key] = v
	s.slots[v] = hostSlot{key.rule, reason}
	return v, nil
}

// keep frees rule id's tags but the ones it still uses.
func (s *hostSlots) keep(id hal.RuleID, toHost, ttl bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range []slotKey{{id, false}, {id, true}} {
		if (k.ttl && ttl) || (!k.ttl && toHost) {
			continue
		}
		if v, ok := s.byRule[k]; ok {
			delete(s.byRule, k)
			delete(s.slots, v)
			s.free = append(s.free, v)
		}
	}
}

func (s *hostSlots) lookup(v uint16) (hostSlot, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.slots[v]
	return h, ok
}

// excFilter says what one structural filter of the exception path counts.
type excFilter struct {
	port   hal.PortID
	reason hal.Reason
}

// exceptionPath is the NIC's side of the channel.
type exceptionPath struct {
	txIfindex uint32 // the channel's send end, the redirects' target
	txName    string
	rxName    string
	reader    excReader
	// counted maps the structural filters (chain, prio, handle) that hand
	// frames to the host onto the port and reason they count.
	counted map[filterID]excFilter
	// tunnel says that tunnelled misses reach the host (the BPF action
	// was loaded and the kernel took its filters); close releases the
	// program.
	tunnel      bool
	closeTunnel func() error
}

type filterID struct {
	chain  uint32
	prio   uint16
	handle uint32
}

// vlanPushTCI is act_vlan push of an 802.1Q tag with priority bits.
func vlanPushTCI(vid uint16, prio uint8) tcAction {
	a := vlanPush(vid)
	if prio == 0 {
		return a
	}
	p := append(tcGen(tcActPipe), 0, 0, 0, 0)
	binary.NativeEndian.PutUint32(p[20:], vlanActPush)
	return tcAction{Kind: "vlan", Opts: nestedOpts(func(e *netlink.AttributeEncoder) {
		e.Bytes(vlanParms, p)
		e.Uint16(vlanPushID, vid)
		e.Bytes(vlanPushProto, be16(0x8100))
		e.Uint8(vlanPushPrio, prio)
	})}
}

// toChannel is the action list that tags a frame from port slot ps with
// reason-tag value reason and hands it to the channel.
func toChannel(reason, ps uint16, txIfindex uint32) []tcAction {
	vid, prio := tagValue(reason)
	return []tcAction{vlanPushTCI(vid, prio), vlanPush(ps), mirredRedirect(txIfindex)}
}

// firstUplink is the first uplink in Ports; 0 when there is none.
func (n *NIC) firstUplink() hal.PortID {
	for _, p := range n.ports {
		if p.Kind == hal.PortUplink {
			return p.ID
		}
	}
	return 0
}

// exceptionFilters are the structural filters of the exception path: the
// catch-all of chain 0, missChain and hostChain. tunnelPorts are the UDP
// ports of the tunnel devices, which uplinks pass to the kernel.
func (n *NIC) exceptionFilters(txIfindex uint32, tunnelPorts []uint16) ([]*filterSpec, map[filterID]excFilter) {
	var fs []*filterSpec
	counted := map[filterID]excFilter{}
	add := func(f *filterSpec, port hal.PortID, reason hal.Reason) {
		f.Flags = n.flags
		fs = append(fs, f)
		if reason != hal.ReasonNone {
			counted[filterID{f.Chain, f.Prio, f.Handle}] = excFilter{port, reason}
		}
	}
	keys := func(fn func(e *netlink.AttributeEncoder)) []byte {
		e := netlink.NewAttributeEncoder()
		fn(e)
		b, _ := e.Encode()
		return b
	}
	for i, p := range n.ports {
		ps := uint16(i + 1)
		d := n.lay.ports[p.ID]
		// ToHost rules jump here with the reason tag pushed.
		add(&filterSpec{Chain: hostChainIndex, Prio: prioHost, Handle: uint32(ps),
			Keys:    keys(func(e *netlink.AttributeEncoder) { e.String(flowerIndev, d.Name) }),
			Actions: []tcAction{vlanPush(ps), mirredRedirect(txIfindex)}}, p.ID, hal.ReasonAction)
		// Misses.
		add(&filterSpec{Chain: missChainIndex, Prio: prioExcMiss, Handle: uint32(ps),
			Keys:    keys(func(e *netlink.AttributeEncoder) { e.String(flowerIndev, d.Name) }),
			Actions: toChannel(uint16(hal.ReasonMiss), ps, txIfindex)}, p.ID, hal.ReasonMiss)
		// Later fragments: no ports to key on.
		for j, et := range []uint16{hal.EtherTypeIPv4, hal.EtherTypeIPv6} {
			add(&filterSpec{Chain: missChainIndex, Prio: prioExcFrag, Handle: uint32(ps)<<1 | uint32(j),
				Keys: keys(func(e *netlink.AttributeEncoder) {
					e.String(flowerIndev, d.Name)
					e.Bytes(flowerEthType, be16(et))
					e.Bytes(flowerKeyFlags, be32(flowerFlagIsFragment))
					e.Bytes(flowerKeyFlagsMask, be32(flowerFlagIsFragment|flowerFlagFragIsFirst))
				}),
				Actions: toChannel(uint16(hal.ReasonFragment), ps, txIfindex)}, p.ID, hal.ReasonFragment)
		}
		if p.Kind != hal.PortUplink {
			continue
		}
		// What the kernel's own underlay needs passes into its stack.
		h := uint32(ps) << 8
		pass := func(fn func(e *netlink.AttributeEncoder)) {
			h++
			add(&filterSpec{Chain: missChainIndex, Prio: prioExcPass, Handle: h,
				Keys: keys(func(e *netlink.AttributeEncoder) {
					e.String(flowerIndev, d.Name)
					fn(e)
				}),
				Actions: []tcAction{gactAction(tcActOK)}}, p.ID, hal.ReasonNone)
		}
		pass(func(e *netlink.AttributeEncoder) { e.Bytes(flowerEthType, be16(hal.EtherTypeARP)) })
		for _, typ := range []uint8{135, 136} { // neighbour solicitation, advertisement
			pass(func(e *netlink.AttributeEncoder) {
				e.Bytes(flowerEthType, be16(hal.EtherTypeIPv6))
				e.Uint8(flowerIPProto, hal.ProtoICMPv6)
				e.Uint8(flowerICMPv6Type, typ)
				e.Uint8(flowerICMPv6TypeM, 0xff)
			})
		}
		for _, port := range tunnelPorts {
			for _, et := range []uint16{hal.EtherTypeIPv4, hal.EtherTypeIPv6} {
				pass(func(e *netlink.AttributeEncoder) {
					e.Bytes(flowerEthType, be16(et))
					e.Uint8(flowerIPProto, hal.ProtoUDP)
					e.Bytes(flowerUDPDst, be16(port))
					e.Bytes(flowerUDPDstMask, be16(0xffff))
				})
			}
		}
	}
	// With no scope yet, chain 0 ends here.
	add(&filterSpec{Chain: 0, Prio: prioCatch, Handle: structHandle, Actions: []tcAction{gotoChain(missChainIndex)}}, 0, hal.ReasonNone)
	return fs, counted
}

// installExceptionPath programs the exception path's filters around the
// channel whose send end is tx, and makes the NIC use it: misses and ToHost
// rules go to the host from now on.
func (n *NIC) installExceptionPath(tx *device, rxName string, tunnelPorts []uint16, r excReader) error {
	fs, counted := n.exceptionFilters(tx.Ifindex, tunnelPorts)
	msgs := make([]netlink.Message, 0, len(fs))
	for _, f := range fs {
		m, err := n.filterMsg(f, netlink.Create|netlink.Excl)
		if err != nil {
			return err
		}
		msgs = append(msgs, m)
	}
	for i, err := range n.sendBatch(msgs) {
		if err != nil {
			return opError(fmt.Sprintf("install the exception path (filter %d of chain %#x)", fs[i].Handle, fs[i].Chain), 0, err)
		}
	}
	n.exc = &exceptionPath{txIfindex: tx.Ifindex, txName: tx.Name, rxName: rxName, reader: r, counted: counted}
	n.lay.hostChain = hostChainIndex
	n.excBuf = make([]byte, excBufLen)
	n.caps.ExceptionPath = true
	n.caps.AddressLearning = true // from what the channel carries (learn.go)
	n.caps.Actions |= hal.ActionsOf(hal.ActionToHost)
	if n.caps.HasAction(hal.ActionSetIPSrc) {
		// pedit and csum are there, and the host takes expiring TTLs.
		n.caps.Actions |= hal.ActionsOf(hal.ActionDecTTL)
	}
	return nil
}

// ttlFilters are the filters of a DecTTL rule's own chain: a frame whose
// TTL (or hop limit) is 0 or 1 goes to the host with reason ttl, as it
// arrived; the others get the rule's actions. The rule's filter in its
// generation chain only jumps there, and keeps counting every frame it
// takes.
func (n *NIC) ttlFilters(chain uint32, c *compiled, tag uint16) []*filterSpec {
	e := netlink.NewAttributeEncoder()
	e.Uint8(flowerIPTTL, 0)
	e.Uint8(flowerIPTTLMask, 0xfe)
	ttl, _ := e.Encode()
	keys := append(append(make([]byte, 0, len(c.keys)+len(ttl)), c.keys...), ttl...)
	vid, prio := tagValue(tag)
	return []*filterSpec{
		{Chain: chain, Prio: 1, Handle: structHandle, Flags: n.flags, Keys: keys,
			Actions: []tcAction{vlanPushTCI(vid, prio), gotoChain(n.lay.hostChain)}},
		{Chain: chain, Prio: 2, Handle: structHandle, Flags: n.flags, Actions: c.actions},
	}
}

// encodeFlushChain is the payload of an RTM_DELTFILTER that removes every
// filter of one chain of the block (priority, protocol, handle and kind
// unset): the same message as a dump request of that chain.
func encodeFlushChain(block, chain uint32) ([]byte, error) {
	return encodeDumpRequest(block, chain)
}

func (n *NIC) flushChain(chain uint32) error {
	b, err := encodeFlushChain(n.block, chain)
	if err != nil {
		return err
	}
	return n.do(n.request(rtmDelFilter, 0, b))
}

// applyTTL adds or modifies a rule with DecTTL, or modifies one that had
// it, one message at a time: the rule's own chain is complete before its
// filter jumps there, and goes once nothing jumps there any more.
func (n *NIC) applyTTL(op string, in, old *installed, c *compiled) error {
	id := in.rule.ID
	spec := in.spec(c, n.flags)
	if c.ttl {
		v, err := n.hostSlots.get(slotKey{id, true}, hal.ReasonTTL)
		if err != nil {
			return err
		}
		in.ttlChain = n.allocChain()
		for _, f := range n.ttlFilters(in.ttlChain, c, v) {
			m, err := n.filterMsg(f, netlink.Create|netlink.Excl)
			if err == nil {
				err = n.do(m)
			}
			if err != nil {
				_ = n.flushChain(in.ttlChain)
				return opError(op, id, err)
			}
		}
		spec.Actions = []tcAction{gotoChain(in.ttlChain)}
	}
	flags := netlink.Create | netlink.Excl
	inPlace := old != nil && old.chain == in.chain && old.prio == in.prio
	if inPlace {
		in.handle, flags = old.handle, netlink.Replace
	} else {
		in.handle = n.nextHandle
		n.nextHandle++
	}
	spec.Handle = in.handle
	m, err := n.filterMsg(spec, flags)
	if err == nil {
		err = n.do(m)
	}
	if err != nil {
		if in.ttlChain != 0 {
			_ = n.flushChain(in.ttlChain)
		}
		return opError(op, id, err)
	}
	n.rules[id] = in
	if old == nil {
		return nil
	}
	if !inPlace {
		if err := n.do(n.delFilterMsg(old.chain, old.prio, old.handle)); err != nil {
			return opError("modify: remove the old filter", id, err)
		}
	}
	if old.ttlChain != 0 {
		if err := n.flushChain(old.ttlChain); err != nil {
			return opError("modify: remove the old TTL check", id, err)
		}
	}
	return nil
}

// tailTo is where a generation chain ends when the scope after its own is
// at index next of n.scopes: that scope's dispatch chain, or missChain after
// the last scope (0 without an exception path: the packet leaves the block).
func (n *NIC) tailTo(next int) uint32 {
	if next < len(n.scopes) {
		return n.scopes[next].dispatch
	}
	if n.exc != nil {
		return missChainIndex
	}
	return 0
}

// decodeException turns a frame from the channel into e: it takes off the
// two tags, fills InPort, Reason and Rule, and copies the frame as it
// arrived into e.Buf. It reports false for frames that are not the
// driver's (the channel's own link chatter).
func (n *NIC) decodeException(f []byte, partial bool, e *hal.Exception) bool {
	if len(f) < 14+8 || binary.BigEndian.Uint16(f[12:]) != hal.EtherTypeVLAN || binary.BigEndian.Uint16(f[16:]) != hal.EtherTypeVLAN {
		return false
	}
	ps := int(binary.BigEndian.Uint16(f[14:]) & 0x0fff)
	if ps == 0 && n.exc != nil && n.exc.tunnel {
		return n.decodeTunnelMiss(f, partial, e)
	}
	if ps < 1 || ps > len(n.ports) {
		return false
	}
	tag := tagFromTCI(binary.BigEndian.Uint16(f[18:]))
	e.InPort = n.ports[ps-1].ID
	e.VNI = 0
	e.Rule = 0
	if tag < firstHostSlot {
		e.Reason = hal.Reason(tag)
	} else {
		e.Reason = hal.ReasonAction
		if h, ok := n.hostSlots.lookup(tag); ok {
			e.Rule, e.Reason = h.rule, h.reason
		}
	}
	size := len(f) - 8
	k := copy(e.Buf, f[:12])
	if k == 12 {
		k += copy(e.Buf[12:], f[20:])
	}
	e.Len = k
	e.Truncated = k < size
	if partial && !e.Truncated {
		n.completePartial(e.Frame())
	}
	return true
}

// completePartial does for a frame whose sender left its transport
// checksum to the device (a VM's kernel with checksum offload, across a
// veth) what that device would have done on the wire: the one's complement
// sum of the transport header and payload, which the checksum field
// starts with the pseudo-header's, goes complemented into the field. The
// host gets the frame as a wire would carry it, and a frame it reinjects
// is right. The transport header is the innermost one the frame parses
// to: a VM that encapsulates itself leaves the inner checksum to the
// device and writes the outer one over it (local checksum offload). A
// frame that does not parse, or carries neither TCP nor UDP, is left as
// it is.
func (n *NIC) completePartial(f []byte) {
	// The reader's scratch (see innerHash): no allocation per frame.
	n.hashKey = hal.FlowKey{}
	l := &n.hashLay
	if err := wire.Parse(f, 0, &n.hashKey, l); err != nil || l.L4 < 0 || l.End > len(f) {
		return
	}
	var off int
	switch l.Proto {
	case hal.ProtoTCP:
		off = 16
	case hal.ProtoUDP:
		off = 6
	default:
		return
	}
	if l.L4+off+2 > l.End {
		return
	}
	c := wire.Checksum(f[l.L4:l.End], 0)
	if c == 0 {
		c = 0xffff // as the kernel's skb_checksum_help writes it
	}
	binary.BigEndian.PutUint16(f[l.L4+off:], c)
}

// ReadExceptions fills batch with the frames on the exception path: misses
// on the ports and frames of ToHost rules, each copied as it arrived into
// its caller-owned Buf (Truncated when Buf is shorter, Len then len(Buf)).
// It blocks until one frame is there, then takes the ones already queued
// without waiting. It returns ctx's error when ctx ends first and
// hal.ErrClosed once the NIC is closed.
func (n *NIC) ReadExceptions(ctx context.Context, batch []hal.Exception) (int, error) {
	if n.stopped.Load() {
		return 0, hal.ErrClosed
	}
	if n.exc == nil {
		return 0, unsupported("exception path", "the NIC has none (see Capabilities.Notes): misses continue to the kernel's own stack of the port")
	}
	n.readMu.Lock()
	defer n.readMu.Unlock()
	count := 0
	for count < len(batch) {
		if n.stopped.Load() {
			if count > 0 {
				return count, nil
			}
			return 0, hal.ErrClosed
		}
		wait := count == 0
		if wait {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
		}
		f, partial, err := n.exc.reader.recv(n.excBuf, wait)
		if errors.Is(err, errNoFrame) {
			if count > 0 {
				return count, nil
			}
			continue
		}
		if err != nil {
			if n.stopped.Load() && count == 0 {
				return 0, hal.ErrClosed
			}
			return count, &hal.OpError{Driver: driverName, Op: "read exceptions", Err: err}
		}
		if n.decodeException(f, partial, &batch[count]) {
			n.learnFrom(&batch[count], f)
			count++
		}
	}
	return count, nil
}

// exceptionCounts reads the structural filters' counters: frames handed to
// the host by reason and, for port (0: all), how many came from it.
func (n *NIC) exceptionCounts(port hal.PortID) (byReason [hal.NumReasons]uint64, fromPort uint64, err error) {
	if n.exc == nil {
		return byReason, 0, nil
	}
	for _, c := range []uint32{missChainIndex, hostChainIndex} {
		err = n.dumpChain(c, func(f *dumpedFilter) error {
			x, ok := n.exc.counted[filterID{c, f.Prio, f.Handle}]
			if !ok {
				return nil
			}
			if x.port == port {
				fromPort += f.Packets
			}
			// A ToHost rule's own counter says it under its reason.
			if c == missChainIndex {
				byReason[x.reason] += f.Packets
			}
			return nil
		})
		if err != nil {
			return byReason, fromPort, err
		}
	}
	return byReason, fromPort, nil
}

// Inject sends frames out of port as they are (AF_PACKET on Linux).
func (n *NIC) Inject(ctx context.Context, port hal.PortID, frames [][]byte) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return hal.ErrClosed
	}
	d := n.lay.ports[port]
	if d == nil {
		return fmt.Errorf("tcflower: inject on port %d: %w", port, hal.ErrNotFound)
	}
	if n.sys == nil {
		return unsupported("inject", "no packet socket on this system")
	}
	if err := n.sys.inject(d.Ifindex, frames); err != nil {
		return &hal.OpError{Driver: driverName, Op: "inject", Err: err}
	}
	return nil
}

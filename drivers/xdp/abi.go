package xdp

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// Sizes shared with bpf/lib/maps.h. They bound what the driver can take, and
// Validate says so when a rule needs more.
const (
	// maxMasks is how many distinct mask shapes the program searches per
	// packet. Each shape costs one hash lookup on a packet that reaches it, so
	// the bound keeps the worst case near 16 lookups; an exact-match-only
	// table (what a vswitch offloads per connection) uses one.
	maxMasks = 16
	// MaxPorts bounds port IDs (1 to MaxPorts-1): ports index per-CPU arrays.
	MaxPorts = 64
	// slotsPerEntry is how many rules may share one match (one shadow
	// generation next to the live one, or two priorities).
	slotsPerEntry = 2
	// encapHdrMax is the room for an outer header template in a rule: the
	// largest the program writes is VXLAN or Geneve (no options) over IPv6,
	// 70 bytes, rounded up to whole 8-byte words.
	encapHdrMax = 72
)

// Action flags of bpfRule.Flags, as in bpf/lib/maps.h.
const (
	actDecap = 1 << iota
	actSetEthSrc
	actSetEthDst
	actSetIPSrc
	actSetIPDst
	actSetL4Src
	actSetL4Dst
	actDecTTL
	actPushVLAN
	actPopVLAN
	actEncap
	actCount
	actFixedFlowID
)

// Terminal actions of bpfRule.Terminal.
const (
	termOutput = 1 + iota
	termDrop
	termToHost
)

// bpfKey is struct flow_key: a hal.FlowKey with a mask shape's ID.
type bpfKey struct {
	TunSrc, TunDst, IPSrc, IPDst [16]byte
	InPort, VNI                  uint32
	EthSrc, EthDst               [6]byte
	EthType, VLAN, L4Src, L4Dst  uint16
	Proto, TunKind, MaskID, Pad  uint8
}

// bpfRule is struct rule: one rule's generation, priority and actions.
type bpfRule struct {
	ID                                    uint64
	Scope, Gen, Counter                   uint32
	Prio, Flags                           uint16
	Terminal, Reason, EncapLen, EncapKind uint8
	OutPort                               uint32
	VLANTCI, L4Src, L4Dst, Pad            uint16
	EncapSum                              uint32
	EthSrc, EthDst                        [6]byte
	IPSrc, IPDst                          [16]byte
	EncapHdr                              [encapHdrMax]byte
}

// bpfFlowVal is struct flow_val.
type bpfFlowVal struct {
	Slot [slotsPerEntry]bpfRule
}

type bpfMaskEntry struct {
	Mask    bpfKey
	MaxPrio uint32
	ID      uint8
	Exact4  uint8 // 1: the shape's entries for untunnelled IPv4 keys are in flows4
	Pad     uint16
}

// bpfKey4 is struct flow_key4: the compact key of an untunnelled IPv4
// frame, under which flows4 holds the entries of exact4 mask shapes.
type bpfKey4 struct {
	InPort       uint32
	IPSrc, IPDst [4]byte
	L4Src, L4Dst uint16
	EthSrc       [6]byte
	EthDst       [6]byte
	VLAN         uint16
	Proto, Pad   uint8
}

// inFlows4 is the mark (bpfKey.Pad) of a key whose entry lives in flows4:
// its mask shape is exact4 and the key is an untunnelled IPv4 frame's.
// The program's keys in flows never carry it (their pad is masked to 0).
const inFlows4 = 1

// exact4Shape says whether mask pins every field of an untunnelled IPv4
// frame that bpfKey4 holds, and the tunnel kind: what hal.Exact gives such
// a frame.
func exact4Shape(mask *bpfKey) bool {
	return mask.InPort == ^uint32(0) && mask.EthSrc == [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff} &&
		mask.EthDst == [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff} && mask.EthType == 0xffff &&
		mask.VLAN == 0xffff && mask.TunKind == 0xff && mask.Proto == 0xff &&
		mask.L4Src == 0xffff && mask.L4Dst == 0xffff && mask.IPSrc == ones16 && mask.IPDst == ones16
}

var ones16 = [16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

var v4Prefix = [12]byte{10: 0xff, 11: 0xff}

// markFlows4 marks k (masked by an exact4 shape) as living in flows4 when
// it is an untunnelled IPv4 frame's: the only keys the program looks up
// there.
func markFlows4(k *bpfKey) {
	if k.EthType == 0x0800 && k.TunKind == 0 && k.VNI == 0 && k.TunSrc == [16]byte{} && k.TunDst == [16]byte{} &&
		[12]byte(k.IPSrc[:12]) == v4Prefix && [12]byte(k.IPDst[:12]) == v4Prefix {
		k.Pad = inFlows4
	}
}

// key4 is the compact key of k (marked inFlows4).
func key4(k *bpfKey) bpfKey4 {
	return bpfKey4{InPort: k.InPort, IPSrc: [4]byte(k.IPSrc[12:]), IPDst: [4]byte(k.IPDst[12:]),
		L4Src: k.L4Src, L4Dst: k.L4Dst, EthSrc: k.EthSrc, EthDst: k.EthDst, VLAN: k.VLAN, Proto: k.Proto}
}

type bpfMaskSet struct {
	N uint32
	// OtherMax is 1 + the highest MaxPrio among the shapes that are not
	// exact4, 0 when every shape is: an exact IPv4 hit of a higher
	// priority needs no search.
	OtherMax uint32
	M        [maxMasks]bpfMaskEntry
}

type bpfPortCfg struct {
	MTU, Ifindex uint32
}

type bpfCounters struct {
	Packets, Bytes uint64
}

type bpfPortStats struct {
	RxPackets, RxBytes, TxPackets, TxBytes, Drops, Exceptions uint64
}

// bpfExcMeta is struct exc_meta, the head of each exception event.
type bpfExcMeta struct {
	Rule                     uint64
	InPort, Reason, VNI, Len uint32
}

const excMetaLen = 24

// The event head's layout and its length agree.
var _ [excMetaLen - unsafe.Sizeof(bpfExcMeta{})]byte
var _ [unsafe.Sizeof(bpfExcMeta{}) - excMetaLen]byte

// maxEPAddrs is how many addresses and groups one uplink's tunnel endpoint
// holds (struct tun_ep): a PA or two per family and a few flood groups.
const maxEPAddrs = 16

// bpfTunEPAddr is struct tun_ep_addr: an accepted outer destination IP
// (IPv4 mapped) and the destination MAC that goes with it.
type bpfTunEPAddr struct {
	Addr [16]byte
	MAC  [6]byte
	Pad  uint16
}

// bpfTunEP is struct tun_ep, one uplink's tunnel endpoint.
type bpfTunEP struct {
	N, Pad uint32
	A      [maxEPAddrs]bpfTunEPAddr
}

type bpfTrace struct {
	Rule                        uint64
	Verdict, Port, Reason, Pad0 uint32
}

// bpfKey is hal.FlowKey field for field, in the same order and widths, and
// then MaskID and Pad: keyOf copies the bytes. Every field's offset is
// checked here, so that a change to either struct stops the build.
var (
	_ [unsafe.Offsetof(hal.FlowKey{}.TunSrc) - unsafe.Offsetof(bpfKey{}.TunSrc)]byte
	_ [unsafe.Offsetof(bpfKey{}.TunSrc) - unsafe.Offsetof(hal.FlowKey{}.TunSrc)]byte
	_ [unsafe.Offsetof(hal.FlowKey{}.TunDst) - unsafe.Offsetof(bpfKey{}.TunDst)]byte
	_ [unsafe.Offsetof(bpfKey{}.TunDst) - unsafe.Offsetof(hal.FlowKey{}.TunDst)]byte
	_ [unsafe.Offsetof(hal.FlowKey{}.IPSrc) - unsafe.Offsetof(bpfKey{}.IPSrc)]byte
	_ [unsafe.Offsetof(bpfKey{}.IPSrc) - unsafe.Offsetof(hal.FlowKey{}.IPSrc)]byte
	_ [unsafe.Offsetof(hal.FlowKey{}.IPDst) - unsafe.Offsetof(bpfKey{}.IPDst)]byte
	_ [unsafe.Offsetof(bpfKey{}.IPDst) - unsafe.Offsetof(hal.FlowKey{}.IPDst)]byte
	_ [unsafe.Offsetof(hal.FlowKey{}.InPort) - unsafe.Offsetof(bpfKey{}.InPort)]byte
	_ [unsafe.Offsetof(bpfKey{}.InPort) - unsafe.Offsetof(hal.FlowKey{}.InPort)]byte
	_ [unsafe.Offsetof(hal.FlowKey{}.VNI) - unsafe.Offsetof(bpfKey{}.VNI)]byte
	_ [unsafe.Offsetof(bpfKey{}.VNI) - unsafe.Offsetof(hal.FlowKey{}.VNI)]byte
	_ [unsafe.Offsetof(hal.FlowKey{}.EthSrc) - unsafe.Offsetof(bpfKey{}.EthSrc)]byte
	_ [unsafe.Offsetof(bpfKey{}.EthSrc) - unsafe.Offsetof(hal.FlowKey{}.EthSrc)]byte
	_ [unsafe.Offsetof(hal.FlowKey{}.EthDst) - unsafe.Offsetof(bpfKey{}.EthDst)]byte
	_ [unsafe.Offsetof(bpfKey{}.EthDst) - unsafe.Offsetof(hal.FlowKey{}.EthDst)]byte
	_ [unsafe.Offsetof(hal.FlowKey{}.EthType) - unsafe.Offsetof(bpfKey{}.EthType)]byte
	_ [unsafe.Offsetof(bpfKey{}.EthType) - unsafe.Offsetof(hal.FlowKey{}.EthType)]byte
	_ [unsafe.Offsetof(hal.FlowKey{}.VLAN) - unsafe.Offsetof(bpfKey{}.VLAN)]byte
	_ [unsafe.Offsetof(bpfKey{}.VLAN) - unsafe.Offsetof(hal.FlowKey{}.VLAN)]byte
	_ [unsafe.Offsetof(hal.FlowKey{}.L4Src) - unsafe.Offsetof(bpfKey{}.L4Src)]byte
	_ [unsafe.Offsetof(bpfKey{}.L4Src) - unsafe.Offsetof(hal.FlowKey{}.L4Src)]byte
	_ [unsafe.Offsetof(hal.FlowKey{}.L4Dst) - unsafe.Offsetof(bpfKey{}.L4Dst)]byte
	_ [unsafe.Offsetof(bpfKey{}.L4Dst) - unsafe.Offsetof(hal.FlowKey{}.L4Dst)]byte
	_ [unsafe.Offsetof(hal.FlowKey{}.Proto) - unsafe.Offsetof(bpfKey{}.Proto)]byte
	_ [unsafe.Offsetof(bpfKey{}.Proto) - unsafe.Offsetof(hal.FlowKey{}.Proto)]byte
	_ [unsafe.Offsetof(hal.FlowKey{}.TunKind) - unsafe.Offsetof(bpfKey{}.TunKind)]byte
	_ [unsafe.Offsetof(bpfKey{}.TunKind) - unsafe.Offsetof(hal.FlowKey{}.TunKind)]byte
	_ [unsafe.Sizeof(hal.FlowKey{}.TunKind) - 1]byte
	_ [1 - unsafe.Sizeof(hal.FlowKey{}.TunKind)]byte
	// nothing after TunKind but two bytes of padding, where bpfKey has
	// MaskID and Pad
	_ [unsafe.Sizeof(hal.FlowKey{}) - bpfKeySize]byte
	_ [bpfKeySize - unsafe.Sizeof(hal.FlowKey{})]byte
	_ [unsafe.Alignof(hal.FlowKey{}) - unsafe.Alignof(uint32(0))]byte
)

// bpfKey4 is 32 bytes, as struct flow_key4.
var (
	_ [unsafe.Sizeof(bpfKey4{}) - 32]byte
	_ [32 - unsafe.Sizeof(bpfKey4{})]byte
)

// matchKeys returns the masked key of m (without its mask ID) and the mask
// shape, both as the program sees them: hal.Match.Normalize on a copy, done
// a word at a time, since masking the bytes of the fields is masking the
// fields.
func matchKeys(m *hal.Match) (key, mask bpfKey) {
	const words = bpfKeySize/4 - 1 // the last holds Proto, TunKind and padding
	kw := (*[words]uint32)(unsafe.Pointer(&m.Key))
	mw := (*[words]uint32)(unsafe.Pointer(&m.Mask))
	ko := (*[words]uint32)(unsafe.Pointer(&key))
	mo := (*[words]uint32)(unsafe.Pointer(&mask))
	for i := range ko {
		w := mw[i]
		mo[i], ko[i] = w, kw[i]&w
	}
	mask.Proto, mask.TunKind = m.Mask.Proto, uint8(m.Mask.TunKind)
	key.Proto, key.TunKind = m.Key.Proto&mask.Proto, uint8(m.Key.TunKind)&mask.TunKind
	return key, mask
}

// encapCache remembers the last two encapsulations encoded: the rules a
// vswitch installs toward one remote host share one, and building hal/wire's
// template is most of the cost of encoding a rule. Two, because an entry
// written with a live rule and its shadow re-encodes both, and the shadow
// may go to another host (a migration).
type encapCache struct {
	e    [2]hal.Encap
	b    [2]bpfRule // only the encap fields are kept
	n    int        // how many are set
	next int        // the one the next put replaces
}

func (c *encapCache) get(e *hal.Encap) (*bpfRule, bool) {
	if len(e.GeneveOptions) > 0 {
		return nil, false
	}
	for i := 0; i < c.n; i++ {
		o := &c.e[i]
		if o.Kind == e.Kind && o.VNI == e.VNI && o.Src == e.Src && o.Dst == e.Dst && o.SrcMAC == e.SrcMAC &&
			o.DstMAC == e.DstMAC && o.TTL == e.TTL && o.DstPort == e.DstPort && o.FlowID == e.FlowID {
			return &c.b[i], true
		}
	}
	return nil, false
}

func (c *encapCache) put(e *hal.Encap, b *bpfRule) {
	if len(e.GeneveOptions) > 0 {
		return
	}
	c.e[c.next], c.b[c.next] = *e, *b
	c.next ^= 1
	c.n = min(c.n+1, len(c.e))
}

// encodeRule turns the actions of r into a bpfRule. It assumes r passed
// Validate.
func encodeRule(r *hal.Rule) (bpfRule, error) { return encodeRuleCached(r, nil) }

func encodeRuleCached(r *hal.Rule, cache *encapCache) (bpfRule, error) {
	b := bpfRule{ID: uint64(r.ID), Scope: uint32(r.Scope), Gen: uint32(r.Generation), Prio: r.Priority}
	for i := range r.Actions {
		a := &r.Actions[i]
		switch a.Kind {
		case hal.ActionDecap:
			b.Flags |= actDecap
		case hal.ActionSetEthSrc:
			b.Flags |= actSetEthSrc
			b.EthSrc = a.MAC
		case hal.ActionSetEthDst:
			b.Flags |= actSetEthDst
			b.EthDst = a.MAC
		case hal.ActionSetIPSrc:
			b.Flags |= actSetIPSrc
			b.IPSrc = a.Addr.As16()
		case hal.ActionSetIPDst:
			b.Flags |= actSetIPDst
			b.IPDst = a.Addr.As16()
		case hal.ActionSetL4Src:
			b.Flags |= actSetL4Src
			b.L4Src = a.L4Port
		case hal.ActionSetL4Dst:
			b.Flags |= actSetL4Dst
			b.L4Dst = a.L4Port
		case hal.ActionDecTTL:
			b.Flags |= actDecTTL
		case hal.ActionPushVLAN:
			b.Flags |= actPushVLAN
			b.VLANTCI = a.VLAN & 0x0fff
		case hal.ActionPopVLAN:
			b.Flags |= actPopVLAN
		case hal.ActionCount:
			b.Flags |= actCount
		case hal.ActionEncap:
			if cache != nil {
				if c, ok := cache.get(&a.Encap); ok {
					b.Flags |= c.Flags & (actEncap | actFixedFlowID)
					b.EncapSum, b.EncapLen, b.EncapKind, b.EncapHdr = c.EncapSum, c.EncapLen, c.EncapKind, c.EncapHdr
					continue
				}
			}
			var t bpfRule
			if err := encodeEncap(&t, &a.Encap); err != nil {
				return b, err
			}
			b.Flags |= t.Flags
			b.EncapSum, b.EncapLen, b.EncapKind, b.EncapHdr = t.EncapSum, t.EncapLen, t.EncapKind, t.EncapHdr
			if cache != nil {
				cache.put(&a.Encap, &t)
			}
		case hal.ActionOutput:
			b.Terminal = termOutput
			b.OutPort = uint32(a.OutPort)
		case hal.ActionDrop:
			b.Terminal = termDrop
			b.Reason = uint8(a.Reason)
		case hal.ActionToHost:
			b.Terminal = termToHost
			b.Reason = uint8(a.Reason)
		}
	}
	return b, nil
}

// encodeEncap stores the outer headers hal/wire builds for e as a template:
// the per-packet fields (IPv4 total length and checksum, or IPv6 flow label
// and payload length; UDP source port, length and checksum; NVGRE FlowID
// when it comes from the hash) are zeroed. EncapSum keeps the running sum
// the program completes per packet: over IPv4 the header's, to which it
// adds the total length; over IPv6 the UDP checksum's (pseudo-header
// addresses and protocol, UDP header, tunnel header), to which it adds the
// source port, the length twice (pseudo-header and UDP header) and the
// inner frame.
func encodeEncap(b *bpfRule, e *hal.Encap) error {
	t, err := wire.NewEncapTemplate(e)
	if err != nil {
		return err
	}
	n := t.Len()
	if n > encapHdrMax {
		return fmt.Errorf("outer headers of %d bytes exceed the %d the program writes", n, encapHdrMax)
	}
	buf := make([]byte, n)
	if _, err := t.Push(buf, n, n, 0); err != nil {
		return err
	}
	l4 := wire.EthHeaderLen + wire.IPv4HeaderLen
	v6 := e.Src.Is6()
	if v6 {
		l4 = wire.EthHeaderLen + wire.IPv6HeaderLen
		binary.BigEndian.PutUint32(buf[14:18], 0x60000000) // version; the flow label comes from the hash
		binary.BigEndian.PutUint16(buf[18:20], 0)          // payload length
	} else {
		binary.BigEndian.PutUint16(buf[16:18], 0) // total length
		binary.BigEndian.PutUint16(buf[24:26], 0) // header checksum
	}
	switch e.Kind {
	case hal.EncapVXLAN, hal.EncapGeneve:
		binary.BigEndian.PutUint16(buf[l4:l4+2], 0)   // UDP source port
		binary.BigEndian.PutUint16(buf[l4+4:l4+6], 0) // UDP length
		binary.BigEndian.PutUint16(buf[l4+6:l4+8], 0) // UDP checksum
	case hal.EncapNVGRE:
		if e.FlowID != 0 {
			b.Flags |= actFixedFlowID
		} else {
			buf[l4+7] = 0
		}
	}
	var sum uint32
	switch {
	case !v6:
		sum = wire.Sum(buf[14:34], 0)
	case e.Kind != hal.EncapNVGRE:
		sum = wire.PseudoHeaderSum(buf[22:38], buf[38:54], hal.ProtoUDP, 0)
		sum = wire.Sum(buf[l4:n], sum)
	}
	sum = sum>>16 + sum&0xffff
	b.EncapSum = sum>>16 + sum&0xffff // folded, so the program's 32-bit adds cannot overflow
	b.Flags |= actEncap
	b.EncapLen = uint8(n)
	b.EncapKind = uint8(e.Kind)
	copy(b.EncapHdr[:], buf)
	return nil
}

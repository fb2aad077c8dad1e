package tcflower

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
)

// tcmsg is struct tcmsg (linux/rtnetlink.h): family, padding, ifindex,
// handle, parent, info. 20 bytes, host byte order.
type tcmsg struct {
	Ifindex uint32
	Handle  uint32
	Parent  uint32
	Info    uint32
}

const tcmsgLen = 20

func (t tcmsg) marshal(b []byte) []byte {
	var h [tcmsgLen]byte
	binary.NativeEndian.PutUint32(h[4:], t.Ifindex)
	binary.NativeEndian.PutUint32(h[8:], t.Handle)
	binary.NativeEndian.PutUint32(h[12:], t.Parent)
	binary.NativeEndian.PutUint32(h[16:], t.Info)
	return append(b, h[:]...)
}

func parseTcmsg(b []byte) (tcmsg, error) {
	if len(b) < tcmsgLen {
		return tcmsg{}, fmt.Errorf("tcmsg: %d bytes, want %d", len(b), tcmsgLen)
	}
	return tcmsg{
		Ifindex: binary.NativeEndian.Uint32(b[4:]),
		Handle:  binary.NativeEndian.Uint32(b[8:]),
		Parent:  binary.NativeEndian.Uint32(b[12:]),
		Info:    binary.NativeEndian.Uint32(b[16:]),
	}, nil
}

// filterInfo is tcm_info for a filter: the priority in the upper 16 bits and
// the protocol, in network byte order, in the lower 16. Every filter uses
// ETH_P_ALL and matches the EtherType as a flower key instead, so that all
// filters of one priority share one flower instance.
func filterInfo(prio uint16) uint32 {
	return uint32(prio)<<16 | uint32(htons(ethPAll))
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func be16(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }
func be32(v uint32) []byte { return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }

// tcAction is one tc action of a filter: its kind and its encoded options.
type tcAction struct {
	Kind string
	Opts []byte // the TCA_ACT_OPTIONS payload (nested attributes)
}

// filterSpec is everything needed to encode one flower filter.
type filterSpec struct {
	Chain   uint32
	Prio    uint16
	Handle  uint32
	Flags   uint32 // TCA_CLS_FLAGS_*
	Keys    []byte // flower key attributes, already encoded
	Actions []tcAction
	Cookie  []byte // TCA_ACT_COOKIE of the first action; nil for none
}

// encodeFilter returns the payload (tcmsg + attributes) of an
// RTM_NEWTFILTER/RTM_DELTFILTER for f in block.
func encodeFilter(block uint32, f *filterSpec, withOptions bool) ([]byte, error) {
	b := tcmsg{Ifindex: tcmIfindexMagicBlock, Handle: f.Handle, Parent: block, Info: filterInfo(f.Prio)}.marshal(nil)
	ae := netlink.NewAttributeEncoder()
	ae.String(tcaKind, "flower")
	ae.Uint32(tcaChain, f.Chain)
	if withOptions {
		ae.Do(tcaOptions, func() ([]byte, error) {
			oe := netlink.NewAttributeEncoder()
			oe.Uint32(flowerFlags, f.Flags)
			oe.Do(flowerAct, func() ([]byte, error) { return encodeActions(f.Actions, f.Cookie) })
			rest, err := oe.Encode()
			if err != nil {
				return nil, err
			}
			// Keys are attributes encoded already (each padded to 4 bytes),
			// so they concatenate with the rest.
			return append(append(make([]byte, 0, len(f.Keys)+len(rest)), f.Keys...), rest...), nil
		})
	}
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	return append(b, attrs...), nil
}

// encodeActions encodes a TCA_FLOWER_ACT list: nested attributes numbered
// from 1 in execution order.
func encodeActions(acts []tcAction, cookie []byte) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	for i, a := range acts {
		a := a
		first := i == 0
		ae.Do(uint16(i+1), func() ([]byte, error) {
			e := netlink.NewAttributeEncoder()
			e.String(actKind, a.Kind)
			if first && len(cookie) > 0 {
				e.Bytes(actCookie, cookie)
			}
			e.Do(actOptions, func() ([]byte, error) { return a.Opts, nil })
			return e.Encode()
		})
	}
	return ae.Encode()
}

// tcGen is struct tc_gen, the head of every action's parameters.
func tcGen(action int32) []byte {
	b := make([]byte, 20)
	binary.NativeEndian.PutUint32(b[8:], uint32(action))
	return b
}

func nestedOpts(fn func(e *netlink.AttributeEncoder)) []byte {
	e := netlink.NewAttributeEncoder()
	fn(e)
	b, err := e.Encode()
	if err != nil {
		// The encoder only fails on errors from Do callbacks, which the
		// callers here never return.
		panic(err)
	}
	return b
}

// gactAction is gact with the given control (TC_ACT_SHOT for drop,
// TC_ACT_GOTO_CHAIN|chain for a jump).
func gactAction(control int32) tcAction {
	return tcAction{Kind: "gact", Opts: nestedOpts(func(e *netlink.AttributeEncoder) {
		e.Bytes(gactParms, tcGen(control))
	})}
}

func gotoChain(chain uint32) tcAction { return gactAction(int32(tcActGotoChain | chain)) }

// mirredRedirect is mirred egress redirect to ifindex: the packet leaves
// through that device and this classification ends (TC_ACT_STOLEN).
func mirredRedirect(ifindex uint32) tcAction {
	p := tcGen(tcActStolen)
	var tail [8]byte
	binary.NativeEndian.PutUint32(tail[0:], tcaEgressRedir)
	binary.NativeEndian.PutUint32(tail[4:], ifindex)
	p = append(p, tail[:]...)
	return tcAction{Kind: "mirred", Opts: nestedOpts(func(e *netlink.AttributeEncoder) { e.Bytes(mirredParms, p) })}
}

func vlanPop() tcAction {
	p := append(tcGen(tcActPipe), 0, 0, 0, 0)
	binary.NativeEndian.PutUint32(p[20:], vlanActPop)
	return tcAction{Kind: "vlan", Opts: nestedOpts(func(e *netlink.AttributeEncoder) { e.Bytes(vlanParms, p) })}
}

func vlanPush(vid uint16) tcAction {
	p := append(tcGen(tcActPipe), 0, 0, 0, 0)
	binary.NativeEndian.PutUint32(p[20:], vlanActPush)
	return tcAction{Kind: "vlan", Opts: nestedOpts(func(e *netlink.AttributeEncoder) {
		e.Bytes(vlanParms, p)
		e.Uint16(vlanPushID, vid)
		e.Bytes(vlanPushProto, be16(0x8100))
	})}
}

func tunnelKeyUnset() tcAction {
	p := append(tcGen(tcActPipe), 0, 0, 0, 0)
	binary.NativeEndian.PutUint32(p[20:], tunKeyActRelease)
	return tcAction{Kind: "tunnel_key", Opts: nestedOpts(func(e *netlink.AttributeEncoder) { e.Bytes(tunKeyParms, p) })}
}

// geneveOption is one Geneve option TLV.
type geneveOption struct {
	Class uint16
	Type  uint8
	Data  []byte
}

// parseGeneveOptions splits raw Geneve option TLVs (RFC 8926 §3.5): class
// (16 bits), type (8), 3 reserved bits and a length in 4-byte words (5 bits),
// then the data.
func parseGeneveOptions(b []byte) ([]geneveOption, error) {
	var opts []geneveOption
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, fmt.Errorf("geneve option: %d trailing bytes", len(b))
		}
		n := int(b[3]&0x1f) * 4
		if len(b) < 4+n {
			return nil, fmt.Errorf("geneve option: length %d overruns %d bytes", n, len(b)-4)
		}
		opts = append(opts, geneveOption{Class: binary.BigEndian.Uint16(b), Type: b[2], Data: b[4 : 4+n]})
		b = b[4+n:]
	}
	return opts, nil
}

// tunnelKeySet is tunnel_key set: the metadata a flow-based (external)
// VXLAN or Geneve device encapsulates with.
func tunnelKeySet(src, dst netip.Addr, vni uint32, dport uint16, ttl uint8, opts []geneveOption) tcAction {
	p := append(tcGen(tcActPipe), 0, 0, 0, 0)
	binary.NativeEndian.PutUint32(p[20:], tunKeyActSet)
	return tcAction{Kind: "tunnel_key", Opts: nestedOpts(func(e *netlink.AttributeEncoder) {
		e.Bytes(tunKeyParms, p)
		if src.Is4() {
			s, d := src.As4(), dst.As4()
			e.Bytes(tunKeyIPv4Src, s[:])
			e.Bytes(tunKeyIPv4Dst, d[:])
		} else {
			s, d := src.As16(), dst.As16()
			e.Bytes(tunKeyIPv6Src, s[:])
			e.Bytes(tunKeyIPv6Dst, d[:])
		}
		e.Bytes(tunKeyKeyID, be32(vni))
		e.Bytes(tunKeyDstPort, be16(dport))
		e.Uint8(tunKeyTTL, ttl)
		if len(opts) > 0 {
			e.Nested(tunKeyEncOpts, func(ne *netlink.AttributeEncoder) error {
				for _, o := range opts {
					o := o
					ne.Nested(tunKeyOptsGeneve, func(ge *netlink.AttributeEncoder) error {
						ge.Bytes(geneveOptClass, be16(o.Class))
						ge.Uint8(geneveOptType, o.Type)
						ge.Bytes(geneveOptData, o.Data)
						return nil
					})
				}
				return nil
			})
		}
	})}
}

// tunnelKeySetNVGRE is tunnel_key set for a flow-based gretap device:
// NVGRE's framing (RFC 7637) is GRE with the key (VSID<<8 | FlowID), no
// checksum and no sequence number, carrying Ethernet (0x6558, which
// gretap writes); tunnel_key asks for a GRE checksum unless told nocsum.
func tunnelKeySetNVGRE(src, dst netip.Addr, key uint32, ttl uint8) tcAction {
	p := append(tcGen(tcActPipe), 0, 0, 0, 0)
	binary.NativeEndian.PutUint32(p[20:], tunKeyActSet)
	return tcAction{Kind: "tunnel_key", Opts: nestedOpts(func(e *netlink.AttributeEncoder) {
		e.Bytes(tunKeyParms, p)
		s, d := src.As4(), dst.As4()
		e.Bytes(tunKeyIPv4Src, s[:])
		e.Bytes(tunKeyIPv4Dst, d[:])
		e.Bytes(tunKeyKeyID, be32(key))
		e.Uint8(tunKeyNoCsum, 1)
		e.Uint8(tunKeyTTL, ttl)
	})}
}

// peditKey is one 32-bit word that pedit rewrites: new = (old & Mask) ^ Val,
// at Off bytes from the header HType names. Mask and Val are in packet byte
// order.
type peditKey struct {
	HType uint16
	Off   uint32
	Mask  [4]byte
	Val   [4]byte
	// Cmd is pedItCmdSet, or pedItCmdAdd: new = (old & Mask) ^ ((old + Val)
	// & ^Mask), adding in the host's byte order of the word, so that a
	// carry out of the kept byte is lost.
	Cmd uint16
}

// peditAction is pedit with extended keys (TCA_PEDIT_PARMS_EX plus
// TCA_PEDIT_KEYS_EX), the form that names the header each offset is from.
// go-tc has no pedit, so it is encoded here.
func peditAction(keys []peditKey) tcAction {
	sel := tcGen(tcActPipe)
	sel = append(sel, byte(len(keys)), 0, 0, 0) // nkeys, flags, padding
	for _, k := range keys {
		var kb [24]byte
		copy(kb[0:4], k.Mask[:]) // u32 fields hold packet-order bytes
		copy(kb[4:8], k.Val[:])
		binary.NativeEndian.PutUint32(kb[8:], k.Off)
		sel = append(sel, kb[:]...)
	}
	return tcAction{Kind: "pedit", Opts: nestedOpts(func(e *netlink.AttributeEncoder) {
		e.Bytes(pedItParmsEx, sel)
		e.Nested(pedItKeysEx, func(ne *netlink.AttributeEncoder) error {
			for _, k := range keys {
				k := k
				ne.Nested(pedItKeyEx, func(ke *netlink.AttributeEncoder) error {
					ke.Uint16(pedItKeyExHType, k.HType)
					ke.Uint16(pedItKeyExCmd, k.Cmd)
					return nil
				})
			}
			return nil
		})
	})}
}

// peditBytes turns "write val at byte offset off of header htype" into
// word-aligned pedit keys.
func peditBytes(htype uint16, off int, val []byte) []peditKey {
	var keys []peditKey
	for i := 0; i < len(val); {
		word := (off + i) &^ 3
		k := peditKey{HType: htype, Off: uint32(word), Mask: [4]byte{0xff, 0xff, 0xff, 0xff}}
		for j := (off + i) - word; j < 4 && i < len(val); j++ {
			k.Mask[j] = 0
			k.Val[j] = val[i]
			i++
		}
		keys = append(keys, k)
	}
	return keys
}

// natAction is act_nat rewriting IPv4 address old (the source when src is
// set, else the destination) to new, with a /32 mask.
func natAction(old, new netip.Addr, src bool) tcAction {
	p := append(tcGen(tcActPipe), make([]byte, 16)...)
	o, n := old.As4(), new.As4()
	copy(p[20:], o[:])
	copy(p[24:], n[:])
	copy(p[28:], []byte{0xff, 0xff, 0xff, 0xff})
	if src {
		binary.NativeEndian.PutUint32(p[32:], natFlagEgress)
	}
	return tcAction{Kind: "nat", Opts: nestedOpts(func(e *netlink.AttributeEncoder) { e.Bytes(natParms, p) })}
}

// csumAction recomputes the checksums pedit invalidated.
func csumAction(flags uint32) tcAction {
	p := append(tcGen(tcActPipe), 0, 0, 0, 0)
	binary.NativeEndian.PutUint32(p[20:], flags)
	return tcAction{Kind: "csum", Opts: nestedOpts(func(e *netlink.AttributeEncoder) { e.Bytes(csumParms, p) })}
}

// encodeQdisc is the payload of RTM_NEWQDISC/RTM_DELQDISC for a clsact
// qdisc on ifindex whose ingress is the shared block.
func encodeQdisc(ifindex, block uint32, withBlock bool) ([]byte, error) {
	b := tcmsg{Ifindex: ifindex, Handle: tcHIngressHandle, Parent: tcHClsact}.marshal(nil)
	ae := netlink.NewAttributeEncoder()
	ae.String(tcaKind, "clsact")
	if withBlock {
		ae.Uint32(tcaIngressBlock, block)
	}
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	return append(b, attrs...), nil
}

// encodeDumpRequest is the payload of an RTM_GETTFILTER dump of one chain of
// the block.
func encodeDumpRequest(block, chain uint32) ([]byte, error) {
	b := tcmsg{Ifindex: tcmIfindexMagicBlock, Parent: block}.marshal(nil)
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(tcaChain, chain)
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	return append(b, attrs...), nil
}

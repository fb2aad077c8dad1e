package tcflower

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// Tunnelled misses: the BPF action (bpf/tunmiss.c) that records a tunnelled
// frame's outer headers in front of it, the filters that run it, and the
// decoding of what it wrote back into a hal.Exception with its outer header
// restored.

// tunnelAction is the exception path's BPF action for tunnelled misses
// (bpf/tunmiss.c): the program's file descriptor and name. fd 0 means
// none: tunnelled misses continue into the tunnel devices' stacks.
type tunnelAction struct {
	fd   int
	name string
}

// act_bpf attributes (linux/tc_act/tc_bpf.h).
const (
	actBPFParms = 2
	actBPFFD    = 5
	actBPFName  = 6
)

// bpfAction is act_bpf running the program fd; it pipes on to the next
// action (the program returns TC_ACT_PIPE, or TC_ACT_SHOT for a frame
// without tunnel metadata, which no filter that runs it takes).
func bpfAction(a tunnelAction) tcAction {
	return tcAction{Kind: "bpf", Opts: nestedOpts(func(e *netlink.AttributeEncoder) {
		e.Bytes(actBPFParms, tcGen(tcActPipe))
		e.Uint32(actBPFFD, uint32(a.fd))
		e.String(actBPFName, a.name)
	})}
}

// The tunnel record the BPF action puts in front of a tunnelled miss
// (bpf/tunmiss.c): after the channel's two tags, EtherType tunnelRecordType
// and tunnelRecordLen bytes, then the Geneve options, then the frame as the
// tunnel device received it.
const (
	tunnelRecordType = 0x88b6
	tunnelRecordLen  = 54
	tunnelRecordVer  = 1
)

// tunnelMissFilters hand the tunnel devices' misses to the channel: one
// catch-all per device (indev), after every rule, whose BPF action puts
// the tunnel metadata in front of the frame. The port tag's VID is 0 (no
// port: decodeException finds the uplink from the outer destination) and
// its priority bits the tunnel's kind.
func (n *NIC) tunnelMissFilters(txIfindex uint32, act tunnelAction) []*filterSpec {
	var fs []*filterSpec
	for _, kind := range []hal.EncapKind{hal.EncapVXLAN, hal.EncapGeneve} {
		d := n.lay.tunnels[kind]
		if d == nil {
			continue
		}
		e := netlink.NewAttributeEncoder()
		e.String(flowerIndev, d.Name)
		keys, _ := e.Encode()
		vid, prio := tagValue(uint16(hal.ReasonMiss))
		fs = append(fs, &filterSpec{Chain: missChainIndex, Prio: prioExcTunnel, Handle: uint32(kind), Flags: n.flags, Keys: keys,
			Actions: []tcAction{bpfAction(act), vlanPushTCI(vid, prio), vlanPushTCI(0, uint8(kind)), mirredRedirect(txIfindex)}})
	}
	return fs
}

// installTunnelMisses adds the tunnel devices' catch-alls (see
// tunnelMissFilters) to an installed exception path: from then on a
// tunnelled frame no rule takes reaches ReadExceptions instead of the
// tunnel device's stack. On failure nothing is left behind.
func (n *NIC) installTunnelMisses(act tunnelAction) error {
	if n.exc == nil {
		return errors.New("no exception path")
	}
	fs := n.tunnelMissFilters(n.exc.txIfindex, act)
	if len(fs) == 0 {
		return errors.New("no tunnel device")
	}
	if err := n.addFilters(fs, func(f *filterSpec, err error) error {
		return opError(fmt.Sprintf("install the tunnel devices' miss filter %d", f.Handle), 0, kernelError(err))
	}); err != nil {
		return err
	}
	up := n.firstUplink()
	for _, f := range fs {
		n.exc.counted[filterID{f.Chain, f.Prio, f.Handle}] = excFilter{up, hal.ReasonMiss}
	}
	n.exc.tunnel = true
	return nil
}

// decodeTunnelMiss turns a tunnelled miss from the channel into e: the
// frame as the wire carried it, rebuilt from the tunnel record the BPF
// action wrote (see bpf/tunmiss.c) and the frame the tunnel device
// received. The outer headers carry what the kernel kept of them: the
// addresses, the VNI, TOS/traffic class, TTL/hop limit, IPv6 flow label
// and Geneve options as they arrived; the outer destination MAC is the
// endpoint's that holds the outer destination (a group's own for a
// group), or the first uplink's own without one, which every frame the
// endpoint filter let through carried; the outer source MAC is zero, the
// UDP destination port the tunnel device's, the UDP source port the inner
// flow's hash (as nicpath's own encapsulation writes it), the IPv4
// identification and flags zero and the IPv4 UDP checksum 0, as the
// kernel does not keep them. InPort is that endpoint's uplink and VNI the
// frame's.
func (n *NIC) decodeTunnelMiss(f []byte, partial bool, e *hal.Exception) bool {
	const r = 22 // the record, after the MACs, the two tags and its EtherType
	if len(f) < r+tunnelRecordLen || binary.BigEndian.Uint16(f[20:]) != tunnelRecordType || f[r] != tunnelRecordVer {
		return false
	}
	kind := hal.EncapKind(binary.BigEndian.Uint16(f[14:]) >> 13)
	dev := n.lay.tunnels[kind]
	if dev == nil {
		return false
	}
	rec := f[r : r+tunnelRecordLen]
	v6 := rec[1]&1 != 0
	olen := int(rec[44]) * 4
	ntags := int(rec[45])
	got := f[r+tunnelRecordLen:]
	if olen > len(got) || ntags > 2 {
		return false
	}
	opts, got := got[:olen], got[olen:]
	if ntags > 0 && len(got) < 12 {
		return false
	}
	tags := rec[46 : 46+4*ntags]
	var src, dst netip.Addr
	if v6 {
		src, dst = netip.AddrFrom16([16]byte(rec[8:24])), netip.AddrFrom16([16]byte(rec[24:40]))
	} else {
		src, dst = netip.AddrFrom4([4]byte(rec[8:12])), netip.AddrFrom4([4]byte(rec[24:28]))
	}
	port, mac := n.tunnelEndpointOf(dst)
	if port == 0 {
		return false
	}
	id := binary.BigEndian.Uint32(rec[4:])
	en := hal.Encap{Kind: kind, VNI: id & 0x00ffffff, Src: src, Dst: dst, DstMAC: mac, TTL: rec[3], DstPort: n.tunnelPortOf(kind)}
	if kind == hal.EncapGeneve && olen > 0 {
		en.GeneveOptions = opts
	}
	t, err := n.tunnelTemplate(en)
	if err != nil {
		return false
	}
	e.InPort, e.Reason, e.VNI, e.Rule = port, hal.Reason(tagFromTCI(binary.BigEndian.Uint16(f[18:]))), en.VNI, 0
	if e.Reason >= hal.NumReasons {
		e.Reason = hal.ReasonMiss
	}
	hl := t.Len()
	size := hl + len(got) + len(tags)
	buf := e.Buf
	if len(buf) < size {
		// Truncated: what fits of the frame as it would have arrived.
		buf = make([]byte, size)
	}
	// The frame the device received, its tags put back after the MACs.
	fr := buf[hl:size]
	if len(tags) == 0 {
		copy(fr, got)
	} else {
		copy(fr, got[:12])
		copy(fr[12:], tags)
		copy(fr[12+len(tags):], got[12:])
	}
	if partial {
		n.completePartial(fr)
	}
	if _, err := t.Push(buf, hl, size, n.innerHash(fr)); err != nil {
		return false
	}
	setOuterTOS(buf[:size], v6, rec)
	if len(e.Buf) < size {
		e.Len, e.Truncated = copy(e.Buf, buf), true
	} else {
		e.Len, e.Truncated = size, false
	}
	return true
}

// tmplKey names the outer headers of a tunnelled miss without options.
type tmplKey struct {
	kind     hal.EncapKind
	vni      uint32
	src, dst netip.Addr
	mac      hal.MAC
	ttl      uint8
	port     uint16
}

// maxTemplates bounds the cache of tunnelTemplate; a full cache starts
// over.
const maxTemplates = 1024

// tunnelTemplate is the encapsulation template that rebuilds a tunnelled
// miss's outer headers, cached per outer header (the reader is the only
// user: ReadExceptions is serialised), so that the misses of a flow cost
// no allocation. A template with Geneve options is built each time.
func (n *NIC) tunnelTemplate(en hal.Encap) (*wire.EncapTemplate, error) {
	if len(en.GeneveOptions) > 0 {
		built := en // escapes: a copy made only here
		return wire.NewEncapTemplate(&built)
	}
	k := tmplKey{en.Kind, en.VNI, en.Src, en.Dst, en.DstMAC, en.TTL, en.DstPort}
	if t, ok := n.tmpls[k]; ok {
		return t, nil
	}
	built := en
	t, err := wire.NewEncapTemplate(&built)
	if err != nil {
		return nil, err
	}
	if n.tmpls == nil || len(n.tmpls) >= maxTemplates {
		n.tmpls = make(map[tmplKey]*wire.EncapTemplate)
	}
	n.tmpls[k] = t
	return t, nil
}

// innerHash is the flow hash of an inner frame (wire.FlowHash of its key;
// a frame that does not parse hashes what it parsed of it). It parses into
// the reader's scratch key and layout: wire.Parse keeps its layout
// argument, which would otherwise cost an allocation per frame.
func (n *NIC) innerHash(f []byte) uint32 {
	n.hashKey = hal.FlowKey{}
	_ = wire.Parse(f, 0, &n.hashKey, &n.hashLay)
	return wire.FlowHash(&n.hashKey)
}

// setOuterTOS writes the record's TOS (IPv4, with the header checksum) or
// traffic class and flow label (IPv6) into the outer header of f, which
// starts with its outer Ethernet header.
func setOuterTOS(f []byte, v6 bool, rec []byte) {
	ip := f[14:]
	if v6 {
		label := binary.BigEndian.Uint32(rec[40:]) & 0xfffff
		binary.BigEndian.PutUint32(ip[0:4], 6<<28|uint32(rec[2])<<20|label)
		return
	}
	ip[1] = rec[2]
	binary.BigEndian.PutUint16(ip[10:12], 0)
	binary.BigEndian.PutUint16(ip[10:12], wire.Checksum(ip[:20], 0))
}

// tunnelEndpointOf is the uplink whose tunnel endpoint holds dst (one of
// its addresses, or groups), and the outer destination MAC that endpoint
// accepts for it; without one, the first uplink and its own MAC. It takes
// no lock (see publishEndpoints).
func (n *NIC) tunnelEndpointOf(dst netip.Addr) (hal.PortID, hal.MAC) {
	if m := n.epAddrs.Load(); m != nil {
		if t, ok := (*m)[dst]; ok {
			return t.port, t.mac
		}
	}
	up := n.firstUplink()
	if up == 0 {
		return 0, hal.MAC{}
	}
	return up, n.lay.ports[up].MAC
}

// tunnelPortOf is the UDP port the tunnel device of kind receives on.
func (n *NIC) tunnelPortOf(kind hal.EncapKind) uint16 {
	if p, ok := n.tunPortByKind[kind]; ok {
		return p
	}
	if kind == hal.EncapGeneve {
		return hal.PortGeneve
	}
	return hal.PortVXLAN
}

// parseTunnelPort reads the UDP port of a VXLAN or Geneve device from its
// RTM_NEWLINK (IFLA_LINKINFO / IFLA_INFO_DATA); 0 when it says none.
func parseTunnelPort(b []byte) uint16 {
	if len(b) < 16 {
		return 0
	}
	ad, err := netlink.NewAttributeDecoder(b[16:])
	if err != nil {
		return 0
	}
	var port uint16
	for ad.Next() {
		if ad.Type() != iflaLinkinfo {
			continue
		}
		ad.Nested(func(li *netlink.AttributeDecoder) error {
			var kind string
			var data []byte
			for li.Next() {
				switch li.Type() {
				case iflaInfoKind:
					kind = li.String()
				case iflaInfoData:
					data = li.Bytes()
				}
			}
			want := map[string]uint16{"vxlan": iflaVXLANPort, "geneve": iflaGenevePort}[kind]
			if want == 0 || data == nil {
				return nil
			}
			dd, err := netlink.NewAttributeDecoder(data)
			if err != nil {
				return nil
			}
			for dd.Next() {
				if dd.Type() == want && len(dd.Bytes()) == 2 {
					port = binary.BigEndian.Uint16(dd.Bytes())
				}
			}
			return nil
		})
	}
	return port
}

//go:build linux

package tcflower

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"github.com/mdlayher/netlink"
	"github.com/safchain/ethtool"
	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/internal/afpacket"
	"github.com/nicpath/nicpath/internal/nsexec"
)

// probeChain is where Open's probe filters go: a chain no filter jumps to,
// so no packet ever meets them, and they are removed at once. Chain indexes
// stop at 2^28-1 (TC_ACT_EXT_VAL_MASK).
const probeChain = 0x0ffffffe

// sockBuf is the netlink socket buffer size the driver asks for (as root it
// may exceed net.core.[rw]mem_max): room for a chunk of chunkOps messages.
const sockBuf = 4 << 20

// Open attaches the driver to the interfaces cfg names: it probes what the
// kernel and the devices can do, creates a clsact qdisc on each port and
// tunnel device with the driver's shared block on its ingress, and returns
// the NIC. It changes nothing else on the interfaces; Close removes what it
// added. On a kernel without cls_flower (or without gact, which generations
// need) it returns an error wrapping hal.ErrNotSupported.
func Open(ctx context.Context, cfg Config) (*NIC, error) {
	if len(cfg.Ports) == 0 {
		return nil, errors.New("tcflower: no ports")
	}
	var nsFD int
	if cfg.NetNS != "" {
		f, err := os.Open(cfg.NetNS)
		if err != nil {
			return nil, fmt.Errorf("tcflower: network namespace: %w", err)
		}
		defer f.Close()
		nsFD = int(f.Fd())
	}
	conn, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{NetNS: nsFD})
	if err != nil {
		return nil, fmt.Errorf("tcflower: netlink: %w", err)
	}
	// Without it kernel refusals lose their reason. (NETLINK_CAP_ACK would
	// keep error messages short, but the netlink package then misplaces
	// the reason; only failures and each chunk's last message are
	// acknowledged, so the echoes stay few.)
	_ = conn.SetOption(netlink.ExtendedAcknowledge, true)
	if rc, err := conn.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sockBuf)
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, sockBuf)
		})
	}
	n, err := open(ctx, conn, cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return n, nil
}

func open(ctx context.Context, conn *netlink.Conn, cfg Config) (*NIC, error) {
	probe := &NIC{conn: conn} // for the netlink helpers
	lay := layout{ports: map[hal.PortID]*device{}, tunnels: map[hal.EncapKind]*device{}}
	var devs []*device
	seen := map[string]bool{}
	for i, pc := range cfg.Ports {
		id := pc.ID
		if id == 0 {
			id = hal.PortID(i + 1)
		}
		if lay.ports[id] != nil {
			return nil, fmt.Errorf("tcflower: port ID %d given twice", id)
		}
		if pc.Kind != hal.PortVPort && pc.Kind != hal.PortUplink {
			return nil, fmt.Errorf("tcflower: port %s: kind %d is neither vport nor uplink", pc.Name, pc.Kind)
		}
		d, err := probe.lookupLink(pc.Name)
		if err != nil {
			return nil, err
		}
		d.ID, d.Kind = id, pc.Kind
		if seen[d.Name] {
			return nil, fmt.Errorf("tcflower: interface %s given twice", d.Name)
		}
		seen[d.Name] = true
		lay.ports[id] = d
		devs = append(devs, d)
	}
	for kind, name := range cfg.Tunnels {
		if kind != hal.EncapVXLAN && kind != hal.EncapGeneve && kind != hal.EncapNVGRE {
			return nil, hal.Unsupported(driverName, "tunnels "+kind.String(), "the driver takes VXLAN, Geneve and NVGRE (gretap) devices only")
		}
		d, err := probe.lookupLink(name)
		if err != nil {
			return nil, err
		}
		if seen[d.Name] {
			return nil, fmt.Errorf("tcflower: interface %s given twice", d.Name)
		}
		seen[d.Name] = true
		lay.tunnels[kind] = d
		devs = append(devs, d)
	}

	block := cfg.Block
	if block == 0 {
		var err error
		if block, err = probe.freeBlock(); err != nil {
			return nil, err
		}
	}
	n := newNIC(conn, cfg, block, 0, lay, devs)

	// Attach the block everywhere, undoing it all on failure.
	var attached []*device
	undo := func() {
		for _, d := range attached {
			if b, err := encodeQdisc(d.Ifindex, block, false); err == nil {
				_ = n.do(n.request(rtmDelQdisc, 0, b))
			}
		}
	}
	for _, d := range devs {
		b, err := encodeQdisc(d.Ifindex, block, true)
		if err == nil {
			err = n.do(n.request(rtmNewQdisc, netlink.Create|netlink.Excl, b))
		}
		if err != nil {
			undo()
			if errors.Is(kernelError(err), hal.ErrExists) {
				return nil, fmt.Errorf("tcflower: %s already has a clsact qdisc; the driver needs its own: %w", d.Name, kernelError(err))
			}
			return nil, opError("attach clsact to "+d.Name, 0, err)
		}
		attached = append(attached, d)
	}
	if err := n.probe(ctx); err != nil {
		undo()
		return nil, err
	}
	if err := n.installSealedDrop(); err != nil {
		undo()
		return nil, err
	}
	n.base = map[hal.PortID]linkStats{}
	for id, d := range lay.ports {
		st, err := n.linkStats(d.Ifindex)
		if err != nil {
			undo()
			return nil, err
		}
		n.base[id] = st
	}
	sys, err := newLinuxSys(cfg.NetNS, lay.ports)
	if err != nil {
		undo()
		return nil, err
	}
	n.sys, n.groups = sys, sys
	n.tunPorts = n.tunnelPorts()
	n.tunPortByKind = map[hal.EncapKind]uint16{}
	for kind, d := range lay.tunnels {
		if kind != hal.EncapNVGRE {
			n.tunPortByKind[kind] = n.tunnelPort(kind, d)
		}
	}
	if n.caps.Decaps != 0 && len(n.tunPorts) > 0 {
		n.caps.TunnelFilter = true
		n.caps.Notes = append(n.caps.Notes, fmt.Sprintf("tunnel filter: SetTunnelEndpoint puts flower filters on the uplink's ingress ahead of every rule: UDP to ports %v for the endpoint's addresses and MAC (or a group's address and MAC) passes into the kernel's stack, the rest is dropped and counted under not_local; the groups are joined on the uplink", n.tunPorts))
	}
	n.openExceptionPath()
	return n, nil
}

// lookupLink asks the kernel for the interface called name.
func (n *NIC) lookupLink(name string) (*device, error) {
	b := make([]byte, 16)
	ae := netlink.NewAttributeEncoder()
	ae.String(iflaIfname, name)
	attrs, _ := ae.Encode()
	msgs, err := n.conn.Execute(n.request(rtmGetLink, 0, append(b, attrs...)))
	if err != nil {
		err = kernelError(err)
		if errors.Is(err, hal.ErrNotFound) || errors.Is(err, unix.ENODEV) {
			return nil, fmt.Errorf("tcflower: interface %q: %w", name, hal.ErrNotFound)
		}
		return nil, fmt.Errorf("tcflower: interface %q: %w", name, err)
	}
	for _, m := range msgs {
		ifindex, got, mac, mtu, _, err := parseLink(m.Data)
		if err != nil || got != name {
			continue
		}
		d := &device{Name: got, Ifindex: ifindex, MTU: int(mtu)}
		copy(d.MAC[:], mac)
		return d, nil
	}
	return nil, fmt.Errorf("tcflower: interface %q: %w", name, hal.ErrNotFound)
}

// freeBlock picks a block index that nothing in the namespace uses. A dump
// of an unknown block is empty rather than an error, so it asks for one
// filter instead: the kernel answers EINVAL ("Block of given index was not
// found") only for a block that does not exist.
func (n *NIC) freeBlock() (uint32, error) {
	for try := 0; try < 16; try++ {
		var r [4]byte
		if _, err := rand.Read(r[:]); err != nil {
			return 0, err
		}
		b := binary.LittleEndian.Uint32(r[:])&0x3fffffff | 0x40000000
		req := tcmsg{Ifindex: tcmIfindexMagicBlock, Parent: b, Handle: 1, Info: filterInfo(1)}.marshal(nil)
		ae := netlink.NewAttributeEncoder()
		ae.String(tcaKind, "flower")
		attrs, _ := ae.Encode()
		_, err := n.conn.Execute(n.request(rtmGetFilter, 0, append(req, attrs...)))
		var ke *KernelError
		if errors.As(kernelError(err), &ke) && ke.Errno == errnoEINVAL {
			return b, nil
		}
	}
	return 0, errors.New("tcflower: no free tc block index found")
}

// probeFilter installs a filter with the given flags and actions in the
// probe chain and removes it again. It answers as probeOutcome says: nil
// (the kernel takes it), an error wrapping hal.ErrNotSupported (it does not
// have what the filter needs), or a *ProbeError naming what (the probe
// itself failed).
func (n *NIC) probeFilter(what string, flags uint32, acts ...tcAction) error {
	f := &filterSpec{Chain: probeChain, Prio: 1, Handle: 1, Flags: flags, Actions: acts}
	m, err := n.filterMsg(f, netlink.Create|netlink.Excl)
	if err != nil {
		return &ProbeError{Probe: what, Err: err}
	}
	if err := n.do(m); err != nil {
		return probeOutcome(what, kernelError(err))
	}
	if err := n.do(n.delFilterMsg(probeChain, 1, 1)); err != nil {
		// The kernel took the filter: whatever the removal says, the probe
		// did not find the feature missing.
		return &ProbeError{Probe: what + " (removing the probe filter)", Err: kernelError(err)}
	}
	return nil
}

// probeNumVLANs says whether flower takes the num_of_vlans key: a kernel
// older than 5.19 parses flower's options leniently and ignores an
// attribute it does not know, so the probe filter is dumped back and must
// carry the key. It answers like probeFilter.
func (n *NIC) probeNumVLANs() error {
	const what = "flower num_of_vlans"
	e := netlink.NewAttributeEncoder()
	e.Uint8(flowerNumOfVLANs, 0)
	keys, _ := e.Encode()
	f := &filterSpec{Chain: probeChain, Prio: 1, Handle: 1, Flags: clsFlagsSkipHW, Keys: keys, Actions: []tcAction{gactAction(tcActShot)}}
	m, err := n.filterMsg(f, netlink.Create|netlink.Excl)
	if err != nil {
		return &ProbeError{Probe: what, Err: err}
	}
	if err := n.do(m); err != nil {
		return probeOutcome(what, kernelError(err))
	}
	echoed := false
	derr := n.dumpChain(probeChain, func(d *dumpedFilter) error {
		if d.Prio == 1 && d.Handle == 1 && d.NumVLANs == 0 {
			echoed = true
		}
		return nil
	})
	if err := n.do(n.delFilterMsg(probeChain, 1, 1)); err != nil {
		return &ProbeError{Probe: what + " (removing the probe filter)", Err: kernelError(err)}
	}
	if derr != nil {
		return &ProbeError{Probe: what + " (dumping the probe filter)", Err: derr}
	}
	if !echoed {
		return fmt.Errorf("the kernel took the key without keeping it (flower before Linux 5.19 ignores attributes it does not know): %w", hal.ErrNotSupported)
	}
	return nil
}

// probe finds out what the kernel and the devices take, sets the filter
// flags the placement policy calls for, and fills the capabilities.
func (n *NIC) probe(ctx context.Context) error {
	notes := []string{}
	// flower itself, with gact (drop): every rule and the generation
	// chains need them. A probe that failed (rather than found the feature
	// missing) fails Open with its reason: it is never read as absent.
	if err := n.probeFilter("flower with gact", clsFlagsSkipHW, gactAction(tcActShot)); err != nil {
		if probeFailed(err) {
			return err
		}
		return fmt.Errorf("tcflower: the kernel takes no flower filter with a gact action (cls_flower / act_gact missing?): %w", err)
	}
	// Hardware: a skip_sw filter lands only where a device offloads tc.
	hwErr := n.probeFilter("skip_sw filter", clsFlagsSkipSW, gactAction(tcActShot))
	if probeFailed(hwErr) {
		return hwErr
	}
	offload := n.ethtoolProbe(&notes)
	hasHW := hwErr == nil
	if hwErr != nil {
		notes = append(notes, "no hardware tables: skip_sw refused: "+hwErr.Error())
	} else {
		notes = append(notes, "skip_sw accepted: the devices offload tc rules")
	}
	if offload != "" {
		notes = append(notes, offload)
	}
	loc := hal.LocationKernel
	switch n.cfg.Placement {
	case PlaceHardware:
		if !hasHW {
			return fmt.Errorf("tcflower: placement %s: %w", n.cfg.Placement, hal.Unsupported(driverName, "placement", "no hardware tables: skip_sw refused: %v", hwErr))
		}
		n.flags = clsFlagsSkipSW
		loc = hal.LocationHardware
	case PlaceSoftware:
		n.flags = clsFlagsSkipHW
	default:
		if hasHW {
			loc = hal.LocationHardware
			notes = append(notes, "placement any: a rule the hardware refuses stays in software; Dump says where each one is")
		} else {
			n.flags = clsFlagsSkipHW
			notes = append(notes, "placement any without hardware: rules are programmed skip_hw and reported as not in hardware")
		}
	}

	acts := hal.ActionsOf(hal.ActionDrop, hal.ActionCount)
	// has answers whether the kernel takes action a; the first probe that
	// failed (rather than found the action missing) is kept in failed, and
	// Open fails with it.
	var failed error
	has := func(kind string, a tcAction) bool {
		if failed != nil {
			return false
		}
		err := n.probeFilter("action "+kind, n.flags&^clsFlagsSkipSW|clsFlagsSkipHW, a)
		switch {
		case err == nil:
			return true
		case probeFailed(err):
			failed = err
		default:
			notes = append(notes, fmt.Sprintf("action %s unavailable: %v", kind, err))
		}
		return false
	}
	if has("mirred", mirredRedirect(n.devs[0].Ifindex)) {
		acts |= hal.ActionsOf(hal.ActionOutput)
	}
	if has("pedit", peditAction(peditBytes(pedItHTypeEth, 0, []byte{0}))) && has("csum", csumAction(csumFlagIPv4Hdr)) {
		acts |= hal.ActionsOf(hal.ActionSetEthSrc, hal.ActionSetEthDst, hal.ActionSetIPSrc, hal.ActionSetIPDst, hal.ActionSetL4Src, hal.ActionSetL4Dst)
		if has("nat", natAction(netip.IPv4Unspecified(), netip.IPv4Unspecified(), false)) {
			n.lay.nat = true
			notes = append(notes, "IPv4 address rewrites of rules that match the address exactly use act_nat, which keeps the checksum right in a frame whose sender left it to the device (TSO/GSO included)")
		}
		notes = append(notes, "address rewrites by pedit and csum (IPv6, or an IPv4 address the rule does not match exactly"+map[bool]string{true: "", false: ", or every one: no act_nat"}[n.lay.nat]+"): csum leaves a TSO/GSO frame alone, whose checksum then stays the old addresses' pseudo-header sum, and the device that segments it writes wrong checksums")
	}
	switch err := n.probeNumVLANs(); {
	case err == nil:
		n.lay.numVLANs = true
		notes = append(notes, "\"no VLAN tag\" is flower's num_of_vlans 0")
	case probeFailed(err):
		return err
	default:
		notes = append(notes, "match.vlan: the absence of a tag is refused: "+err.Error())
	}
	if has("vlan", vlanPop()) {
		acts |= hal.ActionsOf(hal.ActionPushVLAN, hal.ActionPopVLAN)
	}
	var encaps hal.EncapSet
	match := hal.MatchInPort | hal.MatchEthSrc | hal.MatchEthDst | hal.MatchEthType | hal.MatchVLAN |
		hal.MatchIPv4Src | hal.MatchIPv4Dst | hal.MatchIPv6Src | hal.MatchIPv6Dst | hal.MatchIPProto |
		hal.MatchL4Src | hal.MatchL4Dst
	tunnels := len(n.lay.tunnels) > 0 && has("tunnel_key", tunnelKeyUnset()) && acts.Has(hal.ActionOutput)
	if failed != nil {
		return failed
	}
	var decaps hal.EncapSet
	if tunnels {
		for k := range n.lay.tunnels {
			encaps |= hal.EncapsOf(k)
			if k != hal.EncapNVGRE {
				decaps |= hal.EncapsOf(k)
			}
		}
		if n.lay.tunnels[hal.EncapNVGRE] != nil {
			notes = append(notes, fmt.Sprintf("nvgre: encap only, through the flow-based gretap device %s (tunnel_key set: key VSID<<8 | FlowID, no GRE checksum; IPv4 outer headers only), with the Encap's FlowID (0 unless set: every flow of a VSID then has the same entropy); no decap: flower's enc_key_id has no mask, so a decap rule would match one of the 256 FlowIDs a sender spreads its flows over; GRE frames on an uplink are misses, which reach the host as they arrived", n.lay.tunnels[hal.EncapNVGRE].Name))
		}
		acts |= hal.ActionsOf(hal.ActionEncap, hal.ActionDecap)
		match |= hal.MatchVNI | hal.MatchTunSrc | hal.MatchTunDst | hal.MatchTunKind
		notes = append(notes, "encap: outer MACs come from the kernel's route and neighbour table, not from Encap.SrcMAC/DstMAC; the frame leaves through the tunnel device and the route to the outer destination")
		notes = append(notes, n.probeOuter6())
	}
	notes = append(notes,
		"sealed-address frames (EtherType 0x88B5) are dropped ahead of every rule and counted under reason sealed: no crypto, so the NIC fails closed",
		fmt.Sprintf("generations: tc chains, one dispatch filter per scope; at most %d scopes; rules of a lower scope are tried before those of a higher one", maxScopes),
		"equal priorities: flower does not order overlapping filters of one priority by rule ID",
		fmt.Sprintf("max rules: %d is the driver's own bound (software rules are bounded by kernel memory, not by a table size)", maxRules),
		"L4 port rewrites assume IPv4 headers without options and IPv6 headers without extension headers",
		"not tunnelled (tun=none): a port's ingress carries no tunnel metadata, so such a rule is its in-port match; without an in-port it is refused (the tunnel devices share the block)",
	)
	devNames := make([]string, len(n.devs))
	for i, d := range n.devs {
		devNames[i] = d.Name
	}
	n.caps = hal.Capabilities{
		Driver:        driverName,
		Device:        fmt.Sprintf("tc block %d on %s (placement %s)", n.block, strings.Join(devNames, ","), n.cfg.Placement),
		Location:      loc,
		MaxRules:      maxRules,
		MaxBatch:      maxBatch,
		MatchFields:   match,
		MaskedFields:  hal.MatchEthSrc | hal.MatchEthDst | hal.MatchIPv4Src | hal.MatchIPv4Dst | hal.MatchIPv6Src | hal.MatchIPv6Dst | hal.MatchL4Src | hal.MatchL4Dst | (match & (hal.MatchTunSrc | hal.MatchTunDst)),
		Priorities:    true,
		Actions:       acts,
		Encaps:        encaps,
		Decaps:        decaps,
		Counters:      hal.CounterCaps{PerRule: true, PerPort: true, BytesIncludeL2: false},
		Generations:   true,
		MaxScopes:     maxScopes,
		ExceptionPath: false,
		Notes:         notes,
	}
	return nil
}

// probeOuter6 finds the tunnel kinds whose device has a UDP/IPv6 socket on
// its port (n.lay.outer6), and says what it found. A flow-based device
// opens one beside its IPv4 socket when it comes up, where the kernel has
// IPv6; without it the device drops what tunnel_key addresses over IPv6
// and receives nothing over IPv6, so Validate refuses outer IPv6 addresses
// for that kind.
func (n *NIC) probeOuter6() string {
	var table []byte
	err := inNetNS(n.cfg.NetNS, func() error {
		// thread-self: /proc/net follows the process's first thread,
		// which is in another namespace.
		b, err := os.ReadFile("/proc/thread-self/net/udp6")
		table = b
		return err
	})
	if err != nil {
		n.lay.outer6 = 0
		return fmt.Sprintf("outer IPv6: refused for every tunnel: the namespace has no UDP/IPv6 table (%v)", err)
	}
	bound := udp6Ports(string(table))
	var yes, no []string
	n.lay.outer6 = 0
	for _, kind := range []hal.EncapKind{hal.EncapVXLAN, hal.EncapGeneve} {
		d := n.lay.tunnels[kind]
		if d == nil {
			continue
		}
		port := n.tunnelPort(kind, d)
		if bound[port] {
			n.lay.outer6 |= hal.EncapsOf(kind)
			yes = append(yes, fmt.Sprintf("%s (%s, UDP/IPv6 socket on port %d)", kind, d.Name, port))
		} else {
			no = append(no, fmt.Sprintf("%s (%s has no UDP/IPv6 socket on port %d: down when opened, or no IPv6 in the kernel)", kind, d.Name, port))
		}
	}
	var parts []string
	if len(yes) > 0 {
		parts = append(parts, "outer IPv6 taken for "+strings.Join(yes, ", ")+"; the device writes the outer UDP checksum (tunnel_key without nocsum), over IPv6 as over IPv4")
	}
	if len(no) > 0 {
		parts = append(parts, "outer IPv6 refused for "+strings.Join(no, ", "))
	}
	return strings.Join(parts, "; ")
}

// ethtoolProbe reads each port's driver and hw-tc-offload feature, turning
// the feature on (and reading it back) where hardware placement is allowed
// and the device can change it. It returns a summary for the notes.
func (n *NIC) ethtoolProbe(notes *[]string) string {
	var parts []string
	err := inNetNS(n.cfg.NetNS, func() error {
		et, err := ethtool.NewEthtool()
		if err != nil {
			return err
		}
		defer et.Close()
		for _, d := range n.devs {
			drv, err := et.DriverName(d.Name)
			if err != nil {
				drv = "?"
			}
			feats, err := et.FeaturesWithState(d.Name)
			if err != nil {
				parts = append(parts, fmt.Sprintf("%s (%s): features unreadable: %v", d.Name, drv, err))
				continue
			}
			st, ok := feats["hw-tc-offload"]
			if !ok {
				parts = append(parts, fmt.Sprintf("%s (%s): no hw-tc-offload feature", d.Name, drv))
				continue
			}
			if n.cfg.Placement != PlaceSoftware && st.Available && !st.Active {
				_ = et.Change(d.Name, map[string]bool{"hw-tc-offload": true})
				if f2, err := et.FeaturesWithState(d.Name); err == nil {
					st = f2["hw-tc-offload"]
				}
			}
			fixed := ""
			if !st.Available {
				fixed = " [fixed]"
			}
			parts = append(parts, fmt.Sprintf("%s (%s): hw-tc-offload %s%s", d.Name, drv, onOff(st.Active), fixed))
		}
		return nil
	})
	if err != nil {
		return "ethtool: " + err.Error()
	}
	return "ethtool: " + strings.Join(parts, "; ")
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// inNetNS runs fn on a thread switched into the namespace at path (the
// caller's own when path is empty); see nsexec.Do.
func inNetNS(path string, fn func() error) error { return nsexec.Do(path, fn) }

// linuxSys injects frames with an AF_PACKET socket per port, opened in the
// ports' namespace, and joins multicast groups there.
type linuxSys struct {
	ns    string
	socks map[uint32]*afpacket.Socket // by ifindex
}

func newLinuxSys(ns string, ports map[hal.PortID]*device) (*linuxSys, error) {
	s := &linuxSys{ns: ns, socks: map[uint32]*afpacket.Socket{}}
	err := inNetNS(ns, func() error {
		for _, d := range ports {
			// Send only: a socket that received would copy every frame on
			// the port into a queue nobody reads.
			sock, err := afpacket.Open(d.Name, afpacket.Options{SendOnly: true})
			if err != nil {
				return fmt.Errorf("tcflower: packet socket for Inject on %s: %w", d.Name, err)
			}
			s.socks[d.Ifindex] = sock
			if sock.Ifindex() != int(d.Ifindex) {
				return fmt.Errorf("tcflower: packet socket for Inject: %s is ifindex %d, not %d", d.Name, sock.Ifindex(), d.Ifindex)
			}
		}
		return nil
	})
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *linuxSys) inject(ifindex uint32, frames [][]byte) error {
	sock := s.socks[ifindex]
	if sock == nil {
		return fmt.Errorf("no packet socket for ifindex %d: %w", ifindex, hal.ErrNotFound)
	}
	for _, f := range frames {
		if err := sock.Send(f); err != nil {
			return err
		}
	}
	return nil
}

func (s *linuxSys) close() error {
	var errs []error
	for ifindex, sock := range s.socks {
		errs = append(errs, sock.Close())
		delete(s.socks, ifindex)
	}
	return errors.Join(errs...)
}

// memberships are UDP sockets that hold multicast group memberships on an
// interface; Close leaves the groups.
type memberships []int

func (m memberships) Close() error {
	var errs []error
	for _, fd := range m {
		errs = append(errs, unix.Close(fd))
	}
	return errors.Join(errs...)
}

// joinGroups joins groups on the interface ifindex of the namespace, one
// unbound UDP socket per group: the kernel then takes the group's frames
// on that interface (a tunnel device's socket, bound to the port on any
// address, receives them), and the socket itself receives nothing.
func (s *linuxSys) joinGroups(ifindex uint32, groups []netip.Addr) (io.Closer, error) {
	var m memberships
	err := inNetNS(s.ns, func() error {
		for _, g := range groups {
			family, level := unix.AF_INET, unix.IPPROTO_IP
			if g.Is6() {
				family, level = unix.AF_INET6, unix.IPPROTO_IPV6
			}
			fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
			if err != nil {
				return err
			}
			m = append(m, fd)
			if g.Is4() {
				err = unix.SetsockoptIPMreqn(fd, level, unix.IP_ADD_MEMBERSHIP, &unix.IPMreqn{Multiaddr: g.As4(), Ifindex: int32(ifindex)})
			} else {
				err = unix.SetsockoptIPv6Mreq(fd, level, unix.IPV6_JOIN_GROUP, &unix.IPv6Mreq{Multiaddr: g.As16(), Interface: ifindex})
			}
			if err != nil {
				return fmt.Errorf("group %s: %w", g, err)
			}
		}
		return nil
	})
	if err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

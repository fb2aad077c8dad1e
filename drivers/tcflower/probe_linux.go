//go:build linux

package tcflower

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/mdlayher/netlink"
	"github.com/nicpath/nicpath/hal"
	"github.com/safchain/ethtool"
)

// Probes: what the kernel can do, found by installing and removing a filter of
// each kind on the block. Each answers supported, hal.ErrNotSupported, or a
// failed probe (probe.go: ProbeError), which Open reports rather than reading
// as absent.

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
		fmt.Sprintf("max rules: %d, the driver's own bound (Config.MaxRules, default %d): software filters are bounded by kernel memory, not by a table size", n.cfg.maxRules(), DefaultMaxRules),
		atomicBatchNote,
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
		MaxRules:      n.cfg.maxRules(),
		MaxBatch:      n.cfg.maxBatch(),
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
		SealedDrop:    true, // installSealedDrop
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

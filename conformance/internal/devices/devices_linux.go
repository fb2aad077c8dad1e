//go:build linux

package devices

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/nicpath/nicpath/conformance"
	"github.com/nicpath/nicpath/drivers/tcflower"
	"github.com/nicpath/nicpath/drivers/xdp"
	"github.com/nicpath/nicpath/hal"
)

// XDP opens the XDP driver on the interfaces p names, with an AF_PACKET
// harness on their peers. Its leak check looks for XDP programs still
// attached to the interfaces after Close.
func XDP(p Ports, mode xdp.Mode) (conformance.Target, error) {
	ports, err := p.list(VethPeer)
	if err != nil {
		return conformance.Target{}, err
	}
	return conformance.Target{
		Name: fmt.Sprintf("xdp (%s mode) on %v", mode, names(ports)),
		Open: func(ctx context.Context) (hal.NIC, conformance.Harness, error) {
			cfg := xdp.Config{NetNS: p.NetNS, Mode: mode, MaxRules: p.MaxRules, MaxBatch: p.MaxBatch}
			for _, pt := range ports {
				cfg.Ports = append(cfg.Ports, xdp.PortConfig{ID: pt.id, Name: pt.name, Kind: pt.kind})
			}
			return openWithHarness(ctx, p.NetNS, ports, func() (hal.NIC, error) { return xdp.Open(ctx, cfg) },
				func() error { return noXDP(p.NetNS, ports) })
		},
		Devices: func(ctx context.Context) ([]conformance.DeviceInfo, error) {
			return deviceInfo(ctx, p.NetNS, ports, nil)
		},
		Documented: xdpDocumented,
		Timeout:    10 * time.Second,
		Quiet:      150 * time.Millisecond,
		MinFrame:   14,
	}, nil
}

// xdpDocumented are the XDP driver's differences from the reference on
// any link (its package doc lists them).
var xdpDocumented = []conformance.Difference{
	{Case: "encap/geneve/options", Capability: "encap geneve", Reason: "Geneve options are not written: Validate refuses them (the program writes a fixed 8-byte Geneve header)"},
}

// TCFlower opens the tc-flower driver on the interfaces p names, in
// software placement unless hw. Its leak check looks for a clsact qdisc
// left on the interfaces after Close.
func TCFlower(p Ports, placement tcflower.Placement) (conformance.Target, error) {
	ports, err := p.list(VethPeer)
	if err != nil {
		return conformance.Target{}, err
	}
	return conformance.Target{
		Name: fmt.Sprintf("tcflower (%s placement) on %v", placement, names(ports)),
		Open: func(ctx context.Context) (hal.NIC, conformance.Harness, error) {
			cfg := tcflower.Config{NetNS: p.NetNS, Placement: placement, Tunnels: p.Tunnels, MaxRules: p.MaxRules, MaxBatch: p.MaxBatch}
			for _, pt := range ports {
				cfg.Ports = append(cfg.Ports, tcflower.PortConfig{ID: pt.id, Name: pt.name, Kind: pt.kind})
			}
			return openWithHarness(ctx, p.NetNS, ports, func() (hal.NIC, error) { return tcflower.Open(ctx, cfg) },
				func() error { return noClsact(p.NetNS, ports, p.Tunnels) })
		},
		Devices: func(ctx context.Context) ([]conformance.DeviceInfo, error) {
			return deviceInfo(ctx, p.NetNS, ports, p.Tunnels)
		},
		Documented: tcflowerDocumented(p.Tunnels),
		// The tc path in a VM under TCG is slow.
		Timeout:  5 * time.Second,
		Quiet:    300 * time.Millisecond,
		MinFrame: 14,
	}, nil
}

func names(ports []port) []string {
	var out []string
	for _, p := range ports {
		out = append(out, p.name)
	}
	return out
}

func openWithHarness(ctx context.Context, ns string, ports []port, open func() (hal.NIC, error), leaks func() error) (hal.NIC, conformance.Harness, error) {
	peers := map[hal.PortID]string{}
	for _, p := range ports {
		peers[p.id] = p.peer
	}
	// The harness first, so that it sees every frame the NIC emits.
	h, err := NewPacketHarness(ns, peers)
	if err != nil {
		return nil, nil, err
	}
	nic, err := open()
	if err != nil {
		h.Close()
		return nil, nil, err
	}
	h.Leaks = leaks
	return nic, h, nil
}

// nsCommand runs prog in the namespace at ns: with -n NAME for ip(8) and
// tc(8) when ns is a named namespace (/run/netns/NAME), through nsenter(1)
// otherwise.
func nsCommand(ns, prog string, args ...string) *exec.Cmd {
	if ns == "" {
		return exec.Command(prog, args...)
	}
	for _, dir := range []string{"/run/netns/", "/var/run/netns/"} {
		if name, ok := strings.CutPrefix(ns, dir); ok && !strings.Contains(name, "/") {
			return exec.Command(prog, append([]string{"-n", name}, args...)...)
		}
	}
	return exec.Command("nsenter", append([]string{"--net=" + ns, prog}, args...)...)
}

// ipJSON runs ip(8) with -json in the namespace and decodes its output.
func ipJSON(ns string, out any, args ...string) error {
	cmd := nsCommand(ns, "ip", append([]string{"-json"}, args...)...)
	b, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("%v: %w", cmd.Args, err)
	}
	return json.Unmarshal(b, out)
}

func noXDP(ns string, ports []port) error {
	for _, p := range ports {
		var links []map[string]any
		if err := ipJSON(ns, &links, "-details", "link", "show", "dev", p.name); err != nil {
			return err
		}
		for _, l := range links {
			if x, ok := l["xdp"]; ok {
				return fmt.Errorf("%s still has an XDP program: %v", p.name, x)
			}
		}
	}
	return nil
}

func noClsact(ns string, ports []port, tunnels map[hal.EncapKind]string) error {
	devs := names(ports)
	for _, t := range tunnels {
		devs = append(devs, t)
	}
	for _, d := range devs {
		var qs []map[string]any
		cmd := nsCommand(ns, "tc", "-json", "qdisc", "show", "dev", d)
		b, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("%v: %w", cmd.Args, err)
		}
		if err := json.Unmarshal(b, &qs); err != nil {
			return err
		}
		for _, q := range qs {
			if q["kind"] == "clsact" {
				return fmt.Errorf("%s still has a clsact qdisc", d)
			}
		}
	}
	return nil
}

// Why tc-flower differs from the reference, as its package doc says.
const (
	tcflowerTunnelledMiss = "a tunnelled frame no decap rule takes reaches the host rebuilt from the tunnel metadata (the driver's act_bpf action, after the kernel removed the outer headers), not as it arrived: its VNI and outer addresses are right, but the outer source MAC, the UDP source port and checksum and the IPv4 identification and flags are not the wire's (without act_bpf, Capabilities.TunnelMissesUnseen, it does not reach the host at all)"
	tcflowerTunnelMatch   = "the kernel removes the outer headers before tc sees a tunnelled frame: Validate refuses a rule that matches tunnel fields without decapsulating"
	tcflowerMalformed     = "flower matches a truncated frame on the fields it finds: a rule on the in-port alone forwards it, and nothing is counted malformed"
	tcflowerMalformedTun  = "a truncated tunnelled frame is dropped uncounted by the tunnel device's stack, or reaches the host as a miss (not malformed) when what is left is no tunnel packet"
	tcflowerPriority      = "flower does not order overlapping filters of one priority by rule ID"
	tcflowerBatch         = "flower refuses a second filter with the same match and priority (EEXIST), which this case installs"
	tcflowerDecapCounter  = "a decap rule matches on the tunnel device after the kernel removed the outer headers: it counts the inner frame"
)

// tcflowerDocumented are the tc-flower driver's differences from the
// reference, case by case, for the tunnel devices given: the tunnel cases
// exist only when the driver decapsulates, the decap cases per kind. It is
// what differs on the bed nicconform's VM test builds (TestRunTCFlowerInVM:
// veth ports, VXLAN and Geneve devices, an IPv4 and IPv6 underlay).
func tcflowerDocumented(tunnels map[hal.EncapKind]string) []conformance.Difference {
	ds := []conformance.Difference{
		{Case: "priority", Capability: "priorities", Reason: tcflowerPriority},
		{Case: "malformed/vport", Capability: "exception path", Reason: tcflowerMalformed},
		{Case: "rules/batch", Capability: "max batch", Reason: tcflowerBatch},
	}
	if len(tunnels) == 0 {
		return ds
	}
	for _, f := range []string{"vni", "tun_src", "tun_dst", "tun_kind"} {
		ds = append(ds, conformance.Difference{Case: "match/" + f, Capability: "match " + f, Reason: tcflowerTunnelMatch})
	}
	for _, f := range []string{"tun_src", "tun_dst"} {
		ds = append(ds, conformance.Difference{Case: "masked/" + f, Capability: "masked " + f, Reason: tcflowerTunnelMatch})
	}
	ds = append(ds,
		conformance.Difference{Case: "action/decap", Capability: "tunnelled misses to the host", Reason: tcflowerTunnelledMiss},
		conformance.Difference{Case: "malformed/tunnelled", Capability: "exception path", Reason: tcflowerMalformedTun},
		conformance.Difference{Case: "counters/rule-decap", Capability: "counters per rule", Reason: tcflowerDecapCounter},
	)
	for _, k := range []hal.EncapKind{hal.EncapVXLAN, hal.EncapGeneve, hal.EncapNVGRE} {
		if _, ok := tunnels[k]; !ok {
			continue
		}
		for _, v := range []string{"ipv4", "ipv6"} {
			ds = append(ds, conformance.Difference{Case: "decap/" + k.String() + "/" + v, Capability: "tunnelled misses to the host", Reason: tcflowerTunnelledMiss})
		}
	}
	return ds
}

//go:build linux

package peerbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/safchain/ethtool"

	"github.com/nicpath/nicpath/agent"
	"github.com/nicpath/nicpath/drivers/tcflower"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/internal/nsexec"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/vswitch"
)

// Linux is the Config value of a plain Linux host: the kernel's VXLAN device
// and a bridge, no nicpath.
const Linux = "linux"

// TCFlowerRules is the Config value of a host whose NIC is the tc-flower
// driver programmed directly with the rules the vswitch would install for
// the bed's VMs (see rulesFor), without a vswitch: the driver's own path,
// which the VM tier checks beside the vswitch on tc-flower.
const TCFlowerRules = "tcflower-rules"

// The bed's addresses: provider addresses on the underlay, customer
// addresses inside the overlay (TEST-NET-1), and the VNI.
var (
	paA = netip.MustParseAddr("198.18.0.1")
	paB = netip.MustParseAddr("198.18.0.2")
	caA = netip.MustParseAddr("192.0.2.1")
	caB = netip.MustParseAddr("192.0.2.2")
	// The VMs' MACs (the policy's mapping MACs) and the uplinks' MACs.
	macA   = hal.MustMAC("02:70:00:00:00:0a")
	macB   = hal.MustMAC("02:70:00:00:00:0b")
	upMACA = hal.MustMAC("02:70:00:00:ff:01")
	upMACB = hal.MustMAC("02:70:00:00:ff:02")
)

// VNI is the overlay's virtual network.
const VNI = 5001

// OverlayMTU is the VMs' MTU: an encapsulated packet (50 bytes of VXLAN
// over IPv4) still fits the underlay's 1500 bytes.
const OverlayMTU = 1450

// policyYAML is the bed's desired state: two hosts, one VNET, a VM on each.
var policyYAML = fmt.Sprintf(`hosts:
  - name: host-a
    pa: %s
  - name: host-b
    pa: %s
tenants:
  - name: peer
    vnets:
      - name: net
        vni: %d
        subnets: [192.0.2.0/24]
        vms:
          - name: vm-a
            mac: %s
            ca: %s
            host: host-a
          - name: vm-b
            mac: %s
            ca: %s
            host: host-b
`, paA, paB, VNI, macA, caA, macB, caB)

// Config says what runs on each host.
type Config struct {
	// A and B are host-a's and host-b's: a nicpath driver (softnic, xdp or
	// tcflower) or Linux.
	A, B string
	// NAPI turns GRO on on the VMs' eth0 and on both uplinks, so that a
	// veth that receives XDP-redirected frames delivers them (see the
	// package doc). It is on by itself when either host runs xdp; a bed of
	// Linux hosts compared with one that has it sets it too, so that both
	// run the same topology.
	NAPI bool
	// Dir holds the policy and the vswitchds' configurations and control
	// sockets (a test's TempDir).
	Dir string
	// Logger receives the vswitchds' logs; nil discards them.
	Logger *slog.Logger
	// ACLs, when set, are the tenant's ACLs: YAML list items in the
	// policy format (policy/FORMAT.md), indented as the items of a
	// tenant's "acls:" (6 spaces before the dash).
	ACLs string
}

// VM is one VM of the bed.
type VM struct {
	Name string
	NS   string // its namespace, as a path (/run/netns/NAME)
	CA   netip.Addr
	MAC  hal.MAC
}

// Host is one host of the bed.
type Host struct {
	Name   string // host-a, host-b
	Kind   string // a driver name, or Linux
	NS     string // its namespace, as a path
	PA     netip.Addr
	Uplink hal.MAC
	// Daemon is the host's vswitchd; nil on a Linux host, on an OVS host
	// and on TCFlowerRules.
	Daemon *agent.Agent
	// OVS is an OVS host's daemons; nil on any other.
	OVS *OVSDaemons
	// NIC is the host's NIC (the vswitchd's, or the one TCFlowerRules
	// programs); nil on a Linux host.
	NIC      hal.NIC
	closeNIC bool // the bed opened NIC and closes it
}

// Bed is two hosts and their VMs (see the package doc).
type Bed struct {
	cfg     Config
	prefix  string
	created []string // namespaces, in creation order
	hosts   [2]*Host
	vms     [2]VM
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	once    sync.Once
	closeEr error
}

var bedSeq atomic.Uint32

// CanRun says whether this machine can build a bed, and if not why.
func CanRun() (bool, string) {
	if os.Geteuid() != 0 {
		return false, "not root: network namespaces need root"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return false, "iproute2's ip is not installed"
	}
	return true, ""
}

// New builds the bed and starts the vswitchds; it returns once they run.
// The caller closes the bed, also when a check fails.
func New(ctx context.Context, cfg Config) (_ *Bed, err error) {
	for _, k := range []string{cfg.A, cfg.B} {
		switch k {
		case "softnic", "xdp", "tcflower", TCFlowerRules, Linux, OVS:
		default:
			return nil, fmt.Errorf("peerbed: unknown host kind %q (want softnic, xdp, tcflower, %s, %s or %s)", k, TCFlowerRules, Linux, OVS)
		}
	}
	if err := ovsPairs(cfg); err != nil {
		return nil, err
	}
	if cfg.Dir == "" {
		return nil, errors.New("peerbed: no Dir")
	}
	if cfg.A == "xdp" || cfg.B == "xdp" {
		cfg.NAPI = true
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	b := &Bed{cfg: cfg, prefix: fmt.Sprintf("npb%d-%d-", os.Getpid()%100000, bedSeq.Add(1))}
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	b.hosts[0] = &Host{Name: "host-a", Kind: cfg.A, NS: b.nsPath("ha"), PA: paA, Uplink: upMACA}
	b.hosts[1] = &Host{Name: "host-b", Kind: cfg.B, NS: b.nsPath("hb"), PA: paB, Uplink: upMACB}
	b.vms[0] = VM{Name: "vm-a", NS: b.nsPath("va"), CA: caA, MAC: macA}
	b.vms[1] = VM{Name: "vm-b", NS: b.nsPath("vb"), CA: caB, MAC: macB}
	for _, r := range []string{"ha", "hb", "va", "vb"} {
		if err := b.addNS(r); err != nil {
			return nil, err
		}
	}
	ha, hb := b.ns("ha"), b.ns("hb")
	// The underlay cable.
	if err := b.ip("-n", ha, "link", "add", "up0", "address", upMACA.String(), "type", "veth",
		"peer", "name", "up0", "address", upMACB.String(), "netns", hb); err != nil {
		return nil, err
	}
	for i := range 2 {
		if err := b.addVM(i); err != nil {
			return nil, err
		}
	}
	for i := range 2 {
		h, peer := b.hosts[i], b.hosts[1-i]
		hns := b.ns([]string{"ha", "hb"}[i])
		if err := b.ip("-n", hns, "link", "set", "up0", "up"); err != nil {
			return nil, err
		}
		if cfg.NAPI {
			if err := gro(h.NS, "up0"); err != nil {
				return nil, err
			}
		}
		if h.Kind == Linux || isTCFlower(h.Kind) {
			// The kernel writes the outer headers: it needs the uplink's
			// address, and the peer's MAC for the peer's PA (a nicpath
			// uplink answers no ARP).
			for _, args := range [][]string{
				{"-n", hns, "addr", "replace", netip.PrefixFrom(h.PA, 24).String(), "dev", "up0"},
				{"-n", hns, "neigh", "replace", peer.PA.String(), "lladdr", peer.Uplink.String(), "dev", "up0", "nud", "permanent"},
			} {
				if err := b.ip(args...); err != nil {
					return nil, err
				}
			}
		}
		switch h.Kind {
		case Linux:
			err = b.linuxHost(hns, h, peer)
		case OVS:
			err = b.ovsHost(ctx, hns, h, peer, b.vms[i], b.vms[1-i])
		case "tcflower", TCFlowerRules:
			// The driver's flow-based tunnel device.
			err = b.ip("-n", hns, "link", "add", "vx0", "type", "vxlan", "external", "dstport", "4789")
			if err == nil {
				err = b.ip("-n", hns, "link", "set", "vx0", "up")
			}
		}
		if err != nil {
			return nil, err
		}
	}
	doc := policyYAML
	if cfg.ACLs != "" {
		doc += "    acls:\n" + strings.TrimRight(cfg.ACLs, "\n") + "\n"
	}
	if err := os.WriteFile(filepath.Join(cfg.Dir, "policy.yaml"), []byte(doc), 0o644); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.cancel = cancel
	for i, h := range b.hosts {
		var err error
		switch h.Kind {
		case Linux, OVS:
		case TCFlowerRules:
			err = b.programTCFlower(ctx, h, b.hosts[1-i], b.vms[i], b.vms[1-i])
		default:
			err = b.startDaemon(ctx, rctx, h, b.hosts[1-i], b.vms[i])
		}
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

func isTCFlower(kind string) bool { return kind == "tcflower" || kind == TCFlowerRules }

// The port IDs of a NIC the bed programs itself.
const (
	portVM     hal.PortID = 1
	portUplink hal.PortID = 2
)

// rulesFor are the rules the vswitch would install on h for traffic
// between its VM and the peer's: outbound, its per-destination rule
// (vswitch's Proactive shape: in_port, source MAC, both IPv4 addresses →
// the destination's MAC, VXLAN toward the peer's PA, out of the uplink);
// inbound, the decapsulation of VXLAN from the peer's PA for its VM (the
// unified flow's match without the L4 ports → decap, out of the vport).
func rulesFor(h, peer *Host, vm, other VM) []hal.Rule {
	var out, in hal.Match
	out.InPort(portVM).EthSrc(vm.MAC).IPSrc(netip.PrefixFrom(vm.CA, 32)).IPDst(netip.PrefixFrom(other.CA, 32))
	in.InPort(portUplink).Tunnel(hal.EncapVXLAN, VNI).TunSrc(peer.PA).TunDst(h.PA).EthDst(vm.MAC).IPDst(netip.PrefixFrom(vm.CA, 32))
	e := hal.Encap{Kind: hal.EncapVXLAN, VNI: VNI, Src: h.PA, Dst: peer.PA, SrcMAC: h.Uplink, DstMAC: peer.Uplink}
	return []hal.Rule{
		{ID: 1, Priority: 0x4000, Match: out, Actions: []hal.Action{hal.SetEthDst(other.MAC), hal.EncapWith(e), hal.Count(), hal.Output(portUplink)}},
		{ID: 2, Priority: 0x4000, Match: in, Actions: []hal.Action{hal.Decap(), hal.Count(), hal.Output(portVM)}},
	}
}

// programTCFlower opens the tc-flower driver on h's interfaces and
// programs rulesFor.
func (b *Bed) programTCFlower(ctx context.Context, h, peer *Host, vm, other VM) error {
	n, err := tcflower.Open(ctx, tcflower.Config{NetNS: h.NS, Tunnels: map[hal.EncapKind]string{hal.EncapVXLAN: "vx0"},
		Ports: []tcflower.PortConfig{{ID: portVM, Name: "vp0", Kind: hal.PortVPort}, {ID: portUplink, Name: "up0", Kind: hal.PortUplink}}})
	if err != nil {
		return fmt.Errorf("peerbed: %s: opening tcflower: %w", h.Name, err)
	}
	h.NIC, h.closeNIC = n, true
	rules := rulesFor(h, peer, vm, other)
	ops := make([]hal.Op, len(rules))
	for i, r := range rules {
		if err := n.Validate(&r); err != nil {
			return fmt.Errorf("peerbed: %s: tcflower refuses the rule %v: %w", h.Name, &r.Match, err)
		}
		ops[i] = hal.AddOp(r)
	}
	res := make([]hal.OpResult, len(ops))
	if err := n.Apply(ctx, ops, res); err != nil {
		return fmt.Errorf("peerbed: %s: programming tcflower: %w", h.Name, err)
	}
	return nil
}

// linuxHost makes h a plain Linux host: the kernel's VXLAN device toward
// the peer and a bridge joining it to the VM's port.
func (b *Bed) linuxHost(hns string, h, peer *Host) error {
	for _, args := range [][]string{
		{"-n", hns, "link", "add", "vx0", "type", "vxlan", "id", fmt.Sprint(VNI), "local", h.PA.String(),
			"remote", peer.PA.String(), "dstport", "4789", "dev", "up0"},
		{"-n", hns, "link", "add", "br0", "type", "bridge"},
		{"-n", hns, "link", "set", "vx0", "master", "br0"},
		{"-n", hns, "link", "set", "vp0", "master", "br0"},
		{"-n", hns, "link", "set", "vx0", "up"},
		{"-n", hns, "link", "set", "br0", "up"},
	} {
		if err := b.ip(args...); err != nil {
			return err
		}
	}
	return nil
}

// addVM makes VM i's namespace: eth0 with the policy's MAC and address
// (and the overlay's MTU), a veth into its host's namespace (vp0), and a
// permanent neighbour entry for the other VM.
func (b *Bed) addVM(i int) error {
	vm, other := b.vms[i], b.vms[1-i]
	hns, vns := b.ns([]string{"ha", "hb"}[i]), b.ns([]string{"va", "vb"}[i])
	for _, args := range [][]string{
		{"-n", hns, "link", "add", "vp0", "mtu", fmt.Sprint(OverlayMTU), "type", "veth",
			"peer", "name", "eth0", "address", vm.MAC.String(), "mtu", fmt.Sprint(OverlayMTU), "netns", vns},
		{"-n", vns, "addr", "replace", netip.PrefixFrom(vm.CA, 24).String(), "dev", "eth0"},
		{"-n", vns, "link", "set", "eth0", "up"},
		{"-n", hns, "link", "set", "vp0", "up"},
		{"-n", vns, "neigh", "replace", other.CA.String(), "lladdr", other.MAC.String(), "dev", "eth0", "nud", "permanent"},
	} {
		if err := b.ip(args...); err != nil {
			return err
		}
	}
	if b.cfg.NAPI {
		return gro(vm.NS, "eth0")
	}
	return nil
}

// startDaemon runs a vswitchd for h in this process, on h's interfaces.
func (b *Bed) startDaemon(ctx, rctx context.Context, h, peer *Host, vm VM) error {
	dcfg := &agent.Config{
		File: filepath.Join(b.cfg.Dir, h.Name+".yaml"), Host: h.Name, Driver: h.Kind,
		Policy: filepath.Join(b.cfg.Dir, "policy.yaml"), Uplink: "up0", Ports: map[string]string{vm.Name: "vp0"},
		Control: filepath.Join(b.cfg.Dir, h.Name+".sock"), LogLevel: slog.LevelWarn,
		NextHopMAC: peer.Uplink, WatchInterval: time.Hour, NetNS: h.NS, Logger: b.cfg.Logger,
	}
	switch h.Kind {
	case "softnic":
		dcfg.Binding = agent.BindAFPacket
	case "tcflower":
		dcfg.Tunnels = map[hal.EncapKind]string{hal.EncapVXLAN: "vx0"}
	}
	d, err := agent.New(ctx, dcfg)
	if err != nil {
		return fmt.Errorf("peerbed: %s's vswitchd (%s): %w", h.Name, h.Kind, err)
	}
	h.Daemon, h.NIC = d, d.NIC()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		if err := d.Run(rctx); err != nil {
			b.cfg.Logger.Error("vswitchd stopped", "host", h.Name, "err", err)
		}
	}()
	return nil
}

// gro turns GRO on on dev in the namespace at ns: a veth then runs NAPI,
// which it needs to deliver frames its peer received by XDP redirect.
// Turning a feature on is all the bed ever does to offloads.
func gro(ns, dev string) error {
	return nsexec.Do(ns, func() error {
		e, err := ethtool.NewEthtool()
		if err != nil {
			return err
		}
		defer e.Close()
		if err := e.Change(dev, map[string]bool{"rx-gro": true}); err != nil {
			return fmt.Errorf("peerbed: GRO on %s: %w", dev, err)
		}
		return nil
	})
}

// Hosts returns host-a and host-b.
func (b *Bed) Hosts() [2]*Host { return b.hosts }

// VMs returns vm-a (on host-a) and vm-b (on host-b).
func (b *Bed) VMs() [2]VM { return b.vms }

// Policy is the bed's desired state.
func Policy() (*policy.State, error) { return policy.Parse("peerbed.yaml", []byte(policyYAML)) }

// Close stops the vswitchds and deletes every namespace the bed made. It
// may be called more than once.
func (b *Bed) Close() error {
	b.once.Do(func() {
		if b.cancel != nil {
			b.cancel()
		}
		b.wg.Wait()
		var errs []error
		for _, h := range b.hosts {
			if h != nil && h.Daemon != nil {
				errs = append(errs, h.Daemon.Close())
			}
			if h != nil && h.closeNIC {
				errs = append(errs, h.NIC.Close())
			}
			if h != nil && h.OVS != nil {
				errs = append(errs, h.OVS.Close())
			}
		}
		for i := len(b.created) - 1; i >= 0; i-- {
			if err := b.ip("netns", "del", b.created[i]); err != nil {
				errs = append(errs, err)
			}
		}
		b.closeEr = errors.Join(errs...)
	})
	return b.closeEr
}

func (b *Bed) ns(role string) string     { return b.prefix + role }
func (b *Bed) nsPath(role string) string { return filepath.Join("/run/netns", b.ns(role)) }

func (b *Bed) addNS(role string) error {
	name := b.ns(role)
	if err := b.ip("netns", "add", name); err != nil {
		return err
	}
	b.created = append(b.created, name)
	// IPv6 off before any interface exists: router solicitations and MLD
	// reports would be exception-path noise, and the bed is about IPv4.
	err := nsexec.Do(b.nsPath(role), func() error {
		for _, k := range []string{"all", "default"} {
			// /proc/sys/net is the opening thread's namespace's.
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+k+"/disable_ipv6", []byte("1"), 0o644); err != nil {
				return fmt.Errorf("peerbed: IPv6 off in %s: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return b.ip("-n", name, "link", "set", "lo", "up")
}

func (b *Bed) ip(args ...string) error { return run("ip", args...) }

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Report describes what the hosts counted, for a failed check's log: on a
// nicpath host the NIC's exceptions and drops by reason, its ports'
// counters and the switch's flows, fallbacks and drops; on a Linux host the
// interfaces' statistics.
func (b *Bed) Report(ctx context.Context) string {
	// A report is asked for when something failed, often because ctx ran
	// out: it gets a few seconds of its own.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var sb strings.Builder
	for _, h := range b.hosts {
		fmt.Fprintf(&sb, "%s (%s):\n", h.Name, h.Kind)
		if h.NIC == nil {
			out, err := exec.Command("ip", "-n", filepath.Base(h.NS), "-j", "-s", "link", "show").Output()
			var links []struct {
				Name  string `json:"ifname"`
				Stats struct {
					Rx, Tx struct{ Packets, Bytes, Errors, Dropped uint64 }
				} `json:"stats64"`
			}
			if err == nil {
				err = json.Unmarshal(out, &links)
			}
			if err != nil {
				fmt.Fprintf(&sb, "  ip -s link: %v\n", err)
			}
			for _, l := range links {
				if l.Name == "lo" {
					continue
				}
				r, t := l.Stats.Rx, l.Stats.Tx
				fmt.Fprintf(&sb, "  %s: rx %d pkts %d bytes (%d errors, %d dropped), tx %d pkts %d bytes (%d errors, %d dropped)\n",
					l.Name, r.Packets, r.Bytes, r.Errors, r.Dropped, t.Packets, t.Bytes, t.Errors, t.Dropped)
			}
			if h.OVS != nil {
				sb.WriteString(h.OVS.report(ctx))
			}
			continue
		}
		nic := h.NIC
		if st, err := nic.Stats(ctx); err == nil {
			for r := hal.Reason(0); r < hal.NumReasons; r++ {
				if st.Exceptions[r] != 0 || st.Drops[r] != 0 {
					fmt.Fprintf(&sb, "  nic %-12s exceptions %d drops %d\n", r, st.Exceptions[r], st.Drops[r])
				}
			}
		}
		for _, p := range nic.Ports() {
			if c, err := nic.PortCounters(ctx, p.ID); err == nil {
				fmt.Fprintf(&sb, "  port %d %s: rx %d pkts %d bytes, tx %d pkts %d bytes, drops %d, exceptions %d\n",
					p.ID, p.Name, c.Rx.Packets, c.Rx.Bytes, c.Tx.Packets, c.Tx.Bytes, c.Drops, c.Exceptions)
			}
		}
		s := h.Daemon.Switch().Stats()
		fmt.Fprintf(&sb, "  switch: exceptions handled %d, flows %d (nic %d, host %d), created %d, offloaded %d, injected %d, op errors %d\n",
			s.Packets, s.Flows, s.FlowsNIC, s.FlowsHost, s.FlowsCreated, s.Offloaded, s.Injected, s.OpErrors)
		if h.Daemon == nil {
			continue
		}
		// The flows the NIC did not take, and why (at most a few).
		shown := 0
		for _, f := range h.Daemon.Switch().Flows() {
			if f.Path == vswitch.PathNIC || shown == 4 {
				continue
			}
			shown++
			acts := make([]string, len(f.Actions))
			for i, a := range f.Actions {
				acts[i] = a.String()
			}
			fmt.Fprintf(&sb, "  flow in the %v (%v: %v): %v → %s\n", f.Path, f.Why, f.Err, &f.Match, strings.Join(acts, ", "))
		}
		for _, m := range []struct {
			name string
			m    map[string]uint64
		}{{"fallbacks", s.Fallbacks}, {"drops", s.Drops}, {"policy drops", s.PolicyDrops}, {"to host", s.ToHost}} {
			if len(m.m) > 0 {
				fmt.Fprintf(&sb, "  switch %s: %v\n", m.name, m.m)
			}
		}
	}
	for _, vm := range b.vms {
		c, err := SNMP(vm)
		if err != nil {
			fmt.Fprintf(&sb, "%s: %v\n", vm.Name, err)
			continue
		}
		fmt.Fprintf(&sb, "%s: %s\n", vm.Name, c.Summary())
	}
	return sb.String()
}

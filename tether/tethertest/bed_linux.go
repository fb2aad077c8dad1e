//go:build linux

package tethertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"

	"github.com/nicpath/nicpath/agent"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/internal/nsexec"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/securechan"
	"github.com/nicpath/nicpath/store"
	"github.com/nicpath/nicpath/tether"
	"github.com/nicpath/nicpath/tether/lease"
)

// The bed's addresses.
var (
	PAHostA  = netip.MustParseAddr("198.18.0.1")
	PAHostB  = netip.MustParseAddr("198.18.0.2")
	PAAnchor = netip.MustParseAddr("198.18.0.10")
	ulAnchor = netip.MustParseAddr("198.18.0.254") // the underlay router toward the anchor

	AnchorPublic = netip.MustParseAddr("203.0.113.1")
	NATPublic    = netip.MustParseAddr("203.0.113.2")
	NATPublic2   = netip.MustParseAddr("203.0.113.3") // after ChangeNATAddress
	ForgerAddr   = netip.MustParseAddr("203.0.113.66")
	natInside    = netip.MustParseAddr("198.51.100.1")
	tetherWAN    = netip.MustParseAddr("198.51.100.2")

	VMA = netip.MustParseAddr("10.0.0.10")
	VMB = netip.MustParseAddr("10.0.0.11")

	RelocatedPrefix = netip.MustParsePrefix("10.0.1.0/24")
)

// TunnelPort is the anchor's public UDP port.
const TunnelPort = 51820

// VNI of the bed's VNET.
const VNI = 1001

// DeniedPort is a TCP port the policy's ACL closes to the relocated subnet
// (direction in, on the data center's VMs): the anchor's walk must not
// weaken the tenant's ACLs.
const DeniedPort = 23

var (
	macVMA = policy.MAC{0x02, 0, 0, 0x0b, 0, 0x0a}
	macVMB = policy.MAC{0x02, 0, 0, 0x0b, 0, 0x0b}
)

func routerMAC(i int) hal.MAC   { return hal.MAC{0x02, 0xfe, 0, 0, 0, byte(i + 1)} }
func uplinkMACOf(i int) hal.MAC { return hal.MAC{0x02, 0xfd, 0, 0, 0, byte(i + 1)} }

// Options tune a Bed.
type Options struct {
	Dir    string // for the policy, the configuration and the control sockets
	Logger *slog.Logger
	// Probe and Keepalive are the tether's timers (the package defaults if
	// zero).
	Probe, Keepalive time.Duration
}

// Bed is the running topology.
type Bed struct {
	opt    Options
	prefix string
	log    *slog.Logger

	created []string
	State   *policy.State
	Config  *tether.Config
	Sub     *tether.Relocated
	KV      *store.Memory // the store the leases are kept in

	anchorKey, tetherKey securechan.PrivateKey

	cancel  context.CancelFunc
	wg      sync.WaitGroup
	daemons map[string]*agent.Agent

	Anchor     *tether.Anchor
	Overlay    *tether.Overlay
	AnchorNode *tether.AnchorNode

	tmu  sync.Mutex
	site *siteRun
}

// siteRun is one run of the tether (its tunnel, site, broker), which
// RestartTether replaces.
type siteRun struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	node   *tether.TetherNode
	Tether *tether.Tether
	Site   *tether.Site
	Broker *lease.Broker
	rec    *recorder
}

// recorder is the tether's socket, keeping what it sent so that the forger
// can replay it.
type recorder struct {
	*net.UDPConn
	mu   sync.Mutex
	sent [][]byte
}

func (r *recorder) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	r.mu.Lock()
	if len(r.sent) < 4096 {
		r.sent = append(r.sent, bytes.Clone(b))
	}
	r.mu.Unlock()
	return r.UDPConn.WriteToUDPAddrPort(b, to)
}

// CanRun says whether the bed can run here.
func CanRun() (bool, string) {
	if os.Geteuid() != 0 {
		return false, "not root: network namespaces need root"
	}
	for _, t := range []string{"ip", "nft", "conntrack", "ping"} {
		if _, err := exec.LookPath(t); err != nil {
			return false, t + " is not installed (scripts/install-deps.sh)"
		}
	}
	return true, ""
}

// NSPath returns the path of one of the bed's namespaces: host-a, host-b,
// vm-a, vm-b, ul, anchor, inet, nat, forger, tether, n1, n2.
func (b *Bed) NSPath(name string) string { return filepath.Join("/run/netns", b.prefix+name) }

func (b *Bed) run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func (b *Bed) ip(args ...string) error { _, err := b.run("ip", args...); return err }

// In runs a command in one of the bed's namespaces.
func (b *Bed) In(ns string, args ...string) (string, error) {
	return b.run("ip", append([]string{"netns", "exec", b.prefix + ns}, args...)...)
}

func (b *Bed) addNS(name string) error {
	full := b.prefix + name
	if err := b.ip("netns", "add", full); err != nil {
		return err
	}
	b.created = append(b.created, full)
	for _, k := range []string{"all", "default"} {
		if _, err := b.In(name, "sysctl", "-qw", "net.ipv6.conf."+k+".disable_ipv6=1"); err != nil {
			return err
		}
	}
	return b.ip("-n", full, "link", "set", "lo", "up")
}

func (b *Bed) ipAll(cmds [][]string) error {
	for _, c := range cmds {
		for i, a := range c {
			if a == "-n" && i+1 < len(c) {
				c[i+1] = b.prefix + c[i+1]
			}
		}
		if err := b.ip(c...); err != nil {
			return err
		}
	}
	return nil
}

// New builds the bed and starts everything; the nodes have no address yet
// (see DHCP).
func New(ctx context.Context, o Options) (_ *Bed, err error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	b := &Bed{opt: o, log: o.Logger, prefix: fmt.Sprintf("tt%d-", os.Getpid()%100000), daemons: map[string]*agent.Agent{}, KV: store.NewMemory()}
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	_, b.anchorKey, _ = securechan.GenerateKey(rand.Reader)
	_, b.tetherKey, _ = securechan.GenerateKey(rand.Reader)
	if err := b.policy(); err != nil {
		return nil, err
	}
	if err := b.network(); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.cancel = cancel
	if err := b.startHosts(ctx, rctx); err != nil {
		return nil, err
	}
	if err := b.startAnchor(rctx); err != nil {
		return nil, err
	}
	if err := b.StartTether(); err != nil {
		return nil, err
	}
	return b, nil
}

// ConfigYAML is the relocated-subnet configuration the bed runs on: what
// only the two ends know (the anchor's endpoint and key, the tether's key
// and ports); the subnet itself is the policy's (BuildPolicy).
func (b *Bed) ConfigYAML() string {
	return fmt.Sprintf(`relocated_subnets:
  - name: branch
    lease_time: 1h
    anchor:
      endpoint: %s
      key: %s
    tether:
      key: %s
      ports: [p1, p2]
`, netip.AddrPortFrom(AnchorPublic, TunnelPort), b.anchorKey.Public(), b.tetherKey.Public())
}

func durOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func (b *Bed) policy() error {
	cfgPath := filepath.Join(b.opt.Dir, "relocated.yaml")
	if err := os.WriteFile(cfgPath, []byte(b.ConfigYAML()), 0o644); err != nil {
		return err
	}
	cfg, err := tether.LoadConfig(cfgPath)
	if err != nil {
		return err
	}
	b.Config = cfg
	st, err := b.BuildPolicy()
	if err != nil {
		return err
	}
	b.State = st
	b.Sub, _ = cfg.Find("branch")
	data, err := policy.Marshal(st)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(b.opt.Dir, "policy.yaml"), data, 0o644)
}

// BuildPolicy builds the bed's policy, with extra ACLs added.
func (b *Bed) BuildPolicy(extra ...policy.ACL) (*policy.State, error) {
	pb := policy.NewBuilder()
	pb.AddHost(policy.Host{Name: "host-a", PA: PAHostA})
	pb.AddHost(policy.Host{Name: "host-b", PA: PAHostB})
	pb.AddHost(policy.Host{Name: "anchor", PA: PAAnchor})
	pb.AddTenant(policy.Tenant{Name: "blue"})
	pb.AddVNET(policy.VNET{Tenant: "blue", Name: "web", VNI: VNI, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), RelocatedPrefix}})
	pb.AddVM(policy.VM{Name: "blue-a", Tenant: "blue", VNET: "web", MAC: macVMA, CAs: []netip.Addr{VMA}, Host: "host-a"})
	pb.AddVM(policy.VM{Name: "blue-b", Tenant: "blue", VNET: "web", MAC: macVMB, CAs: []netip.Addr{VMB}, Host: "host-b"})
	// The relocated subnet: the policy compiles its pool into mappings
	// to the anchor's PA, which every vswitchd following it installs.
	pb.AddRelocated(policy.Relocated{Name: "branch", Tenant: "blue", VNET: "web", Prefix: RelocatedPrefix,
		Gateway: netip.MustParseAddr("10.0.1.1"), PoolFirst: netip.MustParseAddr("10.0.1.10"), PoolLast: netip.MustParseAddr("10.0.1.19"),
		Anchor: "anchor", Tether: policy.Tether{Name: "branch-1", Key: b.tetherKey.Public(),
			Keepalive: durOr(b.opt.Keepalive, tether.DefaultKeepalive), Probe: durOr(b.opt.Probe, tether.DefaultProbe)}})
	pb.AddACL(policy.ACL{Tenant: "blue", ID: "no-telnet-from-branch", Priority: 10, Direction: policy.In,
		Src: []netip.Prefix{RelocatedPrefix}, Protocol: policy.ProtoTCP, DstPorts: []policy.PortRange{{Lo: DeniedPort, Hi: DeniedPort}}, Action: policy.Deny})
	for _, a := range extra {
		pb.AddACL(a)
	}
	st, err := pb.Build()
	if err != nil {
		return nil, err
	}
	if err := b.Config.CheckPolicy(st); err != nil {
		return nil, err
	}
	return st, nil
}

func (b *Bed) network() error {
	for _, n := range []string{"ul", "host-a", "host-b", "vm-a", "vm-b", "anchor", "inet", "nat", "forger", "tether", "n1", "n2"} {
		if err := b.addNS(n); err != nil {
			return err
		}
	}
	for _, ns := range []string{"ul", "nat"} {
		for _, k := range []string{"net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"} {
			if _, err := b.In(ns, "sysctl", "-qw", k); err != nil {
				return err
			}
		}
	}
	// The data center's routed underlay: the vswitchds' uplinks carry no
	// address and answer no ARP, so the router knows them statically.
	var cmds [][]string
	for i, h := range []struct {
		name string
		pa   netip.Addr
	}{{"host-a", PAHostA}, {"host-b", PAHostB}} {
		rif := "ul-" + h.name
		cmds = append(cmds,
			[]string{"-n", "ul", "link", "add", rif, "address", routerMAC(i).String(), "type", "veth", "peer", "name", "up0", "address", uplinkMACOf(i).String(), "netns", b.prefix + h.name},
			[]string{"-n", "ul", "link", "set", rif, "up"},
			[]string{"-n", h.name, "link", "set", "up0", "up"},
			[]string{"-n", "ul", "route", "replace", h.pa.String() + "/32", "dev", rif},
			[]string{"-n", "ul", "neigh", "replace", h.pa.String(), "lladdr", uplinkMACOf(i).String(), "dev", rif, "nud", "permanent"},
		)
	}
	ancMAC, ulAncMAC := hal.MAC{0x02, 0xfd, 0, 0, 0, 0x10}, routerMAC(9)
	cmds = append(cmds,
		[]string{"-n", "ul", "link", "add", "ul-anchor", "address", ulAncMAC.String(), "type", "veth", "peer", "name", "dc0", "address", ancMAC.String(), "netns", b.prefix + "anchor"},
		[]string{"-n", "ul", "addr", "replace", ulAnchor.String() + "/32", "dev", "ul-anchor"},
		[]string{"-n", "ul", "link", "set", "ul-anchor", "up"},
		[]string{"-n", "ul", "route", "replace", PAAnchor.String() + "/32", "dev", "ul-anchor"},
		[]string{"-n", "ul", "neigh", "replace", PAAnchor.String(), "lladdr", ancMAC.String(), "dev", "ul-anchor", "nud", "permanent"},
		[]string{"-n", "anchor", "addr", "replace", PAAnchor.String() + "/32", "dev", "dc0"},
		[]string{"-n", "anchor", "link", "set", "dc0", "up"},
		[]string{"-n", "anchor", "route", "replace", ulAnchor.String() + "/32", "dev", "dc0"},
		[]string{"-n", "anchor", "route", "replace", "198.18.0.0/24", "via", ulAnchor.String()},
		[]string{"-n", "anchor", "neigh", "replace", ulAnchor.String(), "lladdr", ulAncMAC.String(), "dev", "dc0", "nud", "permanent"},
	)
	// The outside: a bridge joining the anchor, the NAT and a forger.
	cmds = append(cmds, []string{"-n", "inet", "link", "add", "br0", "type", "bridge"}, []string{"-n", "inet", "link", "set", "br0", "up"})
	for _, e := range []struct {
		ns, port, dev string
		addr          netip.Addr
	}{{"anchor", "i-anchor", "wan0", AnchorPublic}, {"nat", "i-nat", "out0", NATPublic}, {"forger", "i-forger", "eth0", ForgerAddr}} {
		cmds = append(cmds,
			[]string{"-n", "inet", "link", "add", e.port, "type", "veth", "peer", "name", e.dev, "netns", b.prefix + e.ns},
			[]string{"-n", "inet", "link", "set", e.port, "master", "br0", "up"},
			[]string{"-n", e.ns, "addr", "replace", e.addr.String() + "/24", "dev", e.dev},
			[]string{"-n", e.ns, "link", "set", e.dev, "up"},
		)
	}
	// The remote site behind the NAT.
	cmds = append(cmds,
		[]string{"-n", "nat", "link", "add", "in0", "type", "veth", "peer", "name", "wan0", "netns", b.prefix + "tether"},
		[]string{"-n", "nat", "addr", "replace", natInside.String() + "/24", "dev", "in0"},
		[]string{"-n", "nat", "link", "set", "in0", "up"},
		[]string{"-n", "tether", "addr", "replace", tetherWAN.String() + "/24", "dev", "wan0"},
		[]string{"-n", "tether", "link", "set", "wan0", "up"},
		[]string{"-n", "tether", "route", "replace", "default", "via", natInside.String()},
	)
	for i, n := range []string{"n1", "n2"} {
		p := fmt.Sprintf("p%d", i+1)
		cmds = append(cmds,
			[]string{"-n", "tether", "link", "add", p, "type", "veth", "peer", "name", "eth0", "netns", b.prefix + n},
			[]string{"-n", "tether", "link", "set", p, "up"},
			[]string{"-n", n, "link", "set", "eth0", "up"},
		)
	}
	if err := b.ipAll(cmds); err != nil {
		return err
	}
	if err := b.nat("masquerade fully-random"); err != nil {
		return err
	}
	// The data center's VMs.
	for _, v := range []struct {
		name, host, ns string
		mac            policy.MAC
		ca             netip.Addr
	}{{"blue-a", "host-a", "vm-a", macVMA, VMA}, {"blue-b", "host-b", "vm-b", macVMB, VMB}} {
		hif := "v-" + v.name
		cmds := [][]string{
			{"-n", v.host, "link", "add", hif, "type", "veth", "peer", "name", "eth0", "netns", b.prefix + v.ns},
			{"-n", v.host, "link", "set", hif, "mtu", "1450", "up"},
			{"-n", v.ns, "link", "set", "eth0", "address", hal.MAC(v.mac).String(), "mtu", "1450", "up"},
			// One on-link /23: the VNET's two subnets, the relocated one
			// included (the vswitch does not answer ARP: static
			// neighbours, as for any peer).
			{"-n", v.ns, "addr", "replace", netip.PrefixFrom(v.ca, 23).String(), "dev", "eth0"},
		}
		for _, vm := range b.State.VMs() {
			if vm.CAs[0] != v.ca {
				cmds = append(cmds, []string{"-n", v.ns, "neigh", "replace", vm.CAs[0].String(), "lladdr", hal.MAC(vm.MAC).String(), "dev", "eth0", "nud", "permanent"})
			}
		}
		if err := b.ipAll(cmds); err != nil {
			return err
		}
	}
	return nil
}

// nat (re)writes the NAT's ruleset: masquerade with the given statement
// toward the outside.
func (b *Bed) nat(stmt string) error {
	rules := fmt.Sprintf("flush ruleset\ntable ip nat {\n chain post {\n  type nat hook postrouting priority srcnat; policy accept;\n  oifname \"out0\" %s\n }\n}\n", stmt)
	cmd := exec.Command("ip", "netns", "exec", b.prefix+"nat", "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %v: %s", err, out)
	}
	return nil
}

func (b *Bed) startHosts(ctx, rctx context.Context) error {
	for i, h := range []string{"host-a", "host-b"} {
		vm := map[string]string{"host-a": "blue-a", "host-b": "blue-b"}[h]
		cfg := &agent.Config{File: filepath.Join(b.opt.Dir, h+".yaml"), Host: h, Driver: "softnic", Binding: agent.BindAFPacket,
			Policy: filepath.Join(b.opt.Dir, "policy.yaml"), Uplink: "up0", Ports: map[string]string{vm: "v-" + vm},
			Control: filepath.Join(b.opt.Dir, h+".sock"), LogLevel: slog.LevelWarn, NextHopMAC: routerMAC(i),
			WatchInterval: time.Second, NetNS: b.NSPath(h), Logger: b.log}
		d, err := agent.New(ctx, cfg)
		if err != nil {
			return fmt.Errorf("tethertest: %s's vswitchd: %w", h, err)
		}
		b.daemons[h] = d
		b.wg.Add(1)
		go func() { defer b.wg.Done(); d.Run(rctx) }()
	}
	return nil
}

func (b *Bed) startAnchor(rctx context.Context) error {
	var n *tether.AnchorNode
	err := nsexec.Do(b.NSPath("anchor"), func() (err error) {
		n, err = tether.StartAnchorNode(rctx, tether.AnchorNodeOptions{Config: b.Config, Host: b.Sub.AnchorHost, State: b.State,
			Key: b.anchorKey, Logger: b.log})
		return err
	})
	if err != nil {
		return fmt.Errorf("tethertest: anchor: %w", err)
	}
	b.Anchor, b.Overlay, b.AnchorNode = n.Anchor, n.Overlay, n
	b.wg.Add(1)
	go func() { defer b.wg.Done(); n.Wait() }()
	return nil
}

// StartTether starts the tether (tunnel, site ports, lease broker on the
// bed's store); RestartTether stops and starts it again.
func (b *Bed) StartTether() error {
	b.tmu.Lock()
	defer b.tmu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	sr := &siteRun{cancel: cancel}
	var n *tether.TetherNode
	err := nsexec.Do(b.NSPath("tether"), func() error {
		conn, err := net.ListenUDP("udp4", nil)
		if err != nil {
			return err
		}
		sr.rec = &recorder{UDPConn: conn}
		n, err = tether.StartTetherNode(ctx, tether.TetherNodeOptions{Config: b.Config, Subnet: b.Sub.Name, VNI: VNI,
			Key: b.tetherKey, KV: b.KV, Conn: sr.rec, Logger: b.log})
		if err != nil {
			conn.Close()
		}
		return err
	})
	if err != nil {
		cancel()
		return fmt.Errorf("tethertest: tether: %w", err)
	}
	sr.Tether, sr.Site, sr.Broker, sr.node = n.Tether, n.Site, n.Broker, n
	sr.wg.Add(1)
	go func() { defer sr.wg.Done(); n.Wait() }()
	b.site = sr
	return nil
}

// StopTether stops the tether; its leases stay in the store.
func (b *Bed) StopTether() {
	b.tmu.Lock()
	defer b.tmu.Unlock()
	if b.site != nil {
		b.site.cancel()
		b.site.wg.Wait()
		b.site = nil
	}
}

// RestartTether stops the tether and starts a new one on the same store.
func (b *Bed) RestartTether() error {
	b.StopTether()
	return b.StartTether()
}

// Tether returns the running tether's parts.
func (b *Bed) Tether() (*tether.Tether, *tether.Site, *lease.Broker) {
	b.tmu.Lock()
	defer b.tmu.Unlock()
	if b.site == nil {
		return nil, nil, nil
	}
	return b.site.Tether, b.site.Site, b.site.Broker
}

// TetherNode returns the running tether.
func (b *Bed) TetherNode() *tether.TetherNode {
	b.tmu.Lock()
	defer b.tmu.Unlock()
	if b.site == nil {
		return nil
	}
	return b.site.node
}

// ServeControl serves the anchor's and the tether's control sockets
// (what vswitchctl tether and leases read) until ctx is done.
func (b *Bed) ServeControl(ctx context.Context, anchorSock, tetherSock string) {
	go tether.ServeControl(ctx, anchorSock, tether.ControlHandler{Status: b.AnchorNode.Status})
	go tether.ServeControl(ctx, tetherSock, tether.ControlHandler{
		Status: func() tether.Status { return b.TetherNode().Status() },
		Leases: func(context.Context) ([]lease.Lease, error) { return b.TetherNode().Broker.Leases(), nil },
	})
}

// Sent returns the datagrams the running tether sent, oldest first.
func (b *Bed) Sent() [][]byte {
	b.tmu.Lock()
	defer b.tmu.Unlock()
	if b.site == nil {
		return nil
	}
	b.site.rec.mu.Lock()
	defer b.site.rec.mu.Unlock()
	return append([][]byte(nil), b.site.rec.sent...)
}

// NodeLease is what a node got by DHCP.
type NodeLease struct {
	Addr    netip.Prefix
	Router  netip.Addr
	MTU     int
	Expires time.Duration
}

// DHCP runs a DHCP client (insomniacslk/dhcp's nclient4) on node's eth0
// and configures what it was given: address, MTU (option 26), default
// route.
func (b *Bed) DHCP(ctx context.Context, node string) (NodeLease, error) {
	var nl NodeLease
	err := nsexec.Do(b.NSPath(node), func() error {
		c, err := nclient4.New("eth0", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
		if err != nil {
			return err
		}
		defer c.Close()
		l, err := c.Request(ctx)
		if err != nil {
			return err
		}
		ack := l.ACK
		a, _ := netip.AddrFromSlice(ack.YourIPAddr.To4())
		ones, _ := ack.SubnetMask().Size()
		nl.Addr = netip.PrefixFrom(a, ones)
		if r := ack.Router(); len(r) > 0 {
			nl.Router, _ = netip.AddrFromSlice(r[0].To4())
		}
		if m := ack.Options.Get(dhcpv4.OptionInterfaceMTU); len(m) == 2 {
			nl.MTU = int(m[0])<<8 | int(m[1])
		}
		nl.Expires = ack.IPAddressLeaseTime(0)
		return nil
	})
	if err != nil {
		return nl, fmt.Errorf("tethertest: DHCP on %s: %w", node, err)
	}
	if !nl.Addr.IsValid() || !nl.Router.IsValid() || nl.MTU == 0 {
		return nl, fmt.Errorf("tethertest: DHCP on %s: incomplete lease %+v", node, nl)
	}
	cmds := [][]string{
		{"-n", node, "addr", "replace", nl.Addr.String(), "dev", "eth0"},
		{"-n", node, "link", "set", "eth0", "mtu", fmt.Sprint(nl.MTU)},
		{"-n", node, "route", "replace", "default", "via", nl.Router.String()},
	}
	return nl, b.ipAll(cmds)
}

// FlushNAT drops every mapping of the NAT: the next datagram from the
// tether gets a new external port (fully-random masquerade).
func (b *Bed) FlushNAT() error {
	_, err := b.In("nat", "conntrack", "-F")
	return err
}

// ChangeNATAddress moves the NAT's external address to NATPublic2 (the
// kernel drops the masqueraded mappings of the old one).
func (b *Bed) ChangeNATAddress() error {
	return b.ipAll([][]string{
		{"-n", "nat", "addr", "del", NATPublic.String() + "/24", "dev", "out0"},
		{"-n", "nat", "addr", "replace", NATPublic2.String() + "/24", "dev", "out0"},
	})
}

// Forge sends datagrams to the anchor's tunnel port from the forger.
func (b *Bed) Forge(dgrams [][]byte) error {
	return nsexec.Do(b.NSPath("forger"), func() error {
		c, err := net.ListenUDP("udp4", nil)
		if err != nil {
			return err
		}
		defer c.Close()
		for _, d := range dgrams {
			if _, err := c.WriteToUDPAddrPort(d, netip.AddrPortFrom(AnchorPublic, TunnelPort)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Daemon returns a data-center host's vswitchd.
func (b *Bed) Daemon(host string) *agent.Agent { return b.daemons[host] }

// Close stops everything and removes every namespace.
func (b *Bed) Close() error {
	b.StopTether()
	if b.cancel != nil {
		b.cancel()
	}
	b.wg.Wait()
	var errs []error
	for _, d := range b.daemons {
		errs = append(errs, d.Close())
	}
	for i := len(b.created) - 1; i >= 0; i-- {
		if err := b.ip("netns", "del", b.created[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Ping pings to from namespace from (two echoes), trying a few times: the
// first packets of a flow take the slow paths, and a rebinding takes up to
// a probe interval. It returns ping's output.
func (b *Bed) Ping(from string, to netip.Addr) (string, error) {
	var out string
	var err error
	for try := 0; try < 10; try++ {
		if out, err = b.In(from, "ping", "-c", "2", "-i", "0.2", "-W", "1", to.String()); err == nil {
			return out, nil
		}
	}
	return out, err
}

// TCPTransfer sends size random bytes from namespace from to an echo
// server it starts in namespace server on to's port, and checks every byte
// that comes back.
func (b *Bed) TCPTransfer(from, server string, to netip.AddrPort, size int) error {
	var l net.Listener
	if err := nsexec.Do(b.NSPath(server), func() (err error) {
		l, err = net.Listen("tcp4", fmt.Sprintf(":%d", to.Port()))
		return err
	}); err != nil {
		return err
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						c.Write(buf[:n])
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	var c net.Conn
	if err := nsexec.Do(b.NSPath(from), func() (err error) {
		c, err = net.DialTimeout("tcp4", to.String(), 5*time.Second)
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	data := make([]byte, size)
	rand.Read(data)
	errc := make(chan error, 1)
	go func() { _, err := c.Write(data); errc <- err }()
	back := make([]byte, size)
	if _, err := io.ReadFull(c, back); err != nil {
		return err
	}
	if err := <-errc; err != nil {
		return err
	}
	if !bytes.Equal(back, data) {
		return errors.New("tethertest: the bytes that came back differ")
	}
	return nil
}

package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/nicpath/nicpath/agent/driver"
	"github.com/nicpath/nicpath/control"
	"github.com/nicpath/nicpath/gateway"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/internal/nsexec"
	"github.com/nicpath/nicpath/policy"
)

// GatewayConfig makes a host play a virtualization gateway of the policy
// (package gateway) instead of hosting VMs: the configuration's `gateway`
// section.
//
//	gateway:
//	  name: gw-shared          # the policy's gateway this host plays
//	  external: ext0           # the external port's interface
//	  address: 203.0.113.1/24  # the gateway's address on the external network
//	  router: 203.0.113.254    # optional: next hop beyond that network
//	  external_mac: 02:…       # optional: the external port's MAC (default: the interface's)
//	  ports: 20000-59999       # optional: external ports for translations
//	  idle: 2m                 # optional: a connection's idle timeout
//	  neighbors:               # optional: static next hops
//	    203.0.113.10: 02:00:00:00:fe:10
//	  neighbor_refresh: 1m     # optional: how long a learned next hop's MAC is trusted (at least 1s)
//
// With a gateway, the configuration names no VM ports and follows a policy
// file (a store is not followed by a gateway host yet); `metrics` serves
// the gateway's counters (nicpath_gateway_*) and the NIC's ports.
type GatewayConfig struct {
	Name        string
	External    string
	Address     netip.Prefix
	Router      netip.Addr
	ExternalMAC hal.MAC
	PortLo      uint16
	PortHi      uint16
	Idle        time.Duration
	Neighbors   map[netip.Addr]hal.MAC
	// NeighborRefresh is gateway.Config.NeighborRefresh: how long a
	// learned next hop's MAC is trusted without word from it before the
	// gateway asks again (zero: the gateway's default, a minute).
	NeighborRefresh time.Duration
	// Publish maps addresses of the external network to tenant addresses
	// (gateway.Config.Publish), written tenant/address.
	Publish map[netip.Addr]gateway.Target

	nameLine, nameCol int
	publishAt         map[netip.Addr][2]int // line and column of each, for errors found against the policy // where name is, for errors found against the policy
}

// gateway decodes the gateway section.
// key is the section's key, where a missing field is reported.
func (d *cfgDecoder) gateway(key, n *yaml.Node) *GatewayConfig {
	g := &GatewayConfig{}
	if n.Kind != yaml.MappingNode {
		d.errf(n, "gateway", "want a mapping (name, external, address, …)")
		return g
	}
	seen := d.fields(n, "gateway.", func(k, v *yaml.Node, field string) {
		switch k.Value {
		case "name":
			g.Name, g.nameLine, g.nameCol = d.str(v, field), v.Line, v.Column
		case "external":
			g.External = d.str(v, field)
		case "address":
			s := d.str(v, field)
			p, err := netip.ParsePrefix(s)
			if err != nil || p.Addr().Is4In6() || p.Addr() == p.Masked().Addr() && p.Bits() < p.Addr().BitLen()-1 {
				d.errf(v, field, "want the gateway's address with its network's prefix length, such as 203.0.113.1/24 (got %q)", s)
				break
			}
			g.Address = p
		case "router":
			s := d.str(v, field)
			a, err := netip.ParseAddr(s)
			if err != nil {
				d.errf(v, field, "not an address: %q", s)
				break
			}
			g.Router = a
		case "external_mac":
			g.ExternalMAC = d.mac(v, field)
		case "ports":
			s := d.str(v, field)
			lo, hi, ok := strings.Cut(s, "-")
			l, err1 := strconv.ParseUint(lo, 10, 16)
			h, err2 := strconv.ParseUint(hi, 10, 16)
			if !ok || err1 != nil || err2 != nil || l == 0 || h < l {
				d.errf(v, field, "want a range of ports such as 20000-59999 (got %q)", s)
				break
			}
			g.PortLo, g.PortHi = uint16(l), uint16(h)
		case "idle":
			if g.Idle = d.duration(v, field); g.Idle == 0 && v.Value != "" {
				d.errf(v, field, "must be positive")
			}
		case "neighbors":
			g.Neighbors = map[netip.Addr]hal.MAC{}
			d.entries(v, field, "address to MAC", func(nk, nv *yaml.Node, f string) {
				if a, ok := d.addrKey(nk, f); ok {
					g.Neighbors[a] = d.mac(nv, f)
				}
			})
		case "neighbor_refresh":
			// The gateway asks a next hop again at most once a refresh
			// period: below a second, a refresh would be an ARP storm
			// in the making rather than a cache.
			g.NeighborRefresh = d.duration(v, field)
			if r, err := time.ParseDuration(v.Value); err == nil && r >= 0 && r < time.Second { // else d.duration said why
				d.errf(v, field, "must be at least 1s (got %q)", v.Value)
			}
		case "publish":
			g.Publish, g.publishAt = map[netip.Addr]gateway.Target{}, map[netip.Addr][2]int{}
			d.entries(v, field, "address to tenant/address", func(pk, pv *yaml.Node, f string) {
				a, ok := d.addrKey(pk, f)
				if !ok {
					return
				}
				tn, ca, ok := strings.Cut(d.str(pv, f), "/")
				cad, err := netip.ParseAddr(ca)
				if !ok || tn == "" || err != nil {
					d.errf(pv, f, "want tenant/address, such as blue/10.0.0.10")
					return
				}
				g.Publish[a] = gateway.Target{Tenant: tn, CA: cad}
				g.publishAt[a] = [2]int{pv.Line, pv.Column}
			})
		default:
			d.errf(k, field, "unknown field (known: name, external, address, router, external_mac, ports, idle, neighbors, neighbor_refresh, publish)")
		}
	})
	for _, f := range []string{"name", "external", "address"} {
		if seen[f] == nil {
			d.errf(key, "gateway."+f, "missing")
		}
	}
	if g.Router.IsValid() && g.Address.IsValid() && !g.Address.Contains(g.Router) &&
		!(g.Router.Is6() && g.Address.Addr().Is6() && g.Router.IsLinkLocalUnicast()) {
		d.errf(seen["router"], "gateway.router", "%s is not on the external network %s", g.Router, g.Address.Masked())
	}
	for a := range g.Neighbors {
		if g.Address.IsValid() && !g.Address.Contains(a) {
			d.errf(seen["neighbors"], "gateway.neighbors."+a.String(), "not on the external network %s", g.Address.Masked())
		}
	}
	for a := range g.Publish {
		if g.Address.IsValid() && (!g.Address.Contains(a) || a == g.Address.Addr()) {
			d.errf(seen["publish"], "gateway.publish."+a.String(), "not an address of the external network %s apart from the gateway's", g.Address.Masked())
		}
	}
	return g
}

// addrKey is the address a mapping's key k (field) names; when it names
// none, it says so and reports false.
func (d *cfgDecoder) addrKey(k *yaml.Node, field string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(k.Value)
	if err != nil {
		d.errf(k, field, "not an address")
		return netip.Addr{}, false
	}
	return a, true
}

// checkGatewayRole checks the fields that go with a gateway section.
func (d *cfgDecoder) checkGatewayRole(c *Config, seen map[string]*yaml.Node) {
	if c.Gateway == nil {
		return
	}
	if len(c.Ports) > 0 {
		d.errf(seen["ports"], "ports", "a gateway host has no VM ports (the gateway section names its external port)")
	}
	if c.Gateway.External != "" && c.Gateway.External == c.Uplink {
		d.errf(seen["gateway"], "gateway.external", "the external port %q is the uplink", c.Uplink)
	}
	if seen["store"] != nil {
		d.errf(seen["store"], "store", "a gateway host follows a policy file (store following is not done for gateways yet)")
	}
	if seen["flow_idle"] != nil {
		d.errf(seen["flow_idle"], "flow_idle", "not for a gateway host (its connections' idle time is gateway.idle)")
	}
}

// checkGatewayPolicy refuses a policy without the configured gateway, or
// whose tenants do not have the published addresses' targets, with the
// configuration's file, line and field.
func checkGatewayPolicy(cfg *Config, st *policy.State) error {
	gw, ok := st.Gateway(cfg.Gateway.Name)
	if ok {
		var errs ConfigErrors
		for a, t := range cfg.Gateway.Publish {
			if err := gateway.CheckTarget(st, gw, t); err != nil {
				at := cfg.Gateway.publishAt[a]
				errs = append(errs, &ConfigError{File: cfg.File, Line: at[0], Column: at[1], Field: "gateway.publish." + a.String(),
					Msg: fmt.Sprintf("policy %s: %v", cfg.Policy, err)})
			}
		}
		if len(errs) > 0 {
			sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
			return errs
		}
	}
	if !ok {
		var names []string
		for _, g := range st.Gateways() {
			names = append(names, g.Name)
		}
		return ConfigErrors{{File: cfg.File, Line: cfg.Gateway.nameLine, Column: cfg.Gateway.nameCol, Field: "gateway.name",
			Msg: fmt.Sprintf("policy %s has no gateway %q (it has: %s)", cfg.Policy, cfg.Gateway.Name, strings.Join(names, ", "))}}
	}
	return nil
}

// GatewayAgent is the daemon of a gateway host: the NIC with its uplink and
// external port, a gateway.Gateway on it, the policy file watched, and a
// control socket (command "gateway").
type GatewayAgent struct {
	cfg      *Config
	log      *slog.Logger
	nic      hal.NIC
	closeNIC bool
	gw       *gateway.Gateway
	ext, up  hal.PortID
	ep       *endpoints // the control socket and the metrics endpoint
	started  time.Time

	mu         sync.Mutex
	st         *policy.State
	policyHash [32]byte
}

// NewGateway starts a gateway host from cfg (cfg.Gateway set): it loads the
// policy, opens the driver on the uplink and the external port, and starts
// the gateway. Nothing is installed on the NIC before traffic comes.
func NewGateway(ctx context.Context, cfg *Config) (*GatewayAgent, error) {
	return startGateway(ctx, cfg, nil)
}

// NewGatewayWithNIC is NewGateway on a NIC the caller opened, whose ports
// are named after the configured uplink and external interface. The NIC is
// left open by Close.
func NewGatewayWithNIC(ctx context.Context, nic hal.NIC, cfg *Config) (*GatewayAgent, error) {
	return startGateway(ctx, cfg, nic)
}

func startGateway(ctx context.Context, cfg *Config, nic hal.NIC) (_ *GatewayAgent, err error) {
	if cfg.Gateway == nil {
		return nil, errors.New("the configuration has no gateway section")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	}
	a := &GatewayAgent{cfg: cfg, log: log.With("gateway", cfg.Gateway.Name), started: time.Now()}
	st, hash, err := loadPolicy(cfg.Policy)
	if err != nil {
		return nil, err
	}
	if err := checkGatewayPolicy(cfg, st); err != nil {
		return nil, err
	}
	a.st, a.policyHash = st, hash
	if nic == nil {
		if nic, err = openGatewayNIC(ctx, cfg, log); err != nil {
			return nil, fmt.Errorf("opening %s: %w", cfg.Driver, err)
		}
		a.closeNIC = true
	}
	a.nic = nic
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	for _, p := range nic.Ports() {
		switch p.Name {
		case cfg.Uplink:
			a.up = p.ID
		case cfg.Gateway.External:
			a.ext = p.ID
		}
	}
	if a.up == 0 || a.ext == 0 {
		return nil, fmt.Errorf("the NIC has no port named %q (uplink) or %q (gateway.external)", cfg.Uplink, cfg.Gateway.External)
	}
	g := cfg.Gateway
	a.gw, err = gateway.New(gateway.Config{NIC: nic, State: st, Name: g.Name, Uplink: a.up, External: a.ext,
		Address: g.Address, Router: g.Router, Neighbors: g.Neighbors, NextHopMAC: cfg.NextHopMAC,
		PortLo: g.PortLo, PortHi: g.PortHi, Idle: g.Idle, NeighborRefresh: g.NeighborRefresh, Publish: g.Publish, Logger: a.log})
	if err != nil {
		return nil, err
	}
	if a.ep, err = listenEndpoints(a.log, cfg.Control, cfg.Metrics, a.MetricsHandler()); err != nil {
		return nil, err
	}
	pg := a.gw.Gateway()
	a.log.Info("gateway started", "pa", pg.PA, "tenant", pg.Tenant, "address", g.Address, "driver", nic.Capabilities().Driver)
	return a, nil
}

// openGatewayNIC opens the configured driver with two ports: the external
// interface (port 1, a plain port with the interface's MAC) and the uplink
// (port 2).
func openGatewayNIC(ctx context.Context, c *Config, log *slog.Logger) (hal.NIC, error) {
	extMAC := c.Gateway.ExternalMAC
	if extMAC.IsZero() {
		err := nsexec.Do(c.NetNS, func() error {
			ifi, err := net.InterfaceByName(c.Gateway.External)
			if err != nil {
				return fmt.Errorf("gateway.external: %w", err)
			}
			if len(ifi.HardwareAddr) == 6 {
				extMAC = hal.MAC(ifi.HardwareAddr)
			}
			return nil
		})
		if err != nil && c.Binding != BindNone {
			return nil, err
		}
		if extMAC.IsZero() {
			extMAC = hal.MustMAC("02:6e:70:00:00:02")
		}
	}
	dc := driver.Config{Host: c.Host, NetNS: c.NetNS, Binding: c.Binding, Tunnels: c.Tunnels,
		Options: c.DriverOptions, Dir: filepath.Dir(c.File), Logger: log}
	dc.Ports = []driver.Port{
		{ID: 1, Name: c.Gateway.External, Kind: hal.PortVPort, MAC: extMAC},
		{ID: 2, Name: c.Uplink, Kind: hal.PortUplink, MAC: c.UplinkMAC},
	}
	return driver.Open(ctx, c.Driver, dc)
}

// Gateway returns the running gateway.
func (a *GatewayAgent) Gateway() *gateway.Gateway { return a.gw }

// NIC returns the gateway's NIC.
func (a *GatewayAgent) NIC() hal.NIC { return a.nic }

// Run runs the gateway, the control socket and the policy file's watch
// until ctx is done.
func (a *GatewayAgent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 2) // the gateway's and the metrics server's
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := a.gw.Run(ctx); err != nil {
			errc <- err
		}
	}()
	go func() {
		defer wg.Done()
		every(ctx, a.cfg.WatchInterval, func() {
			if _, err := a.Reload(ctx); err != nil {
				a.log.Warn("policy rejected; the gateway keeps the last one", "err", err)
			}
		})
	}()
	a.ep.serve(ctx, &wg, a.Do, errc)
	a.log.Info("running", "control", a.cfg.Control, "metrics", a.cfg.Metrics, "policy", a.cfg.Policy)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	a.ep.stop()
	wg.Wait()
	return err
}

// Reload loads the policy file again if it changed, and gives it to the
// gateway; a policy that fails its checks, or lacks this gateway, changes
// nothing.
func (a *GatewayAgent) Reload(ctx context.Context) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	sum, err := hashFile(a.cfg.Policy)
	if err != nil || sum == a.policyHash {
		return false, err
	}
	st, sum, err := loadPolicy(a.cfg.Policy)
	if err == nil {
		err = checkGatewayPolicy(a.cfg, st)
	}
	if err != nil {
		a.policyHash = sum // judged once; a new edit is judged again
		return false, err
	}
	if err := a.gw.Update(ctx, st); err != nil {
		return false, err
	}
	a.st, a.policyHash = st, sum
	a.log.Info("policy reloaded")
	return true, nil
}

// Close removes the gateway's rules and releases the NIC (unless it is the
// caller's) and the control socket.
func (a *GatewayAgent) Close() error {
	var errs []error
	if a.gw != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, a.gw.Close(ctx))
		cancel()
	}
	a.ep.close()
	if a.closeNIC && a.nic != nil {
		errs = append(errs, a.nic.Close())
	}
	return errors.Join(errs...)
}

// Do carries out one control command: "gateway" (the gateway, its
// counters and connections).
func (a *GatewayAgent) Do(ctx context.Context, req control.Request) (any, error) {
	switch req.Cmd {
	case "gateway":
		return a.status(), nil
	}
	return nil, fmt.Errorf("unknown command %q on a gateway host (known: gateway)", req.Cmd)
}

func (a *GatewayAgent) status() control.GatewayStatus {
	pg := a.gw.Gateway()
	s := a.gw.Stats()
	out := control.GatewayStatus{Name: pg.Name, PA: pg.PA.String(), Tenant: pg.Tenant, Address: a.cfg.Gateway.Address.String(),
		Driver: a.nic.Capabilities().Driver, Conns: s.Conns, NewConns: s.NewConns, Inbound: s.Inbound, Offloaded: s.Offloaded, HostPath: s.HostPath,
		HostPackets: s.HostPackets, Refused: s.Refused, Drops: s.Drops, NeighborMoves: s.NeighborMoves}
	for _, c := range a.gw.Conns() {
		out.Connections = append(out.Connections, control.GatewayConn{Tenant: c.Tenant, VNET: c.VNET, VM: c.VM, Host: c.Host,
			Proto: c.Proto, Inside: c.Inside, Outside: c.Outside, Where: c.Where, AgeMillis: c.Age.Milliseconds()})
	}
	var b strings.Builder
	tenant := pg.Tenant
	if tenant == "" {
		tenant = "shared"
	} else {
		tenant = "dedicated to " + tenant
	}
	fmt.Fprintf(&b, "gateway %s (PA %s, %s), external address %s, driver %s, up %s\n", pg.Name, pg.PA, tenant,
		a.cfg.Gateway.Address, out.Driver, time.Since(a.started).Round(time.Millisecond))
	fmt.Fprintf(&b, "connections %d (new %d, %d of them from outside; on the NIC %d, on the host %d), host packets %d\n",
		s.Conns, s.NewConns, s.Inbound, s.Offloaded, s.HostPath, s.HostPackets)
	fmt.Fprintf(&b, "neighbours: ARP %d answered, %d asked; ND %d answered, %d asked; moved to a new MAC %d; ICMP errors sent on to VMs %d\n",
		s.ARPReplies, s.ARPRequests, s.NDReplies, s.NDRequests, out.NeighborMoves, s.ICMPErrors)
	if len(a.cfg.Gateway.Publish) > 0 {
		pubs := make([]string, 0, len(a.cfg.Gateway.Publish))
		for ad, t := range a.cfg.Gateway.Publish {
			pubs = append(pubs, ad.String()+" = "+t.String())
		}
		sort.Strings(pubs)
		fmt.Fprintf(&b, "published: %s\n", strings.Join(pubs, ", "))
	}
	for _, m := range []struct {
		name string
		v    map[string]uint64
	}{{"refused", s.Refused}, {"dropped", s.Drops}} {
		keys := make([]string, 0, len(m.v))
		for k := range m.v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "%s %s: %d\n", m.name, k, m.v[k])
		}
	}
	for _, c := range out.Connections {
		fmt.Fprintf(&b, "%-6s tenant %s vm %s: %s  as  %s  [%s]\n", protoName(c.Proto), c.Tenant, c.VM, c.Inside, c.Outside, c.Where)
	}
	out.Text = b.String()
	return out
}

func protoName(p uint8) string {
	switch p {
	case hal.ProtoTCP:
		return "tcp"
	case hal.ProtoUDP:
		return "udp"
	case hal.ProtoICMP:
		return "icmp"
	case hal.ProtoICMPv6:
		return "icmpv6"
	}
	return strconv.Itoa(int(p))
}

// CheckGateway loads the configuration's policy and checks that it has the
// configured gateway (vswitchd -check on a gateway host).
func CheckGateway(cfg *Config) error {
	st, err := policy.LoadFile(cfg.Policy)
	if err != nil {
		return err
	}
	return checkGatewayPolicy(cfg, st)
}

// gatewayMain is Main for a gateway host.
func gatewayMain(ctx context.Context, cfg *Config, check bool, format string, stdout, stderr io.Writer) int {
	if check {
		if err := CheckGateway(cfg); err != nil {
			fmt.Fprintln(stderr, "vswitchd: policy rejected:")
			fmt.Fprintln(stderr, err)
			return 1
		}
		fmt.Fprintf(stdout, "%s and %s are valid; this host plays gateway %s\n", cfg.File, cfg.Policy, cfg.Gateway.Name)
		return 0
	}
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	var h slog.Handler = slog.NewTextHandler(stderr, opts)
	if format == "json" {
		h = slog.NewJSONHandler(stderr, opts)
	}
	cfg.Logger = slog.New(h)
	a, err := NewGateway(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "vswitchd:", err)
		return 1
	}
	return runAndClose(ctx, a.Run, a.Close, stderr)
}

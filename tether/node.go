package tether

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/securechan"
	"github.com/nicpath/nicpath/store"
	"github.com/nicpath/nicpath/tether/lease"
)

// AnchorNodeOptions are what StartAnchorNode needs.
type AnchorNodeOptions struct {
	Config *Config
	// Subnets names the relocated subnets this anchor serves (all of the
	// configuration's whose anchor host is Host if empty).
	Subnets []string
	// Host is the anchor's host name in the policy.
	Host  string
	State *policy.State
	// Key is the anchor's static key (its public half is the
	// configuration's anchor.key).
	Key securechan.PrivateKey
	// Underlay and Tunnel are the anchor's sockets: VXLAN on its PA, and
	// the tunnel's public UDP endpoint. Listen opens them when nil.
	Underlay, Tunnel PacketConn
	Logger           *slog.Logger
}

// AnchorNode is a running anchor: the tunnel end and the overlay side.
type AnchorNode struct {
	Anchor  *Anchor
	Overlay *Overlay
	Subnets []*Relocated
	wg      sync.WaitGroup
}

// StartAnchorNode checks the configuration against the policy, opens the
// sockets (in the calling thread's network namespace) and runs the anchor
// until ctx is done; Wait waits for it.
func StartAnchorNode(ctx context.Context, o AnchorNodeOptions) (*AnchorNode, error) {
	if err := o.Config.CheckPolicy(o.State); err != nil {
		return nil, err
	}
	host, ok := o.State.Host(o.Host)
	if !ok {
		return nil, fmt.Errorf("tether: anchor host %q is not in the policy", o.Host)
	}
	n := &AnchorNode{}
	var subs []Subnet
	var peers []Peer
	var endpoint netip.AddrPort
	pathMTU := 0
	for i := range o.Config.Subnets {
		r := &o.Config.Subnets[i]
		if r.AnchorHost != o.Host || (len(o.Subnets) > 0 && !contains(o.Subnets, r.Name)) {
			continue
		}
		if endpoint.IsValid() && r.AnchorEndpoint != endpoint {
			return nil, fmt.Errorf("tether: subnets %s and %s name different anchor endpoints (%v, %v)", n.Subnets[0].Name, r.Name, endpoint, r.AnchorEndpoint)
		}
		endpoint = r.AnchorEndpoint
		if pathMTU == 0 || r.PathMTU < pathMTU {
			pathMTU = r.PathMTU
		}
		vn, _ := o.State.VNET(r.Tenant, r.VNET)
		n.Subnets = append(n.Subnets, r)
		subs = append(subs, r.Subnet())
		if !containsPeer(peers, r.TetherName) {
			peers = append(peers, r.Peer(vn.VNI))
		}
	}
	if len(n.Subnets) == 0 {
		return nil, fmt.Errorf("tether: no relocated subnet is anchored on %s", o.Host)
	}
	if o.Underlay == nil {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(host.PA, VXLANPort)))
		if err != nil {
			return nil, fmt.Errorf("tether: the anchor's VXLAN socket: %w", err)
		}
		o.Underlay = c
	}
	if o.Tunnel == nil {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(endpoint))
		if err != nil {
			o.Underlay.Close()
			return nil, fmt.Errorf("tether: the anchor's tunnel socket: %w", err)
		}
		o.Tunnel = c
	}
	ov := NewOverlay(OverlayConfig{Host: o.Host, Subnets: subs, Underlay: o.Underlay, Logger: o.Logger})
	if err := ov.SetState(o.State); err != nil {
		return nil, err
	}
	a, err := NewAnchor(o.Tunnel, AnchorConfig{Key: o.Key, Peers: peers, PathMTU: pathMTU, Deliver: ov.FromTunnel, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	ov.SetTunnel(a)
	n.Anchor, n.Overlay = a, ov
	n.wg.Add(2)
	go func() { defer n.wg.Done(); a.Run(ctx) }()
	go func() { defer n.wg.Done(); ov.RunUnderlay() }()
	context.AfterFunc(ctx, func() { o.Underlay.Close() })
	return n, nil
}

// Wait waits until the anchor stopped (its context ended).
func (n *AnchorNode) Wait() { n.wg.Wait() }

// SetState applies a new policy to the overlay side (its routes, ACLs and
// mappings apply from the next flow on) once the configuration still holds
// against it; a policy it does not hold against is refused and the running
// one kept.
func (n *AnchorNode) SetState(cfg *Config, st *policy.State) error {
	if err := cfg.CheckPolicy(st); err != nil {
		return err
	}
	return n.Overlay.SetState(st)
}

// TetherNodeOptions are what StartTetherNode needs.
type TetherNodeOptions struct {
	Config *Config
	Subnet string // the relocated subnet this tether serves
	// State is the policy the subnet is taken from (Config.CheckPolicy);
	// nil if the caller has checked the configuration against one.
	State *policy.State
	VNI   uint32 // its VNET's VNI (taken from State when zero)
	Key   securechan.PrivateKey
	// KV keeps the leases (store.Memory, etcd, or lease.OpenFile).
	KV        store.KV
	KeyPrefix string // where the leases live in KV ("/nicpath/" if empty)
	// Conn is the tunnel's socket; nil opens one on an ephemeral port.
	Conn   PacketConn
	Logger *slog.Logger
}

// TetherNode is a running tether: the tunnel, the site's ports, the lease
// broker and its DHCP server.
type TetherNode struct {
	Tether *Tether
	Site   *Site
	Broker *lease.Broker
	Subnet *Relocated
	wg     sync.WaitGroup
}

// StartTetherNode opens the site's ports and the tunnel's socket (in the
// calling thread's network namespace) and runs them until ctx is done.
func StartTetherNode(ctx context.Context, o TetherNodeOptions) (*TetherNode, error) {
	if o.State != nil {
		if err := o.Config.CheckPolicy(o.State); err != nil {
			return nil, err
		}
	}
	r, ok := o.Config.Find(o.Subnet)
	if !ok {
		return nil, fmt.Errorf("tether: no relocated subnet %q in %s", o.Subnet, o.Config.File)
	}
	if !r.bound {
		return nil, fmt.Errorf("tether: relocated subnet %s is not taken from a policy yet (TetherNodeOptions.State)", r.Name)
	}
	if o.VNI == 0 && o.State != nil {
		vn, _ := o.State.VNET(r.Tenant, r.VNET)
		o.VNI = vn.VNI
	}
	if o.Key.Public() != r.TetherKey {
		return nil, fmt.Errorf("tether: the key given is not %s's (%s.tether.key)", r.TetherName, r.Name)
	}
	prefix := o.KeyPrefix
	if prefix == "" {
		prefix = "/nicpath/"
	}
	br, err := lease.Open(ctx, o.KV, lease.Config{Subnet: r.Name, First: r.PoolFirst, Last: r.PoolLast, LeaseTime: r.LeaseTime, Prefix: prefix})
	if err != nil {
		return nil, err
	}
	mtu := InnerMTU(r.PathMTU, r.AnchorEndpoint.Addr().Is6())
	srv := lease.NewServer(br, lease.ServerConfig{Prefix: r.Prefix, Gateway: r.Gateway, MTU: mtu})
	n := &TetherNode{Broker: br, Subnet: r}
	site := NewSite(SiteConfig{VNI: o.VNI, Prefix: r.Prefix, Gateway: r.Gateway, MTU: mtu, Broker: br, DHCP: srv,
		Tunnel: func(vni uint32, f []byte) error { return n.Tether.Send(vni, f) }, Logger: o.Logger})
	var runs []func(context.Context) error
	for _, p := range r.Ports {
		run, err := site.OpenPort(p)
		if err != nil {
			done, cancel := context.WithCancel(ctx)
			cancel()
			for _, run := range runs {
				run(done) // closes the port's socket at once
			}
			return nil, err
		}
		runs = append(runs, run)
	}
	if o.Conn == nil {
		c, err := net.ListenUDP("udp", nil)
		if err != nil {
			return nil, err
		}
		o.Conn = c
	}
	t, err := NewTether(TetherConfig{Key: o.Key, AnchorKey: r.AnchorKey, Anchor: r.AnchorEndpoint, Keepalive: r.Keepalive,
		Probe: r.Probe, PathMTU: r.PathMTU, Deliver: site.FromTunnel, Conn: o.Conn, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	n.Tether, n.Site = t, site
	for _, run := range runs {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); run(ctx) }()
	}
	n.wg.Add(1)
	go func() { defer n.wg.Done(); t.Run(ctx) }()
	return n, nil
}

// Wait waits until the tether stopped (its context ended).
func (n *TetherNode) Wait() { n.wg.Wait() }

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func containsPeer(l []Peer, name string) bool {
	for _, p := range l {
		if p.Name == name {
			return true
		}
	}
	return false
}

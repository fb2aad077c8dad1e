package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
)

// Config is one gateway host.
type Config struct {
	NIC   hal.NIC
	State *policy.State
	// Name is the gateway of the policy this host plays; its PA is the
	// outer destination of the tenant frames it takes.
	Name string
	// Uplink is the NIC's port on the underlay; External its port on the
	// physical network of the non-virtualized hosts.
	Uplink, External hal.PortID
	// Address is the gateway's address on the external network, with the
	// prefix of that network: the source of translated packets, the address
	// answers come back to, and the on-link range whose hosts are reached
	// directly.
	Address netip.Prefix
	// Router is the next hop toward external destinations outside
	// Address's prefix; invalid means none (they are dropped,
	// Stats.Drops["no-route"]).
	Router netip.Addr
	// Neighbors are static next-hop MACs on the external network: never
	// asked for, forgotten or moved by what the network announces.
	Neighbors map[netip.Addr]hal.MAC
	// NextHopMAC is the underlay next hop's MAC (outer destination of the
	// encapsulated answers); zero is broadcast.
	NextHopMAC hal.MAC
	// PortLo and PortHi bound the external ports (and ICMP identifiers)
	// connections take; zero means 20000–59999.
	PortLo, PortHi uint16
	// Publish maps addresses on the external network (in Address's
	// prefix, not Address itself) to tenant addresses: a connection the
	// external network opens toward a published address reaches the VM
	// that has the target address, and the VM's answers leave from the
	// published address, ports untouched. The gateway must serve the
	// target's tenant.
	Publish map[netip.Addr]Target
	// Idle is how long a connection may go without packets before Expire
	// removes it; zero means 2 minutes.
	Idle time.Duration
	// NeighborRefresh is how long a learned next hop's MAC is trusted
	// without word from it: Expire then asks for it again (an answer with
	// a new MAC moves its connections), or forgets it when no connection
	// goes through it. Zero means a minute. Static entries (Neighbors) are
	// neither asked for nor forgotten.
	NeighborRefresh time.Duration
	Clock           func() time.Time
	Logger          *slog.Logger
}

// Stats are the gateway's counters.
type Stats struct {
	Conns       int               // connections tracked now
	NewConns    uint64            // connections created
	Inbound     uint64            // of which opened from the external network (Publish)
	Expired     uint64            // connections removed idle or by a policy change
	Offloaded   uint64            // connections whose two rules are on the NIC
	HostPath    uint64            // connections kept on the host path
	HostPackets uint64            // packets translated on the host path
	Refused     map[string]uint64 // tenant packets the policy refuses, by policy reason
	Drops       map[string]uint64 // other drops, by reason
	ARPReplies  uint64            // ARP requests for Address answered
	ARPRequests uint64            // ARP requests sent for next hops
	NDReplies   uint64            // neighbour solicitations for the gateway's IPv6 addresses answered
	NDRequests  uint64            // neighbour solicitations sent for IPv6 next hops
	ICMPErrors  uint64            // ICMP errors about translated connections sent on to their VMs
	// NeighborMoves counts next hops on the external network that
	// announced a new MAC (a router replaced or failed over); the
	// connections through them moved with them (neighbor.go).
	NeighborMoves uint64
}

// Gateway plays one policy gateway on a NIC. Its methods are safe for
// concurrent use.
type Gateway struct {
	cfg       Config
	nic       hal.NIC
	log       *slog.Logger
	uplinkMAC hal.MAC
	extMAC    hal.MAC

	mu      sync.Mutex
	st      *policy.State
	gw      policy.Gateway
	conns   map[insideKey]*conn
	byOut   map[outsideKey]*conn
	cursor  map[uint8]uint16
	refused map[hal.FlowKey]*refusal
	neigh   map[netip.Addr]*neighbor
	pending map[netip.Addr]*pendingFrames
	nextID  hal.RuleID
	stats   Stats
	ops     []hal.Op
	owners  []opOwner
	injects []inject
	acts    map[actsKey][]hal.Action // shared port-free action lists (build)
}

type inject struct {
	port  hal.PortID
	frame []byte
}

// ErrConfig wraps every configuration New refuses.
var ErrConfig = errors.New("gateway: bad configuration")

// New checks cfg against the NIC and the policy and returns a gateway that
// has installed nothing yet: rules come with the first packets.
func New(cfg Config) (*Gateway, error) {
	if cfg.NIC == nil || cfg.State == nil {
		return nil, fmt.Errorf("%w: a NIC and a policy state are needed", ErrConfig)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PortLo == 0 && cfg.PortHi == 0 {
		cfg.PortLo, cfg.PortHi = 20000, 59999
	}
	if cfg.PortLo == 0 || cfg.PortHi < cfg.PortLo {
		return nil, fmt.Errorf("%w: port range %d-%d", ErrConfig, cfg.PortLo, cfg.PortHi)
	}
	if cfg.Idle <= 0 {
		cfg.Idle = 2 * time.Minute
	}
	if cfg.NeighborRefresh <= 0 {
		cfg.NeighborRefresh = time.Minute
	}
	if !cfg.Address.IsValid() || cfg.Address.Addr().Is4In6() {
		return nil, fmt.Errorf("%w: the external address %v is not an address with its prefix", ErrConfig, cfg.Address)
	}
	if cfg.Router.IsValid() && !cfg.Address.Contains(cfg.Router) &&
		!(cfg.Router.Is6() && cfg.Address.Addr().Is6() && cfg.Router.IsLinkLocalUnicast()) {
		return nil, fmt.Errorf("%w: router %s is not on the external network %s", ErrConfig, cfg.Router, cfg.Address.Masked())
	}
	g := &Gateway{cfg: cfg, nic: cfg.NIC, log: cfg.Logger,
		conns: map[insideKey]*conn{}, byOut: map[outsideKey]*conn{},
		cursor: map[uint8]uint16{}, refused: map[hal.FlowKey]*refusal{}, neigh: map[netip.Addr]*neighbor{},
		pending: map[netip.Addr]*pendingFrames{}, nextID: 1, acts: map[actsKey][]hal.Action{}}
	g.stats.Refused, g.stats.Drops = map[string]uint64{}, map[string]uint64{}
	var upOK, extOK bool
	for _, p := range cfg.NIC.Ports() {
		switch p.ID {
		case cfg.Uplink:
			upOK, g.uplinkMAC = p.Kind == hal.PortUplink, p.MAC
		case cfg.External:
			extOK, g.extMAC = true, p.MAC
		}
	}
	if !upOK {
		return nil, fmt.Errorf("%w: port %d is not an uplink of the NIC", ErrConfig, cfg.Uplink)
	}
	if !extOK || cfg.External == cfg.Uplink {
		return nil, fmt.Errorf("%w: port %d is not a port of the NIC apart from the uplink", ErrConfig, cfg.External)
	}
	if err := g.setState(cfg.State); err != nil {
		return nil, err
	}
	for a, m := range cfg.Neighbors {
		g.neigh[a] = &neighbor{mac: m, static: true}
	}
	for a, t := range cfg.Publish {
		if !cfg.Address.Contains(a) || a == cfg.Address.Addr() {
			return nil, fmt.Errorf("%w: published address %s is not an address of the external network %s apart from the gateway's", ErrConfig, a, cfg.Address)
		}
		if _, _, err := resolve(g.st, g.gw, t); err != nil {
			return nil, fmt.Errorf("%w: published address %s (%s): %v", ErrConfig, a, t, err)
		}
	}
	g.setEndpoint(context.Background())
	return g, nil
}

// setEndpoint has a NIC with a tunnel filter take tunnelled frames on the
// uplink for the gateway's PA only.
func (g *Gateway) setEndpoint(ctx context.Context) {
	if tt, ok := g.nic.(hal.TunnelTerminator); ok && g.nic.Capabilities().TunnelFilter {
		if err := tt.SetTunnelEndpoint(ctx, hal.TunnelEndpoint{Port: g.cfg.Uplink, Addrs: []netip.Addr{g.gw.PA}}); err != nil {
			g.log.Warn("gateway tunnel endpoint", "pa", g.gw.PA, "err", err)
		}
	}
}

func (g *Gateway) setState(st *policy.State) error {
	gw, ok := st.Gateway(g.cfg.Name)
	if !ok {
		return fmt.Errorf("%w: the policy has no gateway %q", ErrConfig, g.cfg.Name)
	}
	g.st, g.gw = st, gw
	return nil
}

// Gateway returns the policy gateway this host plays, as the current state
// has it.
func (g *Gateway) Gateway() policy.Gateway {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.gw
}

// Update takes a new policy. Every connection is checked again as its first
// packet was: those the new state refuses, or whose VM moved, are removed
// (rules deleted, ports freed); refused flows are forgotten, so that their
// next packet is judged again.
func (g *Gateway) Update(ctx context.Context, st *policy.State) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.gw
	if err := g.setState(st); err != nil {
		return err
	}
	if old.PA != g.gw.PA {
		g.setEndpoint(ctx)
	}
	// Shared action lists hold the old state's router MAC and PAs: new
	// connections make theirs again.
	clear(g.acts)
	for _, c := range g.conns {
		if c.inbound {
			t := g.cfg.Publish[c.outside.local]
			m, _, err := resolve(st, g.gw, t)
			if err != nil || m.PA != c.hostPA || hal.MAC(m.MAC) != c.vmMAC || c.gwPA != g.gw.PA {
				g.removeConn(c)
				continue
			}
			if c.fwdKey == (hal.FlowKey{}) {
				continue
			}
		}
		v := st.CheckAtGateway(g.gw.Name, c.in, c.pkt)
		if !v.Allow || v.PA != c.hostPA || hal.MAC(v.MAC) != c.vmMAC || c.gwPA != g.gw.PA {
			g.removeConn(c)
		}
	}
	for k, r := range g.refused {
		if r.rule != 0 {
			g.queue(hal.DeleteOp(r.rule), opOwner{})
		}
		delete(g.refused, k)
	}
	return g.flush(ctx)
}

// Run reads the NIC's exception path and handles every batch until ctx is
// done, expiring idle connections and refreshing next hops as it goes
// (Expire every quarter of Idle or half of NeighborRefresh, the shorter).
func (g *Gateway) Run(ctx context.Context) error {
	batch := make([]hal.Exception, 64)
	for i := range batch {
		batch[i].Buf = make([]byte, 9216)
	}
	// Expire ends idle connections and refreshes next hops: often enough
	// for both (a next hop is asked for within half a refresh period of
	// its due time).
	tick := time.NewTicker(min(g.cfg.Idle/4, g.cfg.NeighborRefresh/2))
	defer tick.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		n, err := g.nic.ReadExceptions(rctx, batch)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		if n > 0 {
			if err := g.HandleBatch(ctx, batch[:n]); err != nil {
				g.log.Warn("gateway batch", "err", err)
			}
		}
		select {
		case <-tick.C:
			if err := g.Expire(ctx); err != nil {
				g.log.Warn("gateway expiry", "err", err)
			}
		default:
		}
	}
}

// HandleBatch handles exception packets the caller read from the NIC:
// tenant frames from the uplink, answers and ARP from the external port.
func (g *Gateway) HandleBatch(ctx context.Context, batch []hal.Exception) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.cfg.Clock().UnixNano()
	for i := range batch {
		e := &batch[i]
		if e.Truncated {
			g.stats.Drops["truncated"]++
			continue
		}
		g.handle(e.InPort, e.Frame(), now)
	}
	err := g.flush(ctx)
	if ierr := g.flushInjects(ctx); err == nil {
		err = ierr
	}
	return err
}

func (g *Gateway) handle(in hal.PortID, frame []byte, now int64) {
	var k hal.FlowKey
	var l wire.Layout
	if err := wire.Parse(frame, in, &k, &l); err != nil {
		if l.Flags&wire.FlagLaterFragment != 0 {
			// No ports: no connection to find it by (see Explain).
			g.stats.Drops["non-first-fragment"]++
			return
		}
		g.stats.Drops[wire.ReasonOf(err).String()]++
		return
	}
	switch in {
	case g.cfg.Uplink:
		g.fromTenant(&k, &l, frame, now)
	case g.cfg.External:
		g.fromExternal(&k, &l, frame, now)
	default:
		g.stats.Drops["unknown-port"]++
	}
}

// Stats returns a copy of the counters.
func (g *Gateway) Stats() Stats {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.stats
	s.Conns = len(g.conns)
	s.Refused, s.Drops = map[string]uint64{}, map[string]uint64{}
	for k, v := range g.stats.Refused {
		s.Refused[k] = v
	}
	for k, v := range g.stats.Drops {
		s.Drops[k] = v
	}
	return s
}

// Close removes every rule the gateway installed. The NIC stays open.
func (g *Gateway) Close(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range g.conns {
		g.removeConn(c)
	}
	for k, r := range g.refused {
		if r.rule != 0 {
			g.queue(hal.DeleteOp(r.rule), opOwner{})
		}
		delete(g.refused, k)
	}
	return g.flush(ctx)
}

func (g *Gateway) inject(port hal.PortID, frame []byte) {
	g.injects = append(g.injects, inject{port, frame})
}

func (g *Gateway) flushInjects(ctx context.Context) error {
	var errs []error
	for len(g.injects) > 0 {
		port := g.injects[0].port
		var frames [][]byte
		rest := g.injects[:0]
		for _, in := range g.injects {
			if in.port == port {
				frames = append(frames, in.frame)
			} else {
				rest = append(rest, in)
			}
		}
		g.injects = rest
		if err := g.nic.Inject(ctx, port, frames); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

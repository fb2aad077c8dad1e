// Package ondemand puts a directory in front of a vswitch: the switch runs
// on the policy (tenants, VNETs, subnets, routes, ACLs, gateways, hosts and
// the VMs of its own host), and the mapping of any other destination is
// looked up when a packet first needs it.
//
// A Layer sits between the NIC's exception path and the switch
// (HandleBatch). An exception whose destination (or, arriving tunnelled,
// whose sender) is a customer address not resolved yet is held in a
// bounded queue of that destination while the lookup runs; when the lookup
// returns (Release), the record's VM joins the switch's state (Update) and
// the held packets are walked as usual. A queue that is full drops and
// counts the packet; a lookup that times out drops and counts the packets
// it held (nothing is sent on a guess); an address the directory does not
// know is walked and dropped by the switch as an unknown destination, and
// remembered for the negative TTL. Explain and Stats name the reasons.
//
// Records are kept for the cache's TTL; Revalidate looks expired ones up
// again and, when a version changed, updates the switch, which revalidates
// the flows installed from the old record. The store's shadows and
// activations still reach the layer through Update: an activation flips
// every host in one step, and a layer whose record of the VM does not know
// the activated generation looks it up again before it applies the state.
package ondemand

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"sync"

	"github.com/nicpath/nicpath/directory"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
)

// Switch is what the layer needs of a vswitch (*vswitch.Switch has it).
type Switch interface {
	HandleBatch(ctx context.Context, batch []hal.Exception) error
	Update(ctx context.Context, st *policy.State) error
}

// Config configures a Layer.
type Config struct {
	Switch Switch
	Host   string
	// VMOf names the VM behind each vport; Uplink is the uplink port.
	VMOf   map[hal.PortID]string
	Uplink hal.PortID
	// Resolver answers mappings (a directory/dht node, or a
	// directory.StateResolver).
	Resolver directory.Resolver
	Cache    directory.CacheConfig
	// QueueLen bounds the packets held per destination (default 16);
	// MaxQueues the destinations with held packets (default 4096).
	QueueLen, MaxQueues int
}

// Stats counts what the layer did with packets.
type Stats struct {
	Held, Released uint64
	// Dropped packets by reason.
	DroppedQueueFull, DroppedTimeout, DroppedError uint64
	// NotFound: lookups the directory answered with no record.
	NotFound uint64
	// Updates of the switch's state; Revalidated: records whose version
	// changed when looked up again.
	Updates, Revalidated uint64
	// Queued: packets held now; Queues: destinations being looked up
	// with packets held.
	Queued, Queues int
	Cache          directory.CacheStats
}

// Reasons a held packet is dropped, as Explain names them.
const (
	ReasonQueueFull = "queue full"
	ReasonTimeout   = "directory lookup timed out"
	ReasonError     = "directory lookup failed"
)

type queue struct {
	frames  []hal.Exception
	dropped uint64
}

// Layer is one host's on-demand resolution.
type Layer struct {
	cfg   Config
	cache *directory.Cache

	applyMu   sync.Mutex // one apply at a time, so the switch ends on the newest
	mu        sync.Mutex
	base      *policy.State
	eff       *policy.State // what the switch runs
	recs      map[directory.Dest]directory.Record
	activated map[string]uint64
	queues    map[directory.Dest]*queue
	done      []directory.Dest
	last      map[directory.Dest]string // last drop reason per destination
	inflight  int
	idle      *sync.Cond
	ready     chan struct{}
	stats     Stats
}

// New returns a layer for the switch, whose state it sets from base.
func New(ctx context.Context, cfg Config, base *policy.State) (*Layer, error) {
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 16
	}
	if cfg.MaxQueues <= 0 {
		cfg.MaxQueues = 4096
	}
	l := &Layer{cfg: cfg, cache: directory.NewCache(cfg.Resolver, cfg.Cache), recs: map[directory.Dest]directory.Record{},
		activated: map[string]uint64{}, queues: map[directory.Dest]*queue{}, last: map[directory.Dest]string{},
		ready: make(chan struct{}, 1)}
	l.idle = sync.NewCond(&l.mu)
	return l, l.Update(ctx, base)
}

// Local returns the part of st a host running on demand is given: st
// without the VMs that neither run on host nor migrate to it.
func Local(st *policy.State, host string) (*policy.State, error) {
	return effective(st, host, nil, nil)
}

// Ready is signalled when a lookup finished: call Release (from the
// datapath's loop, as HandleBatch). Update may come from another goroutine
// (the store's follower).
func (l *Layer) Ready() <-chan struct{} { return l.ready }

// Update takes a new state from the store: its policy, its VMs on this host
// and its shadows and activations. A remote VM whose activation names a
// generation its record does not know is looked up again first.
func (l *Layer) Update(ctx context.Context, st *policy.State) error {
	l.mu.Lock()
	for _, a := range st.Activations() {
		l.activated[a.VM] = max(l.activated[a.VM], a.Generation)
	}
	var stale []directory.Dest
	for d, r := range l.recs {
		if g, ok := l.activated[r.VM]; ok && r.Loc.Generation < g && r.Shadow.Generation < g {
			stale = append(stale, d)
		}
		if sh, ok := st.Shadow(r.VM); ok && sh.Generation > r.Loc.Generation && sh.Generation != r.Shadow.Generation {
			stale = append(stale, d)
		}
	}
	l.base = st
	l.mu.Unlock()
	for _, d := range stale {
		l.refresh(ctx, d)
	}
	return l.apply(ctx)
}

// refresh looks d up now and keeps a newer record.
func (l *Layer) refresh(ctx context.Context, d directory.Dest) bool {
	e2 := l.cache.Fetch(ctx, d)
	if e2.Err != nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if old, ok := l.recs[d]; ok && old.Version >= e2.Record.Version {
		return false
	}
	l.recs[d] = e2.Record
	l.stats.Revalidated++
	return true
}

// apply gives the switch the base state with the resolved VMs.
func (l *Layer) apply(ctx context.Context) error {
	l.applyMu.Lock()
	defer l.applyMu.Unlock()
	l.mu.Lock()
	st, err := effective(l.base, l.cfg.Host, l.recs, l.activated)
	l.stats.Updates++
	l.mu.Unlock()
	if err != nil {
		return err
	}
	if err := l.cfg.Switch.Update(ctx, st); err != nil {
		return err
	}
	l.mu.Lock()
	l.eff = st
	l.mu.Unlock()
	return nil
}

// dest returns the customer address a packet needs resolved, if any.
func (l *Layer) dest(e *hal.Exception, st *policy.State) (directory.Dest, bool) {
	var k hal.FlowKey
	var lay wire.Layout
	if err := wire.Parse(e.Frame(), e.InPort, &k, &lay); err != nil || !k.IsIP() {
		return directory.Dest{}, false
	}
	if e.InPort == l.cfg.Uplink {
		// Tunnelled: the receiver checks the sender's mapping.
		if k.TunKind == hal.EncapNone {
			return directory.Dest{}, false
		}
		vn, ok := st.VNETByVNI(k.VNI)
		if !ok {
			return directory.Dest{}, false
		}
		return l.need(st, vn.VNI, k.Src())
	}
	return l.destFrom(st, l.cfg.VMOf[e.InPort], k.Dst())
}

// destFrom returns the customer address a packet of VM vm toward target
// needs resolved, if any.
func (l *Layer) destFrom(st *policy.State, vmName string, target netip.Addr) (directory.Dest, bool) {
	vm, ok := st.VM(vmName)
	if !ok {
		return directory.Dest{}, false
	}
	for range 8 {
		r, ok := st.LookupRoute(vm.Tenant, target)
		if !ok {
			return directory.Dest{}, false
		}
		switch r.NextHop.Kind {
		case policy.NextHopAddress:
			target = r.NextHop.Via
			continue
		case policy.NextHopVNET:
			vn, ok := st.VNET(vm.Tenant, r.NextHop.VNET)
			if !ok {
				return directory.Dest{}, false
			}
			return l.need(st, vn.VNI, target)
		}
		return directory.Dest{}, false
	}
	return directory.Dest{}, false
}

func (l *Layer) need(st *policy.State, vni uint32, ca netip.Addr) (directory.Dest, bool) {
	if _, ok := st.Lookup(vni, ca); ok {
		return directory.Dest{}, false // local, or resolved already
	}
	return directory.Dest{VNI: vni, CA: ca}, true
}

// HandleBatch hands the switch the exceptions it can walk now and holds the
// others while their destinations are looked up.
func (l *Layer) HandleBatch(ctx context.Context, batch []hal.Exception) error {
	l.mu.Lock()
	st := l.eff
	l.mu.Unlock()
	pass := make([]hal.Exception, 0, len(batch))
	for i := range batch {
		e := &batch[i]
		d, need := l.dest(e, st)
		if !need {
			pass = append(pass, *e)
			continue
		}
		l.mu.Lock()
		q, held := l.queues[d]
		if !held {
			if en, ok := l.cache.Get(d); ok && en.Err != nil {
				// Known not to exist: the switch drops it as an unknown
				// destination.
				l.mu.Unlock()
				pass = append(pass, *e)
				continue
			}
			if len(l.queues) >= l.cfg.MaxQueues {
				l.stats.DroppedQueueFull++
				l.last[d] = ReasonQueueFull
				l.mu.Unlock()
				continue
			}
			q = &queue{}
			l.queues[d] = q
			l.inflight++
			l.cache.Lookup(ctx, d, func(directory.Entry) { l.finished(d) })
		}
		if len(q.frames) >= l.cfg.QueueLen {
			q.dropped++
			l.stats.DroppedQueueFull++
			l.last[d] = ReasonQueueFull
		} else {
			c := *e
			c.Buf = append([]byte(nil), e.Frame()...)
			c.Len = len(c.Buf)
			q.frames = append(q.frames, c)
			l.stats.Held++
		}
		l.mu.Unlock()
	}
	if len(pass) == 0 {
		return nil
	}
	return l.cfg.Switch.HandleBatch(ctx, pass)
}

func (l *Layer) finished(d directory.Dest) {
	l.mu.Lock()
	l.done = append(l.done, d)
	l.mu.Unlock()
	select {
	case l.ready <- struct{}{}:
	default:
	}
}

// Release applies the lookups that finished: resolved VMs join the
// switch's state and their held packets are walked; the packets of a lookup
// that failed are dropped and counted.
func (l *Layer) Release(ctx context.Context) error {
	l.mu.Lock()
	done := l.done
	l.done = nil
	changed := false
	type out struct {
		d      directory.Dest
		frames []hal.Exception
		err    error
	}
	var outs []out
	notFound := uint64(0)
	for _, d := range done {
		q := l.queues[d]
		delete(l.queues, d)
		e, _ := l.cache.Peek(d)
		switch {
		case e.Err == nil:
			if old, ok := l.recs[d]; !ok || old.Version < e.Record.Version {
				l.recs[d] = e.Record
				changed = true
			}
			delete(l.last, d)
		case errors.Is(e.Err, directory.ErrNotFound):
			notFound++
		}
		if q != nil {
			outs = append(outs, out{d, q.frames, e.Err})
		}
	}
	l.mu.Unlock()
	var errs []error
	if changed {
		if err := l.apply(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	var walk []hal.Exception
	l.mu.Lock()
	// The answers are counted with their packets' fates, in one step: a
	// reader that sees "no record" counted finds the packets released.
	l.stats.NotFound += notFound
	for _, o := range outs {
		switch {
		case o.err == nil || errors.Is(o.err, directory.ErrNotFound):
			walk = append(walk, o.frames...)
			l.stats.Released += uint64(len(o.frames))
		case errors.Is(o.err, directory.ErrTimeout):
			l.stats.DroppedTimeout += uint64(len(o.frames))
			l.last[o.d] = ReasonTimeout
		default:
			l.stats.DroppedError += uint64(len(o.frames))
			l.last[o.d] = ReasonError + ": " + o.err.Error()
		}
	}
	l.inflight -= len(done)
	if l.inflight == 0 {
		l.idle.Broadcast()
	}
	l.mu.Unlock()
	if len(walk) > 0 {
		if err := l.cfg.Switch.HandleBatch(ctx, walk); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Settle releases finished lookups until none runs (tests and a
// synchronous datapath).
func (l *Layer) Settle(ctx context.Context) error {
	for {
		l.mu.Lock()
		n, d := l.inflight, len(l.done)
		l.mu.Unlock()
		if n == 0 {
			return nil
		}
		if d == 0 {
			select {
			case <-l.ready:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := l.Release(ctx); err != nil {
			return err
		}
	}
}

// Pending reports whether lookups are running or finished but not released.
func (l *Layer) Pending() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inflight > 0
}

// Revalidate looks up again every record whose TTL expired; when a version
// changed, the switch's state is updated, which revalidates the flows
// installed from the old record.
func (l *Layer) Revalidate(ctx context.Context) error {
	changed := false
	for _, d := range l.cache.Expired() {
		l.mu.Lock()
		_, used := l.recs[d]
		l.mu.Unlock()
		if used && l.refresh(ctx, d) {
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return l.apply(ctx)
}

// Explain says what the layer knows of a destination.
func (l *Layer) Explain(vni uint32, ca netip.Addr) string {
	d := directory.Dest{VNI: vni, CA: ca}
	l.mu.Lock()
	defer l.mu.Unlock()
	if q, ok := l.queues[d]; ok {
		s := fmt.Sprintf("vni %d %s: waiting for a directory lookup, %d packets held", vni, ca, len(q.frames))
		if q.dropped > 0 {
			s += fmt.Sprintf(", %d dropped: %s", q.dropped, ReasonQueueFull)
		}
		return s
	}
	if r, ok := l.recs[d]; ok {
		s := fmt.Sprintf("vni %d %s: record version %d: VM %s on %s (%s, generation %d)", vni, ca, r.Version, r.VM, r.Loc.Host, r.Loc.PA, r.Loc.Generation)
		if r.Shadow.Host != "" {
			s += fmt.Sprintf(", shadow on %s (%s, generation %d)", r.Shadow.Host, r.Shadow.PA, r.Shadow.Generation)
		}
		return s
	}
	if why, ok := l.last[d]; ok {
		return fmt.Sprintf("vni %d %s: dropped: %s", vni, ca, why)
	}
	if e, ok := l.cache.Peek(d); ok && errors.Is(e.Err, directory.ErrNotFound) {
		return fmt.Sprintf("vni %d %s: the directory has no record", vni, ca)
	}
	return fmt.Sprintf("vni %d %s: not looked up", vni, ca)
}

// Need returns the destination a packet from the local VM vm to dst
// needs resolved (following the routes as the switch does), or, when
// uplink is set, the one a tunnelled packet of VNI vni from dst's sender
// needs: ok is false when the packet needs no lookup (a local VM, a
// resolved address, a destination no route reaches).
func (l *Layer) Need(vm string, uplink bool, vni uint32, addr netip.Addr) (directory.Dest, bool) {
	l.mu.Lock()
	st := l.eff
	l.mu.Unlock()
	if uplink {
		if _, ok := st.VNETByVNI(vni); !ok {
			return directory.Dest{}, false
		}
		return l.need(st, vni, addr)
	}
	return l.destFrom(st, vm, addr)
}

// Stats returns the layer's counters.
func (l *Layer) Stats() Stats {
	l.mu.Lock()
	s := l.stats
	s.Queues = len(l.queues)
	for _, q := range l.queues {
		s.Queued += len(q.frames)
	}
	l.mu.Unlock()
	s.Cache = l.cache.Stats()
	return s
}

// effective builds the state a host runs: st's policy and hosts, the VMs
// of st that run on or migrate to host, with their shadows and
// activations, and the VMs of recs at the location of their newest record.
func effective(st *policy.State, host string, recs map[directory.Dest]directory.Record, activated map[string]uint64) (*policy.State, error) {
	b := policy.NewBuilder()
	if st.RouterMAC() != policy.DefaultRouterMAC {
		b.SetRouterMAC(st.RouterMAC())
	}
	for _, h := range st.Hosts() {
		b.AddHost(h)
	}
	for _, g := range st.Gateways() {
		b.AddGateway(g)
	}
	for _, t := range st.Tenants() {
		b.AddTenant(t)
		for _, r := range st.Routes(t.Name) {
			if r.Origin == policy.RouteExplicit {
				b.AddRoute(r)
			}
		}
		for _, g := range st.GatewayRules(t.Name) {
			b.AddGatewayRule(g)
		}
		for _, a := range st.ACLs(t.Name) {
			b.AddACL(a)
		}
	}
	for _, v := range st.VNETs() {
		b.AddVNET(v)
	}
	local := map[string]bool{}
	for _, v := range st.VMs() {
		sh, hasShadow := st.Shadow(v.Name)
		if v.Host != host && !(hasShadow && sh.Host == host) {
			continue
		}
		local[v.Name] = true
		b.AddVM(v)
		if hasShadow {
			b.AddShadow(sh)
		}
	}
	for _, a := range st.Activations() {
		if local[a.VM] {
			b.AddActivation(a)
		}
	}
	// Remote VMs from their records, newest first.
	byVM := map[string][]directory.Record{}
	for _, r := range recs {
		if !local[r.VM] {
			byVM[r.VM] = append(byVM[r.VM], r)
		}
	}
	names := make([]string, 0, len(byVM))
	for n := range byVM {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		rs := byVM[n]
		slices.SortFunc(rs, func(a, b directory.Record) int {
			if c := cmp.Compare(b.Version, a.Version); c != 0 {
				return c
			}
			return a.CA.Compare(b.CA)
		})
		top := rs[0]
		vm := policy.VM{Name: n, Tenant: top.Tenant, VNET: top.VNET, MAC: top.MAC, Host: top.Loc.Host, Generation: top.Loc.Generation}
		for _, r := range rs {
			vm.CAs = append(vm.CAs, r.CA)
		}
		slices.SortFunc(vm.CAs, netip.Addr.Compare)
		vm.CAs = slices.Compact(vm.CAs)
		b.AddVM(vm)
		if top.Shadow.Host != "" {
			b.AddShadow(policy.Shadow{VM: n, Host: top.Shadow.Host, Generation: top.Shadow.Generation})
			if g, ok := st.ActiveGeneration(n); ok && g == top.Shadow.Generation {
				b.AddActivation(policy.Activation{VM: n, Generation: g})
			} else if activated[n] == top.Shadow.Generation {
				// The store removed the activation as the VM's new
				// location became its own; this record is older than
				// that, and the activation still holds for it.
				b.AddActivation(policy.Activation{VM: n, Generation: top.Shadow.Generation})
			}
		}
	}
	return b.Build()
}

package vswitch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
)

// Config configures a Switch.
type Config struct {
	NIC   hal.NIC
	Host  string        // this host's name in the policy
	State *policy.State // the initial desired state
	// Ports names the vport of every VM that runs (or may come to run, for
	// a migration toward this host) here.
	Ports  map[string]hal.PortID
	Uplink hal.PortID
	// NextHopMAC is the outer destination MAC of encapsulated packets (the
	// underlay next hop). The default is the broadcast address, which a
	// receiver that accepts tunnelled frames only for its own MAC (every
	// nicpath host; see the package doc) refuses: set it.
	NextHopMAC hal.MAC
	Logger     *slog.Logger
	// Clock returns the time; tests drive aging with it. Default time.Now.
	Clock func() time.Time
	// FlowIdle: a flow without packets for this long is removed. Default 30s.
	FlowIdle time.Duration
	// ConnIdle: a tracked connection without packets for this long is
	// removed with the flows that relied on it. Default 2×FlowIdle.
	ConnIdle time.Duration
	// BatchSize is how many exceptions Run reads at once. Default 64: large
	// enough that one Apply covers many new flows, small enough that the
	// first packet of a flow waits for at most 63 others.
	BatchSize int
	// CookieTag tells this switch's rules from another switch's on a shared
	// NIC; it is part of the owner cookie.
	CookieTag uint16
	// DisableOffload keeps every flow in the host (for comparisons).
	DisableOffload bool
	// DisableWalkMemo makes the slow path walk the policy layers for every
	// new flow, even one that differs from a recent walk only in its
	// transport ports (walkmemo.go). For measurements and comparisons:
	// with the memo on, many connections between the same two endpoints
	// cost one walk.
	DisableWalkMemo bool
	// Proactive programs per-destination rules ahead of traffic where the
	// NIC takes wildcarded rules with priorities (see proactive.go).
	Proactive bool
	// HostHandler, when set, receives the packets the policy hands to the
	// host (address resolution, routes to the host). The frame is only
	// valid during the call.
	HostHandler func(inPort hal.PortID, reason policy.Reason, frame []byte)
}

// Cookie layout: the owner magic in the high 32 bits, the CookieTag in bits
// 16–31, the policy epoch (mod 2^16) that programmed the rule in the low 16.
const (
	cookieMagic    = 0x6e707673 // "npvs"
	cookieOwnerSft = 16
)

// Priority of unified flows: exact matches win over any masked rule another
// agent might have installed below them.
const prioExact = 0x8000

// headroom in front of frames executed in the host: the largest outer
// headers (IPv6 + UDP + Geneve with options + Ethernet + VLAN) fit.
const headroom = 384

// Switch is one host's virtual switch.
type Switch struct {
	cfg       Config
	nic       hal.NIC
	caps      hal.Capabilities
	log       *slog.Logger
	uplinkMAC hal.MAC
	counting  bool // rules carry a Count action

	mu        sync.Mutex
	cur       *compiled
	epoch     uint64
	vmIDs     interner
	tenantIDs interner
	flows     flowTable
	acts      map[actKey]*actSet
	lastAct   *actSet
	pro       map[proKey]*proRule
	cross     map[string][]*flow // flows depending on a moving VM outside its scope
	scopes    map[string]*scope
	scopeByID []*scope // scopes by VM id (scopeOfVM)
	ct        *conntrack
	denied    map[connKey][]*flow
	nextID    hal.RuleID
	stats     counters
	needRecon bool
	closed    bool
	ep        endpoint // the tunnel endpoint the NIC filters for (endpoint.go)
	// retirePending: a scope moved to a new generation; Maintain promotes
	// its flows' shadow rules and deletes the old ones.
	retirePending bool
	rollback      map[string]rollbackPoint
	atomic        bool       // flush with ApplyAtomic (policy updates)
	walks         []walkMemo // recent port-independent walks (walkmemo.go)
	mtu           mtuState   // packets too big for their egress (mtu.go)

	// Per-batch scratch, reused.
	ops     []hal.Op
	refs    []opRef
	results []hal.OpResult
	pend    []pending
	arena   []byte
	injects []portFrames
	ikey    hal.FlowKey
	lay     wire.Layout
	touched uint64 // keeps the batch's slot touches from being optimized away
	// hal.Exact's mask per key shape, once known (see exact).
	exactMasks [numShapes]hal.FlowKey
	exactKnown [numShapes]bool
}

type opPurpose uint8

const (
	opAddPrimary opPurpose = iota
	opAddShadow
	opModPrimary
	opModShadow
	opDelete
	opProPrimary
	opProShadow
)

type opRef struct {
	f       *flow
	pro     *proRule
	purpose opPurpose
}

type pending struct {
	idx    int
	f      *flow
	hash   uint64 // of key in the flow table
	key    hal.FlowKey
	layout wire.Layout
}

type portFrames struct {
	port   hal.PortID
	frames [][]byte
}

// New builds a switch on cfg.NIC and reconciles the NIC's table with it
// (rules from an earlier run of the switch are removed).
func New(cfg Config) (*Switch, error) {
	if cfg.NIC == nil {
		return nil, errors.New("vswitch: no NIC")
	}
	if cfg.State == nil {
		return nil, errors.New("vswitch: no policy state")
	}
	if cfg.NextHopMAC.IsZero() {
		cfg.NextHopMAC = hal.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.FlowIdle <= 0 {
		cfg.FlowIdle = 30 * time.Second
	}
	if cfg.ConnIdle <= 0 {
		cfg.ConnIdle = 2 * cfg.FlowIdle
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 64
	}
	s := &Switch{
		cfg:    cfg,
		nic:    cfg.NIC,
		caps:   cfg.NIC.Capabilities(),
		log:    cfg.Logger,
		acts:   map[actKey]*actSet{},
		scopes: map[string]*scope{},
		ct:     newConntrack(),
		denied: map[connKey][]*flow{},
		nextID: 1,
		pro:    map[proKey]*proRule{},
		cross:  map[string][]*flow{},
		walks:  make([]walkMemo, walkMemoSize),
	}
	// Seeded now: HandleBatch hashes a batch's keys before it adds flows.
	s.flows.init(0)
	uplinkFound := false
	for _, p := range s.nic.Ports() {
		if p.ID == cfg.Uplink {
			s.uplinkMAC, uplinkFound = p.MAC, true
		}
	}
	if !uplinkFound {
		return nil, fmt.Errorf("vswitch: uplink port %d is not a port of the NIC", cfg.Uplink)
	}
	s.counting = s.caps.Counters.PerRule && s.caps.HasAction(hal.ActionCount)
	if s.caps.ExceptionPath && s.caps.TunnelMissesUnseen && s.caps.Decaps != 0 {
		s.log.Warn("the NIC never hands tunnelled misses to the host: the first packet of a connection a remote VM opens is never walked, and Explain says so", "decaps", s.caps.Decaps)
	}
	s.cur = compile(cfg.State, cfg.Host, cfg.Ports, &s.vmIDs, &s.tenantIDs)
	s.cur.compileAlts(cfg.Ports, &s.vmIDs, &s.tenantIDs)
	s.initEndpoint()
	if err := s.syncEndpoint(context.Background()); err != nil {
		s.log.Warn("setting the NIC's tunnel endpoint failed; the host drops tunnelled frames for other endpoints, and Maintain tries again", "err", err)
	}
	// The compiled state is what the switch runs on; keeping the initial
	// State too would pin it in memory after every later Update.
	s.cfg.State = nil
	if _, err := s.Reconcile(context.Background()); err != nil {
		s.log.Warn("initial reconcile failed; rules are retried on Maintain", "err", err)
	}
	if s.cfg.Proactive {
		s.mu.Lock()
		s.syncProactive()
		s.flush(context.Background())
		s.mu.Unlock()
	}
	return s, nil
}

func (s *Switch) now() int64 { return s.cfg.Clock().UnixNano() }

func (s *Switch) cookie() hal.Cookie {
	return hal.Cookie(uint64(cookieMagic)<<32 | uint64(s.cfg.CookieTag)<<cookieOwnerSft | s.epoch&0xffff)
}

// ours reports whether a rule's cookie says this switch installed it.
func (s *Switch) ours(c hal.Cookie) bool {
	return uint64(c)>>cookieOwnerSft == uint64(cookieMagic)<<16|uint64(s.cfg.CookieTag)
}

func (s *Switch) offloading() bool {
	return !s.cfg.DisableOffload && s.caps.ExceptionPath
}

// Run reads the exception path in batches and handles them until ctx is
// done, and runs Maintain (counters, aging, retirement of old generations,
// reconciliation after driver errors) every quarter of FlowIdle.
func (s *Switch) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(max(s.cfg.FlowIdle/4, 10*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := s.Maintain(ctx); err != nil && ctx.Err() == nil {
					s.log.Warn("maintenance", "err", err)
				}
			}
		}
	}()
	defer wg.Wait()
	batch := make([]hal.Exception, s.cfg.BatchSize)
	for i := range batch {
		batch[i].Buf = make([]byte, 16384)
	}
	for {
		n, err := s.nic.ReadExceptions(ctx, batch)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, hal.ErrClosed) {
				return nil
			}
			s.log.Warn("reading exceptions", "err", err)
			// Do not spin on a persistent driver error.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Millisecond):
			}
			continue
		}
		if err := s.HandleBatch(ctx, batch[:n]); err != nil {
			s.log.Warn("handling exceptions", "err", err)
		}
	}
}

// HandleBatch handles one batch of exception packets: it looks every packet
// up in the flow cache, walks the policy layers for the first packet of a
// flow, offloads the new flows the NIC can take in one Apply, and then
// executes every packet's actions in the host and reinjects it. It is what
// Run does with each batch; tests and benchmarks call it directly.
func (s *Switch) HandleBatch(ctx context.Context, batch []hal.Exception) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return hal.ErrClosed
	}
	now := s.now()
	s.pend = s.pend[:0]
	// First pass: parse every packet and hash its key; then touch the slot
	// where each lookup starts. The first packets of new flows all miss in
	// a cache far larger than the CPU's; touched together, their cache
	// misses overlap instead of coming one per packet.
	for i := range batch {
		e := &batch[i]
		if e.Reason < hal.NumReasons {
			s.stats.exceptions[e.Reason]++
		}
		s.stats.packets++
		switch e.Reason {
		case hal.ReasonSealed:
			s.drop(DropSealed)
			continue
		case hal.ReasonMalformed:
			s.drop(DropMalformed)
			continue
		case hal.ReasonFragment:
			s.drop(DropFragment)
			continue
		case hal.ReasonMTU:
			// Too big for its egress: executed like any packet of its
			// flow, whose MTU check answers or fragments it (mtu.go).
			s.nicSaysTooBig(now)
		case hal.ReasonTTL:
			s.drop(DropTTL)
			continue
		}
		if e.Truncated {
			s.drop(DropTruncated)
			continue
		}
		// Parse into the pending slot: the key and layout live in memory
		// the switch reuses, so parsing allocates nothing.
		s.pend = append(s.pend, pending{idx: i})
		p := &s.pend[len(s.pend)-1]
		if err := wire.Parse(e.Frame(), e.InPort, &p.key, &p.layout); err != nil {
			s.pend = s.pend[:len(s.pend)-1]
			switch wire.ReasonOf(err) {
			case hal.ReasonFragment:
				s.drop(DropFragment)
			case hal.ReasonUnsupported:
				s.drop(DropUnparsable)
			default:
				s.drop(DropMalformed)
			}
			continue
		}
		if p.key.EthType == hal.EtherTypeSealed {
			// Fail closed: the host never opens a sealed address. A NIC
			// with crypto opens them itself; one that cannot, or that
			// refused the seal, hands them here only to be dropped.
			s.pend = s.pend[:len(s.pend)-1]
			s.drop(DropSealed)
			continue
		}
		if s.notLocal(e.Frame(), &p.key) {
			// Not addressed to this tunnel endpoint: nothing of it is
			// looked at, decapsulated or remembered (no flow).
			s.pend = s.pend[:len(s.pend)-1]
			s.drop(DropNotLocal)
			continue
		}
		p.hash = s.flows.hashKey(&p.key)
	}
	// In a loop of their own, so that the loads are in flight together.
	var touched uint64
	for i := range s.pend {
		touched += s.flows.touch(s.pend[i].hash)
	}
	s.touched = touched
	// Second pass, in the packets' order: a flow that an earlier packet of
	// the batch created is found by the later ones.
	for i := range s.pend {
		p := &s.pend[i]
		e := &batch[p.idx]
		f := s.flows.getHashed(&p.key, p.hash)
		if f == nil {
			ttl := ttlOf(e.Frame(), &p.layout)
			f = s.newFlowHashed(&p.key, p.hash, ttl, now, true)
			if f == nil {
				s.drop(DropTTL) // p.f stays nil: the packet is not executed
				continue
			}
		} else if f.scope != nil && f.gen != f.scope.active && f.shadow == nil {
			// Created for a generation that is no longer live (a rollback
			// came after it): walk the layers again before using it.
			s.reflow(f, now, true)
		} else if f.loc == LocNIC && e.Reason != hal.ReasonMTU {
			// A packet of an offloaded flow reached the host: it raced the
			// rule's installation, or the NIC lost the rule. Handle it here.
			s.stats.hitOffloaded++
		}
		p.f = f
	}
	s.flush(ctx)
	for i := range s.pend {
		p := &s.pend[i]
		if p.f == nil {
			continue
		}
		e := &batch[p.idx]
		s.execute(e.InPort, e.Frame(), &p.layout, p.f, now)
	}
	return s.flushInjects(ctx)
}

// ttlOf reads the (inner) IPv4 TTL or IPv6 hop limit of a parsed frame.
func ttlOf(frame []byte, l *wire.Layout) uint8 {
	if l.L3 < 0 {
		return 0
	}
	switch l.EthType {
	case hal.EtherTypeIPv4:
		if l.L3+8 < len(frame) {
			return frame[l.L3+8]
		}
	case hal.EtherTypeIPv6:
		if l.L3+7 < len(frame) {
			return frame[l.L3+7]
		}
	}
	return 0
}

// newFlow classifies key, records the flow and queues its offload. It
// returns nil when the packet is dropped for its TTL alone (the flow itself
// is fine: the next packet with a usable TTL creates it). reverse says
// whether to pre-install the reverse flows of connections it opens.
func (s *Switch) newFlow(k *hal.FlowKey, ttl uint8, now int64, reverse bool) *flow {
	return s.newFlowHashed(k, s.flows.hashKey(k), ttl, now, reverse)
}

// newFlowHashed is newFlow with the key's hash in the flow table known
// (HandleBatch hashed it for the lookup).
func (s *Switch) newFlowHashed(k *hal.FlowKey, h uint64, ttl uint8, now int64, reverse bool) *flow {
	var v verdict
	s.classifyFlow(s.cur, k, ttl, &v)
	if v.action == policy.Drop && v.reason == policy.ReasonTTLExpired {
		return nil
	}
	f := &flow{key: *k, created: now, lastUsed: now}
	s.flows.putHashed(f, h)
	s.stats.flowsCreated++
	s.setVerdict(f, &v, now)
	s.place(f)
	s.placeShadow(f)
	if reverse && v.action != policy.Drop && v.nrec > 0 {
		s.preinstallReverse(f, &v)
	}
	return f
}

// setVerdict records v as f's result: actions, dependencies, scope and the
// connection-tracking entries it opens or uses.
func (s *Switch) setVerdict(f *flow, v *verdict, now int64) {
	old := f.acts
	f.acts = s.intern(actKeyOf(v))
	s.release(old)
	f.tenant, f.srcVM, f.dstVM = v.tenant, v.srcVM, v.dstVM
	f.gateway, f.routed = v.gateway, v.routed
	// The flow's scope is the VM whose location it embeds: its receiver,
	// or its sender when the sender is the one with a pending move (a VM
	// leaving this host, or a remote sender whose PA will change). A flow
	// that also depends on another VM with a pending move is listed under
	// that VM and re-evaluated when it moves: such flows are few, and only
	// they are touched then.
	// The VMs are looked up by their interned ids (a verdict's scopeVM is
	// its receiver, dstName, whose id is dstVM), not hashed by name.
	f.scope = nil
	scopeVM, other := v.scopeVM, v.srcName
	scopeID, otherID := v.dstVM, v.srcVM
	if v.srcName != "" && s.cur.moving(v.srcVM) {
		scopeVM, other = v.srcName, v.dstName
		scopeID, otherID = v.srcVM, v.dstVM
	}
	if other != "" && otherID != scopeID && s.cur.moving(otherID) {
		if l := s.cross[other]; len(l) == 0 || l[len(l)-1] != f {
			s.cross[other] = append(l, f)
		}
	}
	if scopeVM != "" && s.caps.Generations && s.offloading() {
		f.scope = s.scopeOfVM(scopeID, scopeVM)
	}
	// Connections.
	if x := f.x; x != nil {
		for _, c := range x.uses {
			delete(c.users, f)
		}
		x.uses = x.uses[:0]
	}
	for i := 0; i < v.nused; i++ {
		if c := s.ct.conns[v.used[i]]; c != nil {
			c.users[f] = struct{}{}
			x := f.extra()
			x.uses = append(x.uses, c)
		}
	}
	if v.hasDenied {
		if l := s.denied[v.denied]; len(l) == 0 || l[len(l)-1] != f {
			s.denied[v.denied] = append(l, f)
		}
	}
	if v.action != policy.Drop {
		for i := 0; i < v.nrec; i++ {
			s.openConn(f, v.records[i], now)
		}
	}
}

// scopeOfVM is scopeOf for a VM whose interned id the caller has: a
// scope's id is its VM's, and scopes are also indexed by it, which spares
// hashing the name for every first packet.
func (s *Switch) scopeOfVM(id uint32, vm string) *scope {
	if int(id) < len(s.scopeByID) {
		if sc := s.scopeByID[id]; sc != nil {
			return sc
		}
	}
	sc := s.scopeOf(vm)
	if sc != nil && uint32(sc.id) == id {
		if int(id) >= len(s.scopeByID) {
			s.scopeByID = append(s.scopeByID, make([]*scope, int(id)+1-len(s.scopeByID))...)
		}
		s.scopeByID[id] = sc
	}
	return sc
}

func (s *Switch) scopeOf(vm string) *scope {
	sc := s.scopes[vm]
	if sc == nil {
		id := hal.Scope(s.vmIDs.id(vm))
		if s.caps.MaxScopes > 0 && int(id) > s.caps.MaxScopes {
			return nil
		}
		sc = &scope{id: id, vm: vm}
		s.scopes[vm] = sc
	}
	return sc
}

// openConn records a tracked connection opened by f. A flow that an ACL of
// the same layer denied for that very packet is re-evaluated: the reply is
// now part of an allowed connection.
func (s *Switch) openConn(f *flow, k connKey, now int64) {
	c := s.ct.conns[k]
	if c == nil {
		c = &conn{key: k, lastSeen: now, users: map[*flow]struct{}{}}
		s.ct.conns[k] = c
		s.stats.connsOpened++
		if fs := s.denied[k]; len(fs) > 0 {
			delete(s.denied, k)
			for _, d := range fs {
				if !d.dead {
					s.refresh(d, now)
				}
			}
		}
	}
	c.lastSeen = max(c.lastSeen, now)
	// The opener is a user too: when the connection expires, the flow that
	// opened it goes with it, so that its next packet opens it again.
	c.users[f] = struct{}{}
	x := f.extra()
	for _, o := range x.opened {
		if o == c {
			return
		}
	}
	x.opened = append(x.opened, c)
}

// place decides where a flow with fresh actions lives: it queues an add to
// the NIC when the NIC can take it and leaves it in the host with the
// reason otherwise.
func (s *Switch) place(f *flow) {
	a := f.acts
	if !a.offload {
		s.toHost(f, WhyPolicy, nil)
		return
	}
	if !s.offloading() {
		s.toHost(f, WhyNoOffload, nil)
		return
	}
	gen := hal.Generation(0)
	var sc hal.Scope
	if f.scope != nil {
		sc, gen = f.scope.id, f.scope.active
	}
	if err := s.validate(a, &f.key, sc != 0, sc, gen); err != nil {
		s.toHost(f, whyOf(err), err)
		return
	}
	f.gen = gen
	f.id = s.newID()
	f.loc = LocNone
	s.queueRule(hal.OpAdd, f.id, &f.key, a, sc, gen)
	s.refs = append(s.refs, opRef{f: f, purpose: opAddPrimary})
}

// placeShadow pre-installs f's actions for the next generation of its scope
// when the scope's VM has an inactive shadow.
func (s *Switch) placeShadow(f *flow) {
	// A scope's id is its VM's: most scopes have no shadow, found without
	// hashing the name.
	if f.scope == nil || !s.cur.moving(uint32(f.scope.id)) {
		return
	}
	alt := s.cur.alt[f.scope.vm]
	if alt == nil {
		return
	}
	var v verdict
	s.classifyFlow(alt, &f.key, 64, &v)
	a := s.intern(actKeyOf(&v))
	s.release(f.shadow)
	f.shadow = a
	if !a.offload || f.loc == LocHost {
		return
	}
	gen := f.scope.active + 1
	if err := s.validate(a, &f.key, true, f.scope.id, gen); err != nil {
		return
	}
	f.shadowID = s.newID()
	s.queueRule(hal.OpAdd, f.shadowID, &f.key, a, f.scope.id, gen)
	s.refs = append(s.refs, opRef{f: f, purpose: opAddShadow})
}

func (s *Switch) toHost(f *flow, why Why, err error) {
	f.loc, f.why = LocHost, why
	f.setFailure(err)
	s.stats.fallbacks[why]++
}

func (s *Switch) newID() hal.RuleID {
	// IDs only grow; reconciliation moves nextID past every rule the NIC
	// holds, so a new ID is never taken.
	id := s.nextID
	s.nextID++
	return id
}

func (s *Switch) rule(id hal.RuleID, k *hal.FlowKey, a *actSet, sc hal.Scope, gen hal.Generation) hal.Rule {
	return hal.Rule{ID: id, Priority: prioExact, Match: hal.Exact(k), Actions: a.acts,
		Cookie: s.cookie(), Scope: sc, Generation: gen}
}

// queueRule queues an operation on a unified flow's rule, built in place in
// the batch: an Op is 256 bytes, and building it by value (rule, then op,
// then append) copied it three times per first packet.
func (s *Switch) queueRule(kind hal.OpKind, id hal.RuleID, k *hal.FlowKey, a *actSet, sc hal.Scope, gen hal.Generation) {
	s.ops = append(s.ops, hal.Op{})
	op := &s.ops[len(s.ops)-1]
	op.Kind = kind
	r := &op.Rule
	r.ID, r.Priority, r.Actions, r.Cookie, r.Scope, r.Generation = id, prioExact, a.acts, s.cookie(), sc, gen
	s.exact(&r.Match, k)
}

// exact sets m to hal.Exact(k). The mask hal.Exact gives depends only on
// the key's shape (see shapeOf), so it is taken from hal.Exact once per
// shape and the key is masked with it.
func (s *Switch) exact(m *hal.Match, k *hal.FlowKey) {
	sh := shapeOf(k, false)
	mk := &s.exactMasks[sh]
	if !s.exactKnown[sh] {
		*mk = hal.Exact(k).Mask
		s.exactKnown[sh] = true
	}
	m.Mask = *mk
	m.Key = *k
	m.Normalize()
}

// validate asks the NIC whether it can take a rule of this shape with
// these actions; answers are cached per action set and shape.
func (s *Switch) validate(a *actSet, k *hal.FlowKey, scoped bool, sc hal.Scope, gen hal.Generation) error {
	sh := shapeOf(k, scoped)
	switch a.valid[sh] {
	case 1:
		return nil
	case 2:
		return a.verr[sh]
	}
	r := s.rule(1, k, a, sc, gen)
	err := s.nic.Validate(&r)
	if err == nil {
		a.valid[sh] = 1
		return nil
	}
	if errors.Is(err, hal.ErrNotSupported) || errors.Is(err, hal.ErrInvalidRule) {
		a.valid[sh], a.verr[sh] = 2, err
	}
	return err
}

// flush sends the queued operations to the NIC in batches of the NIC's
// size and settles every flow by its result.
func (s *Switch) flush(ctx context.Context) {
	if len(s.ops) == 0 {
		return
	}
	// Settling a result may queue more operations (a delete after a failed
	// modify); they go out in the next round of the loop.
	for start := 0; start < len(s.ops); {
		chunk := s.caps.MaxBatch
		if chunk <= 0 {
			chunk = len(s.ops)
		}
		end := min(start+chunk, len(s.ops))
		ops := s.ops[start:end]
		if cap(s.results) < len(ops) {
			s.results = make([]hal.OpResult, len(ops))
		}
		res := s.results[:len(ops)]
		clear(res)
		var err error
		if aa, ok := s.nic.(hal.AtomicApplier); ok && s.atomic && s.caps.AtomicBatch {
			// A policy update lands on the NIC in one step where the
			// driver can promise it: every packet sees the old rules or
			// the new ones.
			err = aa.ApplyAtomic(ctx, ops, res)
		} else {
			err = s.nic.Apply(ctx, ops, res)
		}
		if err != nil && !isBatchError(err) {
			// The whole call failed: nothing is known to have landed.
			for i := range res {
				if res[i].Err == nil {
					res[i].Err = err
				}
			}
			s.needRecon = true
		}
		s.stats.applyCalls++
		for i := range ops {
			s.settle(&ops[i], s.refs[start+i], res[i].Err)
		}
		start = end
	}
	clear(s.ops)
	s.ops = s.ops[:0]
	clear(s.refs)
	s.refs = s.refs[:0]
}

// isBatchError reports whether err says which operations of a batch failed
// (the results carry them). It is its own function because errors.As moves
// its target to the heap: declared in flush, that would cost an allocation
// per batch even when Apply succeeds.
func isBatchError(err error) bool {
	var be *hal.BatchError
	return errors.As(err, &be)
}

func (s *Switch) settle(op *hal.Op, ref opRef, err error) {
	f := ref.f
	if err != nil {
		s.stats.opErrors++
		if !errors.Is(err, hal.ErrNotSupported) && !errors.Is(err, hal.ErrTableFull) {
			s.needRecon = true
		}
	}
	switch ref.purpose {
	case opAddPrimary, opModPrimary:
		if f.dead || f.id != op.Rule.ID {
			return // the flow went away or moved on meanwhile
		}
		if err == nil {
			if ref.purpose == opAddPrimary {
				s.stats.offloaded++
			} else {
				s.stats.reprogrammed++
			}
			f.loc, f.why = LocNIC, WhyOffloaded
			f.setFailure(nil)
			return
		}
		if errors.Is(err, hal.ErrExists) {
			// Someone else's rule has this ID: take another one next time.
			s.needRecon = true
		}
		if ref.purpose == opModPrimary {
			// The old rule may still be there with stale actions: remove it.
			s.queueDelete(f.id)
		}
		f.id = 0
		s.toHost(f, whyOf(err), err)
		if f.shadowID != 0 {
			s.queueDelete(f.shadowID)
			f.shadowID = 0
		}
	case opAddShadow, opModShadow:
		if f.dead || f.shadowID != op.Rule.ID {
			return
		}
		if err == nil {
			return
		}
		if ref.purpose == opModShadow {
			s.queueDelete(f.shadowID)
		}
		f.shadowID = 0
	case opDelete:
		if err != nil && !errors.Is(err, hal.ErrNotFound) {
			s.needRecon = true
		}
	case opProPrimary:
		r := ref.pro
		if s.pro[r.key] != r || r.id != op.Rule.ID {
			return
		}
		if err == nil {
			r.landed = true
			return
		}
		// Without the rule, the destination takes the slow path as usual.
		if op.Kind == hal.OpModify {
			s.queueDelete(r.id)
		}
		s.stats.proRefused++
		r.id = 0
		s.dropPro(r)
	case opProShadow:
		r := ref.pro
		if s.pro[r.key] != r || r.shadowID != op.Rule.ID || err == nil {
			return
		}
		if op.Kind == hal.OpModify {
			s.queueDelete(r.shadowID)
		}
		r.shadowID = 0
	}
}

func (s *Switch) queueDelete(id hal.RuleID) {
	if id == 0 {
		return
	}
	s.ops = append(s.ops, hal.DeleteOp(id))
	s.refs = append(s.refs, opRef{purpose: opDelete})
}

// Close stops the switch. It leaves the NIC's rules in place (the NIC's
// owner closes the NIC); a new switch reconciles them.
func (s *Switch) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

package vswitch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
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
	// Handler, when set, is given each batch Run reads instead of
	// HandleBatch: a layer in front of the switch (directory/ondemand
	// holds packets whose destination is being looked up) that hands
	// the switch what it can walk.
	Handler func(ctx context.Context, batch []hal.Exception) error
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
	// DisablePortWildcards offloads every new flow as an exact rule. By
	// default a flow whose verdict does not depend on its transport ports
	// and tracks no connection is offloaded with the ports wildcarded, so
	// that later connections between the same endpoints never reach the
	// host (wildcard.go), on NICs that resolve overlapping rules by
	// priority.
	DisablePortWildcards bool
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
	off       offloader // operations toward the NIC (offload.go)
	cur       *compiled
	vmIDs     interner
	tenantIDs interner
	flows     flowTable
	// acts interns action lists by actKey.hash: a Go map keyed by the
	// actKey hashed the padded key field by field for every first packet.
	acts      actTable
	actSeed   [2]uint64
	lastAct   *actSet
	deadActs  *actSet // what removed flows hold: empty, never interned nor released
	pro       map[proKey]*proRule
	cross     map[string][]*flow // flows depending on a moving VM outside its scope
	scopes    map[string]*scope
	scopeByID []*scope // scopes by VM id (scopeOfVM)
	ct        *conntrack
	denied    map[connKey][]*flow
	stats     counters
	needRecon bool
	closed    bool
	ep        endpoint // the tunnel endpoint the NIC filters for (endpoint.go)
	// retirePending: a scope moved to a new generation; Maintain promotes
	// its flows' shadow rules and deletes the old ones.
	retirePending bool
	// retryDue: a flow may be in the host for a full table or a driver
	// error since retryHost last looked (toHost sets it), so Maintain
	// scans the flows for it; otherwise it does not.
	retryDue bool
	rollback map[string]rollbackPoint
	walks    []walkMemo // recent port-independent walks (walkmemo.go)
	mtu      mtuState   // packets too big for their egress (mtu.go)
	seal     sealState  // sealed routes pushed to the NIC (sealroute.go)
	learn    learnState // addresses the NIC learned (learned.go)
	// Port-wildcard flows by their key without ports (wildcard.go).
	wilds map[hal.FlowKey]*flow
	// slab holds the flows allocFlow hands out next (flow.go), from
	// slabNext on; slabs every slab that holds a flow of the table, in
	// allocation order, the current one last (tableFlows).
	slab     *flowSlab
	slabNext int
	slabs    []*flowSlab
	// Slabs whose flows are all dead, on their way back to allocFlow
	// (recycleSlabs): found by tableFlows since the last Maintain, found
	// before it, and ready.
	emptied, cooling, spare []*flowSlab

	// Per-batch scratch, reused.
	pend    []pending
	arena   []byte
	injects []portFrames
	ikey    hal.FlowKey
	lay     wire.Layout
	pf      prefetcher
	hint    *routeHint // the next walk's route, looked up ahead (classifyFlow)
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
		cfg:     cfg,
		nic:     cfg.NIC,
		caps:    cfg.NIC.Capabilities(),
		log:     cfg.Logger,
		actSeed: [2]uint64{rand.Uint64() | 1, rand.Uint64() | 1},
		scopes:  map[string]*scope{},
		ct:      newConntrack(),
		denied:  map[connKey][]*flow{},
		pro:     map[proKey]*proRule{},
		cross:   map[string][]*flow{},
		walks:   make([]walkMemo, walkMemoSize),
		wilds:   map[hal.FlowKey]*flow{},
	}
	s.deadActs = &actSet{}
	s.off = newOffloader(s.nic, &s.caps, cfg.CookieTag)
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
	} else {
		s.mu.Lock()
		s.syncSealed() // syncProactive does it otherwise
		s.mu.Unlock()
	}
	return s, nil
}

func (s *Switch) now() int64 { return s.cfg.Clock().UnixNano() }

func (s *Switch) offloading() bool {
	return !s.cfg.DisableOffload && s.caps.ExceptionPath
}

// Close stops the switch. It leaves the NIC's rules in place (the NIC's
// owner closes the NIC); a new switch reconciles them.
func (s *Switch) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

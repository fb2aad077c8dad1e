package vswitch

import (
	"fmt"
	"sort"
	"strings"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
)

// DropReason says why the host dropped a packet that is not a policy drop.
type DropReason uint8

const (
	DropSealed     DropReason = iota // a sealed-address frame: the host never opens one (fail closed)
	DropTTL                          // a routed packet whose TTL ran out
	DropMalformed                    // headers the host could not parse or rewrite
	DropFragment                     // a non-first fragment: no ports to key on
	DropMTU                          // too large for the egress port after encapsulation
	DropTruncated                    // larger than the exception buffer
	DropUnparsable                   // headers recognised but not keyed on
	DropNoEncap                      // no encapsulation template (an invalid outer address)
	DropInject                       // Inject failed
	// DropNotLocal: a tunnelled frame from the uplink for another tunnel
	// endpoint (an outer destination address that is not this host's PA,
	// or an outer destination MAC that is not the uplink's); see
	// hal.ReasonNotLocal, the NIC's count of the same.
	DropNotLocal
	NumDropReasons
)

var dropNames = [...]string{"sealed", "ttl", "malformed", "fragment", "mtu", "truncated", "unparsable", "no_encap", "inject_failed", "not_local"}

func (d DropReason) String() string {
	if int(d) < len(dropNames) {
		return dropNames[d]
	}
	return "drop?"
}

const numPolicyReasons = 32

type counters struct {
	exceptions   [hal.NumReasons]uint64
	packets      uint64
	flowsCreated uint64
	offloaded    uint64
	reprogrammed uint64
	fallbacks    [NumWhy]uint64
	drops        [NumDropReasons]uint64
	policyDrops  [numPolicyReasons]uint64
	toHost       [numPolicyReasons]uint64
	injected     uint64
	hitOffloaded uint64
	applyCalls   uint64
	opErrors     uint64
	connsOpened  uint64
	connsExpired uint64
	flowsAged    uint64
	flowsRemoved uint64
	updates      uint64
	revalidated  uint64
	changed      uint64
	activations  uint64
	reconciles   uint64
	recAdded     uint64
	recRemoved   uint64
	recModified  uint64
	recFailed    uint64
	foreign      uint64
	proRefused   uint64
	// walksRemembered counts walks answered from the memo (classifyFlow).
	walksRemembered uint64
	// wildFlows counts flows created as port-wildcard flows; wildCovered
	// the first packets of connections that reached the host and were
	// handled by an existing one (wildcard.go).
	wildFlows, wildCovered uint64
	// spoofed counts packets dropped for a spoofed source, host and NIC
	// together, by the sending VM's id.
	spoofed map[uint32]uint64
	// Learned addresses (learned.go).
	learned, learnedNotOwned, learnedOverflow, announcements uint64
}

// countSpoofed adds n packets of f to the spoofed-source drops when f is a
// policy drop for a spoofed source.
func (s *Switch) countSpoofed(f *flow, n uint64) {
	if a := f.current(); a.key.action != policy.Drop || a.key.reason != policy.ReasonSpoofedSource || n == 0 {
		return
	}
	if s.stats.spoofed == nil {
		s.stats.spoofed = map[uint32]uint64{}
	}
	s.stats.spoofed[f.srcVM] += n
}

func (s *Switch) drop(r DropReason) { s.stats.drops[r]++ }

// Stats are the switch's counters, by reason.
type Stats struct {
	Exceptions [hal.NumReasons]uint64 // exception packets by the NIC's reason
	Packets    uint64                 // exception packets handled
	Flows      int                    // flows in the cache now
	FlowsNIC   int                    // of which offloaded
	FlowsHost  int                    // of which executed in the host
	// FlowsCreated counts first packets that created a unified flow;
	// Offloaded the adds that landed on the NIC.
	FlowsCreated, Offloaded uint64
	// Fallbacks counts every time a flow was left in (or moved to) the host, by reason.
	Fallbacks map[string]uint64
	// Drops counts host drops that are not the policy's: sealed frames,
	// expired TTLs, malformed frames, failed injections, tunnelled frames
	// for another endpoint (not_local).
	Drops map[string]uint64
	// PolicyDrops counts packets the policy drops, by policy reason, as
	// executed in the host (drops on the NIC are in the flows' counters).
	PolicyDrops map[string]uint64
	// ToHost counts packets the policy hands to the host, by reason.
	ToHost map[string]uint64
	// Injected counts packets reinjected after host processing.
	Injected uint64
	// HitOffloaded counts packets of offloaded flows that still reached the host.
	HitOffloaded uint64
	ApplyCalls   uint64
	OpErrors     uint64
	ConnsOpened  uint64
	ConnsExpired uint64
	Conns        int
	FlowsAged    uint64
	FlowsRemoved uint64
	// Updates counts policy updates; Revalidated the flows they
	// re-evaluated and Changed those whose actions changed.
	Updates, Revalidated, Changed, Reprogrammed uint64
	Activations                                 uint64
	Reconciles, ReconcileAdded                  uint64
	ReconcileRemoved, ReconcileModified         uint64
	ForeignRules                                uint64
	// ReconcileFailed counts the reconciles (of Reconciles) that could
	// not read the NIC's table and changed nothing; Maintain tries again.
	// Reconciles - ReconcileFailed is the number that succeeded.
	ReconcileFailed uint64
	// ProactiveRules counts per-destination rules on the NIC; ProactiveRefused
	// those the NIC refused (the destinations take the slow path).
	ProactiveRules   int
	ProactiveRefused uint64
	// WildcardFlows counts flows created as port-wildcard flows (their
	// rule matches every connection between the same endpoints);
	// WildcardCovered the packets of other connections that still reached
	// the host (the rule was being installed, or the NIC missed it) and
	// were handled by such a flow instead of making a new one.
	WildcardFlows, WildcardCovered uint64
	// SealedRoutes counts the sealed routes pushed to the NIC
	// (sealroute.go); SealedRefused the pushes it refused.
	SealedRoutes  int
	SealedRefused uint64
	// MTU counts packets too big for their egress after encapsulation:
	// answered, fragmented or dropped with a reason (mtu.go).
	MTU MTUStats
	// Spoofed counts, by sending VM, the packets dropped because the VM
	// sent them from a MAC or address its policy does not give it
	// (anti-spoofing, policy reason spoofed-source): the first packet of
	// each such flow, dropped in the host, and the next ones, dropped on
	// the NIC by the flow's drop rule (read from its counters).
	Spoofed map[string]uint64
	// Learned counts the addresses the NIC reported (hal.AddressLearner),
	// LearnedNotOwned those the policy does not give the port's VM,
	// LearnedOverflow those the full table could not keep, and
	// Announcements the gratuitous ARPs and unsolicited neighbour
	// advertisements among them (learned.go).
	Learned, LearnedNotOwned, LearnedOverflow, Announcements uint64
}

// Stats returns a snapshot of the counters.
func (s *Switch) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := &s.stats
	st := Stats{
		Exceptions: c.exceptions, Packets: c.packets, Flows: s.flows.Len(),
		FlowsCreated: c.flowsCreated, Offloaded: c.offloaded,
		Fallbacks: map[string]uint64{}, Drops: map[string]uint64{}, PolicyDrops: map[string]uint64{}, ToHost: map[string]uint64{},
		Injected: c.injected, HitOffloaded: c.hitOffloaded, ApplyCalls: c.applyCalls, OpErrors: c.opErrors,
		ConnsOpened: c.connsOpened, ConnsExpired: c.connsExpired, Conns: len(s.ct.conns),
		FlowsAged: c.flowsAged, FlowsRemoved: c.flowsRemoved,
		Updates: c.updates, Revalidated: c.revalidated, Changed: c.changed, Reprogrammed: c.reprogrammed,
		Activations: c.activations, Reconciles: c.reconciles, ReconcileAdded: c.recAdded,
		ReconcileRemoved: c.recRemoved, ReconcileModified: c.recModified, ForeignRules: c.foreign,
		ReconcileFailed:  c.recFailed,
		ProactiveRefused: c.proRefused, MTU: s.mtu.stats(),
		WildcardFlows: c.wildFlows, WildcardCovered: c.wildCovered,
		SealedRoutes: s.sealedRouteCount(), SealedRefused: s.seal.refused,
		Spoofed: map[string]uint64{}, Learned: c.learned, LearnedNotOwned: c.learnedNotOwned,
		LearnedOverflow: c.learnedOverflow, Announcements: c.announcements,
	}
	for id, n := range c.spoofed {
		st.Spoofed[s.vmName(id)] = n
	}
	for _, r := range s.pro {
		if r.landed {
			st.ProactiveRules++
		}
	}
	for f := range s.flows.all() {
		switch f.h.loc {
		case PathNIC:
			st.FlowsNIC++
		case PathHost:
			st.FlowsHost++
		}
	}
	for i, v := range c.fallbacks {
		if v != 0 && i != int(WhyOffloaded) {
			st.Fallbacks[Why(i).String()] = v
		}
	}
	for i, v := range c.drops {
		if v != 0 {
			st.Drops[DropReason(i).String()] = v
		}
	}
	for i, v := range c.policyDrops {
		if v != 0 {
			st.PolicyDrops[policy.Reason(i).String()] = v
		}
	}
	for i, v := range c.toHost {
		if v != 0 {
			st.ToHost[policy.Reason(i).String()] = v
		}
	}
	return st
}

// String prints the non-zero counters, one a line.
func (st Stats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "packets %d, flows %d (nic %d, host %d), created %d, offloaded %d, injected %d\n",
		st.Packets, st.Flows, st.FlowsNIC, st.FlowsHost, st.FlowsCreated, st.Offloaded, st.Injected)
	for r, v := range st.Exceptions {
		if v != 0 {
			fmt.Fprintf(&b, "exceptions %s: %d\n", hal.Reason(r), v)
		}
	}
	for _, m := range []struct {
		name string
		m    map[string]uint64
	}{{"fallback", st.Fallbacks}, {"drop", st.Drops}, {"policy drop", st.PolicyDrops}, {"to host", st.ToHost}, {"spoofed source from", st.Spoofed}} {
		keys := make([]string, 0, len(m.m))
		for k := range m.m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "%s %s: %d\n", m.name, k, m.m[k])
		}
	}
	fmt.Fprintf(&b, "conns %d (opened %d, expired %d), aged %d, removed %d\n", st.Conns, st.ConnsOpened, st.ConnsExpired, st.FlowsAged, st.FlowsRemoved)
	fmt.Fprintf(&b, "updates %d, revalidated %d, changed %d, reprogrammed %d, activations %d\n", st.Updates, st.Revalidated, st.Changed, st.Reprogrammed, st.Activations)
	fmt.Fprintf(&b, "per-destination rules %d (refused %d)\n", st.ProactiveRules, st.ProactiveRefused)
	fmt.Fprintf(&b, "port-wildcard flows %d (connections covered in the host %d)\n", st.WildcardFlows, st.WildcardCovered)
	if st.SealedRoutes > 0 || st.SealedRefused > 0 {
		fmt.Fprintf(&b, "sealed routes %d (refused %d)\n", st.SealedRoutes, st.SealedRefused)
	}
	fmt.Fprintf(&b, "reconciles %d: added %d, removed %d, modified %d, foreign rules %d\n", st.Reconciles, st.ReconcileAdded, st.ReconcileRemoved, st.ReconcileModified, st.ForeignRules)
	if st.ReconcileFailed > 0 {
		fmt.Fprintf(&b, "reconciles failed %d (the NIC's table could not be read)\n", st.ReconcileFailed)
	}
	if m := st.MTU.String(); m != "" {
		b.WriteString(m + "\n")
	}
	if st.Learned > 0 {
		fmt.Fprintf(&b, "learned addresses %d (not the VM's %d, not kept %d), announcements %d\n", st.Learned, st.LearnedNotOwned, st.LearnedOverflow, st.Announcements)
	}
	return b.String()
}

package vswitch

import (
	"encoding/binary"
	"errors"
	"iter"
	"net/netip"
	"unsafe"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/internal/prefetch"
	"github.com/nicpath/nicpath/policy"
)

// Path says where a flow's packets are handled: on the NIC (the fast path)
// or in the host (the host path). It is not hal.Location, which says where
// a rule lives inside a NIC (hardware, kernel or user-space software).
type Path uint8

const (
	// PathNone: the flow is not installed anywhere (being placed, or Explain
	// of a packet the switch has not seen).
	PathNone Path = iota
	// PathNIC: the NIC handles the flow; its packets never reach the host.
	PathNIC
	// PathHost: the switch executes the flow's actions on the exception path.
	PathHost
)

func (l Path) String() string {
	switch l {
	case PathNIC:
		return "nic"
	case PathHost:
		return "host"
	}
	return "none"
}

// Why says why a flow is where it is.
type Why uint8

const (
	WhyOffloaded    Why = iota // on the NIC
	WhyNotSupported            // the NIC lacks a capability the flow needs (Validate or Apply said ErrNotSupported)
	WhyTableFull               // the NIC's table had no room
	WhyDeviceError             // the driver failed (an *hal.OpError or another device error)
	WhyInvalid                 // the NIC refused the rule as malformed (a bug in the switch)
	WhyPolicy                  // the policy hands these packets to the host (address resolution, route to host)
	WhyNoOffload               // offload is disabled or the NIC has no exception path
	NumWhy                     // number of reasons; for arrays indexed by Why
)

var whyNames = [...]string{"offloaded", "not_supported", "table_full", "device_error", "invalid_rule", "policy", "no_offload"}

func (w Why) String() string {
	if int(w) < len(whyNames) {
		return whyNames[w]
	}
	return "why?"
}

// whyOf sorts a driver error into a fallback reason.
func whyOf(err error) Why {
	switch {
	case errors.Is(err, hal.ErrNotSupported):
		return WhyNotSupported
	case errors.Is(err, hal.ErrTableFull):
		return WhyTableFull
	case errors.Is(err, hal.ErrInvalidRule):
		return WhyInvalid
	}
	return WhyDeviceError
}

// actKey is everything the header operations of a flow depend on. Flows
// with equal keys share one actSet (and so one action list, one encap
// template and one cached Validate answer): a host with 100k flows toward
// a few hundred destinations keeps a few hundred action lists.
type actKey struct {
	action policy.Action
	reason policy.Reason
	rw     policy.Rewrite
	port   hal.PortID
	pa     netip.Addr
	// src is the outer source of an encapsulation, this host's PA: part
	// of the key so that a PA change makes new action lists.
	src   netip.Addr
	vni   uint32
	encap hal.EncapKind
	decap bool
}

// actSet is one interned list of header operations. What every first
// packet reads (intern's hash, chain and count, place's offload and
// validate answers) comes first, in the set's first cache line.
type actSet struct {
	hash    uint64 // key.hash, its slot in Switch.acts
	refs    int
	offload bool // the verdict can live on a NIC (not ToHost)
	// Validate answers per match shape (see shapeOf): 0 unknown, 1 ok,
	// 2 refused with verr. The refusals live apart (allocated at the first
	// one): 512 bytes of errors in every set spread a thousand sets over
	// memory that each first packet's intern and validate missed in.
	valid [numShapes]uint8
	verr  *[numShapes]error
	key   actKey
	acts  []hal.Action
	tmpl  *wire.EncapTemplate // set for Encap and ToGateway
}

// numShapes is the number of values shapeOf returns, with shapeWild
// (validate's bit for a port-wildcard rule) set or not.
const numShapes = 32

// shapeWild marks the shape of a port-wildcard rule in the validate cache.
const shapeWild = 16

// Match shapes differ in which fields an exact match uses (hal.Exact
// matches tunnel fields only for tunnelled keys, IP and transport fields
// only for IP keys), so Validate is cached per shape: tunnelled or not,
// IPv4, IPv6 or not IP, scoped or not.
func shapeOf(k *hal.FlowKey, scoped bool) int {
	s := 0
	if k.TunKind != hal.EncapNone {
		s |= 1
	}
	switch k.EthType {
	case hal.EtherTypeIPv4:
	case hal.EtherTypeIPv6:
		s |= 2
	default:
		s |= 8
	}
	if scoped {
		s |= 4
	}
	return s
}

// flow is one unified flow: an exact key and one list of header operations.
//
// Every first packet makes one (allocFlow: in slabs), so it is kept small
// (192 bytes, three cache lines, with its 48-byte flowHot seventeen to a
// 4 KiB slab; a test holds it there). What few flows need lives in
// flowExtra.
type flow struct {
	// h holds what Maintain's pass over every flow reads (flowHot), in
	// the flow's slab, beside those of the slab's other flows.
	h   *flowHot
	why Why
	// wild: a port-wildcard flow (wildcard.go): its rule matches every
	// connection between the same endpoints, whatever its ports.
	wild bool
	// What it derives from, for revalidation on policy changes.
	gateway bool
	routed  bool
	tenant  uint32
	srcVM   uint32
	dstVM   uint32

	acts *actSet
	// Shadow: the flow's actions for the next generation of its scope,
	// installed inactive (shadowID) until ActivateShadow flips the scope.
	shadow *actSet
	scope  *scope
	x      *flowExtra // nil until needed

	key hal.FlowKey

	created int64
	// Packets and bytes, in the host and on the NIC together (only their
	// sum is reported).
	pkts, bts  uint64
	ruleB, shB uint64
}

// flowHot is the part of a flow that Maintain's pass over every flow
// reads for each of them (tableFlows' inTable and dead, readCounters'
// loc, rule IDs, last readings and lastUsed). A slab keeps its flows'
// flowHots together, apart from the flows (flowSlab): the pass is bound
// by memory bandwidth, and it reads 48 bytes of every flow, where inside
// the flows (a 232-byte stride) those 48 bytes took one or two cache
// lines of every flow and the hardware's adjacent-line prefetch most of
// the rest. (gen is here only because the flow has no room for it
// within three lines; the pass does not read it.)
type flowHot struct {
	id       hal.RuleID // its rule on the NIC; 0 when not there
	shadowID hal.RuleID
	// Last packet counts read from the rule and from the shadow rule, so
	// that the totals only grow by what is new (the flow's ruleB and shB
	// are the byte counts, read only when these grow).
	ruleP, shP uint64
	lastUsed   int64
	gen        hal.Generation
	loc        Path
	dead       bool // removed from the cache; results still in flight ignore it
	// inTable: in the flow table (flowTable sets and clears it), which
	// is how a scan in slab order (Switch.tableFlows) tells the table's
	// flows from removed ones and from those not handed out yet.
	inTable bool
}

// hotLines is how many cache lines a slab's flowHots take; hotAhead how
// many slabs ahead of its reading tableFlows prefetches them.
const (
	hotLines = (int(unsafe.Sizeof([flowsPerSlab]flowHot{})) + 63) / 64
	hotAhead = 2
)

// flowSlab is one allocation of flows (allocFlow), the flows first, each
// in three whole cache lines (a 4 KiB size class is aligned to 4 KiB),
// then their flowHots, in the same order.
type flowSlab struct {
	flows [flowsPerSlab]flow
	hot   [flowsPerSlab]flowHot
}

// flowExtra is what only some flows have: tracked connections (stateful
// ACLs) and the error that keeps a flow in the host.
type flowExtra struct {
	opened []*conn // connections its stateful allows opened
	uses   []*conn // connections it passed as established
	err    error   // the refusal or failure that keeps it in the host
}

func (f *flow) extra() *flowExtra {
	if f.x == nil {
		f.x = &flowExtra{}
	}
	return f.x
}

// failure is the refusal or failure that keeps f in the host, if any.
func (f *flow) failure() error {
	if f.x == nil {
		return nil
	}
	return f.x.err
}

func (f *flow) setFailure(err error) {
	if err != nil {
		f.extra().err = err
	} else if f.x != nil {
		f.x.err = nil
	}
}

// current returns the actions that are live for the flow: the shadow's
// once the scope's active generation moved past the flow's own.
func (f *flow) current() *actSet {
	if f.shadow != nil && f.scope != nil && f.scope.active != f.h.gen {
		return f.shadow
	}
	return f.acts
}

// scope is one VM's generation scope on the NIC: the flows whose result
// embeds that VM's location.
type scope struct {
	id     hal.Scope
	vm     string
	active hal.Generation
}

// buildActions turns a verdict into the hal action list of its unified flow.
func (s *Switch) buildActions(k actKey) *actSet {
	a := &actSet{key: k}
	var acts []hal.Action
	if k.decap {
		acts = append(acts, hal.Decap())
	}
	rw := &k.rw
	switch k.action {
	case policy.Deliver, policy.Encap, policy.ToGateway:
		a.offload = true
		if !rw.SrcMAC.IsZero() {
			acts = append(acts, hal.SetEthSrc(hal.MAC(rw.SrcMAC)))
		}
		if rw.Src.IsValid() {
			acts = append(acts, hal.SetIPSrc(rw.Src))
		}
		if rw.Dst.IsValid() {
			acts = append(acts, hal.SetIPDst(rw.Dst))
		}
		if rw.DecTTL {
			acts = append(acts, hal.DecTTL())
		}
		if !rw.DstMAC.IsZero() {
			acts = append(acts, hal.SetEthDst(hal.MAC(rw.DstMAC)))
		}
		out := k.port
		if k.action != policy.Deliver {
			e := hal.Encap{Kind: k.encap, VNI: k.vni, Src: k.src, Dst: k.pa, SrcMAC: s.uplinkMAC, DstMAC: s.cfg.NextHopMAC}
			acts = append(acts, hal.EncapWith(e))
			if t, err := wire.NewEncapTemplate(&e); err == nil {
				a.tmpl = t
			}
			out = s.cfg.Uplink
		}
		if s.counting {
			acts = append(acts, hal.Count())
		}
		acts = append(acts, hal.Output(out))
	case policy.Drop:
		a.offload = true
		if k.decap {
			acts = acts[:0] // a drop needs no decapsulation
		}
		if s.counting {
			acts = append(acts, hal.Count())
		}
		acts = append(acts, hal.Drop(hal.ReasonPolicy))
	default: // ToHost stays in the host: the NIC sends misses there anyway.
		acts = append(acts[:0], hal.ToHost(hal.ReasonAction))
	}
	a.acts = acts
	return a
}

func actKeyOf(v *verdict) actKey {
	k := actKey{action: v.action, decap: v.decap}
	switch v.action {
	case policy.Deliver:
		k.rw, k.port = v.rw, v.port
	case policy.Encap, policy.ToGateway:
		k.rw, k.pa, k.vni, k.encap, k.src = v.rw, v.pa, v.vni, v.encap, v.src
	default:
		k.reason = v.reason
	}
	return k
}

// encapOf is the NIC's name for a policy's encapsulation kind.
func encapOf(k policy.EncapKind) hal.EncapKind {
	switch k {
	case policy.EncapGeneve:
		return hal.EncapGeneve
	case policy.EncapNVGRE:
		return hal.EncapNVGRE
	}
	return hal.EncapVXLAN
}

func (s *Switch) intern(k actKey) *actSet {
	h := k.hash(&s.actSeed)
	// Consecutive flows mostly share their actions (a batch of new
	// connections toward the same VMs): compare with the last one before
	// looking the hash up.
	if a := s.lastAct; a != nil && a.refs > 0 && a.hash == h && a.key == k {
		a.refs++
		return a
	}
	if a := s.acts.find(h, &k); a != nil {
		a.refs++
		s.lastAct = a
		return a
	}
	a := s.buildActions(k)
	a.refs, a.hash = 1, h
	s.acts.put(a)
	s.lastAct = a
	return a
}

// internHinted is intern for the verdict of a flow toward dst (nil:
// none): it tries dst's last action set (vmInfo.act) before the table,
// and records the answer there. The hint costs one cache miss (the set's
// own lines) where the table cost two in a row (a slot, then the set it
// points to); it is not prefetched by the walk that finds dst: measured,
// the prefetch cost more than the miss it hid.
func (s *Switch) internHinted(k actKey, dst *vmInfo) *actSet {
	if dst == nil {
		return s.intern(k)
	}
	if a := dst.act; a != nil && a.refs > 0 && a.key == k {
		a.refs++
		s.lastAct = a
		return a
	}
	a := s.intern(k)
	dst.act = a
	return a
}

func (s *Switch) release(a *actSet) {
	if a == nil || a == s.deadActs {
		return
	}
	if a.refs--; a.refs > 0 {
		return
	}
	s.acts.remove(a)
}

// actTable interns action sets: open addressing with linear probing over
// slots of a set's hash and the set, so that a look-up reads one line of
// slots and only the sets whose full hash matches (where a Go map of
// hash → chain of sets probed the map's groups, then followed the chain).
// A removal shifts the following slots of its run back (no tombstones).
type actTable struct {
	slots []actSlot // a power of two, at most half full
	n     int
}

type actSlot struct {
	h uint64
	a *actSet // nil: empty
}

// find returns the set with key k, whose hash is h, or nil.
func (t *actTable) find(h uint64, k *actKey) *actSet {
	if len(t.slots) == 0 {
		return nil
	}
	mask := uint64(len(t.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		sl := &t.slots[i]
		if sl.a == nil {
			return nil
		}
		if sl.h == h && sl.a.key == *k {
			return sl.a
		}
	}
}

// put adds a, whose key is not in the table.
func (t *actTable) put(a *actSet) {
	if 2*(t.n+1) > len(t.slots) {
		old := t.slots
		t.slots = make([]actSlot, max(64, 2*len(old)))
		t.n = 0
		for _, sl := range old {
			if sl.a != nil {
				t.put(sl.a)
			}
		}
	}
	mask := uint64(len(t.slots) - 1)
	i := a.hash & mask
	for t.slots[i].a != nil {
		i = (i + 1) & mask
	}
	t.slots[i] = actSlot{h: a.hash, a: a}
	t.n++
}

// remove takes a out of the table, if it is there.
func (t *actTable) remove(a *actSet) {
	if len(t.slots) == 0 {
		return
	}
	mask := uint64(len(t.slots) - 1)
	i := a.hash & mask
	for t.slots[i].a != a {
		if t.slots[i].a == nil {
			return
		}
		i = (i + 1) & mask
	}
	// Backward shift: move up every later slot of the run whose home is
	// not between the hole and it.
	for j := (i + 1) & mask; t.slots[j].a != nil; j = (j + 1) & mask {
		home := t.slots[j].h & mask
		if (j-home)&mask >= (j-i)&mask {
			t.slots[i] = t.slots[j]
			i = j
		}
	}
	t.slots[i] = actSlot{}
	t.n--
}

// len is the number of sets.
func (t *actTable) len() int { return t.n }

// hash mixes every field of k (wyhash's step, seeded per switch).
func (k *actKey) hash(seed *[2]uint64) uint64 {
	var flags uint64
	if k.decap {
		flags |= 1
	}
	if k.rw.DecTTL {
		flags |= 2
	}
	if k.rw.Src.Is4() {
		flags |= 4
	}
	if k.rw.Dst.Is4() {
		flags |= 8
	}
	h := mum(uint64(k.action)|uint64(k.reason)<<8|uint64(k.encap)<<16|flags<<24|uint64(k.port)<<32^seed[0],
		uint64(k.vni)|mac64(hal.MAC(k.rw.DstMAC))<<16^seed[1])
	h = mum(mac64(hal.MAC(k.rw.SrcMAC))^h, addrWord(k.pa)^seed[1])
	h = mum(addrWord(k.src)^h, addrWord(k.rw.Src)^addrWord(k.rw.Dst)<<1^seed[1])
	return mum(h^0xa0761d6478bd642f, seed[1]^0xe7037ed1a0b428db)
}

// addrWord folds an address into 64 bits for actKey.hash (equal keys are
// compared in full).
func addrWord(a netip.Addr) uint64 {
	if !a.IsValid() {
		return 0
	}
	b := a.As16()
	le := binary.LittleEndian
	return le.Uint64(b[0:8])*0x9E3779B97F4A7C15 ^ le.Uint64(b[8:16])
}

// flowsPerSlab is how many flows one allocation holds: a 4,096-byte size
// class's worth, with their flowHots.
const flowsPerSlab = 4096 / int(unsafe.Sizeof(flow{})+unsafe.Sizeof(flowHot{}))

// allocFlow returns a zero flow. Flows are allocated in slabs of
// flowsPerSlab and handed out in order. A removed flow stays in its slab,
// dead, so that whatever still points at it (a result in flight, a
// connection's users, the lists Maintain cleans) sees it dead, as it did
// when each flow was an allocation of its own.
//
// A slab all of whose flows are dead is recycled (recycleSlabs) once
// nothing can point at them any more: a tableFlows pass finds it, and a
// whole Maintain later (its age pass drops dead flows from every list
// that keeps flows, its Apply settles every result) it is handed out
// again, zeroed. Without that, every first packet allocated its share of
// a slab, and the collector ran for the 4 KiB slabs the steady stream of
// new flows made. A slab with a flow that left the table without dying
// (replaced under its key) is never recycled; it goes to the collector.
// A pointer to a flow keeps its whole slab, which is what bounds the
// slab's size: flows created together, by the same batches, mostly age
// together.
func (s *Switch) allocFlow() *flow {
	if s.slab == nil || s.slabNext == flowsPerSlab {
		var sl *flowSlab
		if len(s.spare) > 0 {
			// In the order the passes found them, which is the order
			// they were first handed out in, so that the passes keep
			// reading them in the order the heap first gave them.
			sl = s.spare[0]
			s.spare[0] = nil
			s.spare = s.spare[1:]
			*sl = flowSlab{}
		} else {
			sl = new(flowSlab)
		}
		s.slab, s.slabNext = sl, 0
		s.slabs = append(s.slabs, sl)
	}
	i := s.slabNext
	s.slabNext++
	f := &s.slab.flows[i]
	f.h = &s.slab.hot[i]
	return f
}

// recycleSlabs moves the slabs that tableFlows found dead before the
// previous call to the spare list, from which allocFlow takes them, and
// those found since to wait for the next call. Maintain calls it last:
// between a slab's discovery and its reuse a whole Maintain has run, whose
// age pass dropped the dead flows from the lists that keep flows (cross,
// denied; connections and port-wildcard flows drop theirs at the removal)
// and whose flush settled every operation in flight. An activation that
// can still be rolled back keeps its flows (rollbackPoint.cross) until
// Maintain retires it: until then nothing is recycled. Spares beyond the
// number of slabs in use go to the collector.
func (s *Switch) recycleSlabs() {
	if len(s.rollback) == 0 {
		s.spare = append(s.spare, s.cooling...)
		clear(s.cooling)
		s.cooling = s.cooling[:0]
	}
	s.cooling = append(s.cooling, s.emptied...)
	clear(s.emptied)
	s.emptied = s.emptied[:0]
	if keep := len(s.slabs); len(s.spare) > keep {
		clear(s.spare[keep:])
		s.spare = s.spare[:keep]
	}
}

// tableFlows yields every flow in the flow table, as s.flows.all does,
// but in the order of their slabs: Maintain's pass over every flow then
// reads memory in order, a few cache lines per flow that the hardware
// fetches ahead, where the table's order (the keys' hashes) takes a cache
// miss for every flow. The loop body may remove flows and add new ones (a
// flow added during the loop may or may not be produced).
//
// The pass also forgets the slabs that no longer hold a flow of the
// table (but the one allocFlow hands out from), so that the list keeps
// no slab from the collector; those all of whose flows are dead wait in
// s.emptied to be recycled (recycleSlabs).
func (s *Switch) tableFlows() iter.Seq2[*flow, *flowHot] {
	return func(yield func(*flow, *flowHot) bool) {
		slabs, n := s.slabs, len(s.slabs)
		kept := 0
		var ahead [hotLines]uintptr
		for i := 0; i < n; i++ {
			sl := slabs[i]
			// Each slab is a page of its own, where the hardware's
			// prefetcher starts again: the flowHots of the slab
			// hotAhead slabs on load while these are read.
			if j := i + hotAhead; j < n {
				p := uintptr(unsafe.Pointer(&slabs[j].hot))
				for l := range ahead {
					ahead[l] = p + uintptr(l*64)
				}
				prefetch.Lines(ahead[:])
			}
			live, dead := false, true
			for k := range sl.hot {
				h := &sl.hot[k]
				if !h.inTable {
					dead = dead && h.dead
					continue
				}
				live = true
				if !yield(&sl.flows[k], h) {
					// Keep this slab and the ones not looked at.
					s.keepSlabs(slabs, kept, i, n)
					return
				}
			}
			if live || i == n-1 {
				slabs[kept] = sl
				kept++
			} else if dead {
				s.emptied = append(s.emptied, sl)
			}
		}
		s.keepSlabs(slabs, kept, n, n)
	}
}

// keepSlabs ends a tableFlows pass over slabs[:n]: slabs[:kept] are the
// slabs kept of those looked at, slabs[from:n] those not looked at, and
// s.slabs[n:] any that allocFlow added during the pass.
func (s *Switch) keepSlabs(slabs []*flowSlab, kept, from, n int) {
	added := s.slabs[n:]
	out := append(slabs[:kept], slabs[from:n]...)
	out = append(out, added...)
	clear(slabs[len(out):n]) // in the old array: no slab kept alive there
	s.slabs = out
}

// The batch loop: exceptions read from the NIC, looked up in the flow
// cache, walked when new, offloaded together, executed in the host.

package vswitch

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"
	"unsafe"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/internal/prefetch"
	"github.com/nicpath/nicpath/policy"
)

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
	if l, ok := s.nic.(hal.AddressLearner); ok && s.caps.AddressLearning {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.readLearned(ctx, l)
		}()
	}
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
		handle := s.HandleBatch
		if s.cfg.Handler != nil {
			handle = s.cfg.Handler
		}
		if err := handle(ctx, batch[:n]); err != nil {
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
	// First pass: parse every packet and hash its key; then prefetch the
	// slot where each lookup starts. The first packets of new flows all
	// miss in a cache far larger than the CPU's; prefetched together, their
	// cache misses overlap instead of coming one per packet.
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
	// Prefetch the slots together, so that their loads are in flight at
	// once.
	pf := &s.pf
	for i := range s.pend {
		pf.add(s.flows.slotAddr(s.pend[i].hash), flowSlotSize)
	}
	pf.flush()
	// Then look the flows up (their slots are arriving) and, for each
	// packet without one, start its walk: route its destination and
	// prefetch what the walk will read next from memory far larger than
	// the CPU's caches, the CA→PA mapping the route leads to. The walks
	// that follow take the route and find the batch's mappings in the
	// cache.
	for i := range s.pend {
		p := &s.pend[i]
		if p.f = s.flows.getHashed(&p.key, p.hash); p.f == nil {
			s.prefetchWalk(p)
		} else {
			p.hint.c = nil
		}
	}
	pf.flush()
	// The routes found (ten thousand on a realistic host, spread over
	// memory) arrive together; the mapping slots they lead to are
	// prefetched from them.
	for i := range s.pend {
		if p := &s.pend[i]; p.f == nil && p.hint.r != nil {
			s.prefetchMapping(p)
		}
	}
	pf.flush()
	// Second pass, in the packets' order: a flow that an earlier packet of
	// the batch created is found by the later ones, and one that an
	// earlier packet's flow removed (re-evaluating it) is not. A packet
	// that found none is looked up again only if a flow with its hash may
	// have been put since (flowTable.puts).
	s.flows.forgetPuts()
	for i := range s.pend {
		p := &s.pend[i]
		e := &batch[p.idx]
		f := p.f
		if (f == nil && s.flows.mayHavePut(p.hash)) || (f != nil && f.h.dead) {
			f = s.flows.getHashed(&p.key, p.hash)
		}
		p.f = nil
		if f == nil {
			ttl := ttlOf(e.Frame(), &p.layout)
			if p.hint.c != nil {
				s.hint = &p.hint
			}
			f = s.newFlowHashed(&p.key, p.hash, ttl, now, true)
			s.hint = nil
			if f == nil {
				s.drop(DropTTL) // p.f stays nil: the packet is not executed
				continue
			}
		} else if f.scope != nil && f.h.gen != f.scope.active && f.shadow == nil {
			// Created for a generation that is no longer live (a rollback
			// came after it): walk the layers again before using it.
			s.reflow(f, now, true)
		} else if f.h.loc == PathNIC && e.Reason != hal.ReasonMTU {
			// A packet of an offloaded flow reached the host: it raced the
			// rule's installation, or the NIC lost the rule. Handle it here.
			s.stats.hitOffloaded++
		}
		p.f = f
	}
	s.flush(ctx)
	// The packets' encapsulation templates, which execute reads first
	// (the egress overhead for the MTU check, then the headers): a
	// thousand of them on a realistic host, out of the cache after the
	// Apply; prefetched together, their misses overlap.
	for i := range s.pend {
		if f := s.pend[i].f; f != nil && f.acts != nil && f.acts.tmpl != nil {
			h, hn, fl, fn := f.acts.tmpl.HotLines()
			pf.addAll(h, hn)
			pf.add(fl, fn)
		}
	}
	pf.flush()
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

// prefetchWalk starts the walk of p's key: it looks up the route of the
// packet's destination in its tenant (kept in p.hint for the walk, which
// would look it up first) and queues the route's lines, from which
// prefetchMapping then queues the CA→PA mapping slot the route leads to,
// so that the walk finds both in the cache.
func (s *Switch) prefetchWalk(p *pending) {
	c, k := s.cur, &p.key
	p.hint = routeHint{}
	var t *tenantInfo
	if k.InPort == s.cfg.Uplink {
		dv := c.vnetByVNI[k.VNI]
		if k.TunKind == hal.EncapNone || dv == nil {
			return
		}
		t = dv.tenant
	} else {
		vm := c.vmOnPort(k.InPort)
		if vm == nil {
			return
		}
		t = vm.tenant
		if vm.caSet != nil {
			// The walk checks the source address among the VM's.
			s.pf.add(vm.caSet.slotAddr(addr128From16(k.IPSrc)), unsafe.Sizeof(addr128{}))
		}
		if len(s.ct.conns) > 0 && (k.EthType == hal.EtherTypeIPv4 || k.EthType == hal.EtherTypeIPv6) {
			// Then its ACL layer asks the connection table whether the
			// packet's connection is established: the filter word that
			// answers (connKeyOf of the packet the walk makes of k).
			ck := outConnKey(vm.id, k)
			s.pf.add(s.ct.filterAddr(&ck), 8)
		}
	}
	if t == nil {
		return
	}
	var dst netip.Addr
	switch k.EthType {
	case hal.EtherTypeIPv4:
		dst = hal.AddrFrom16(k.IPDst)
	case hal.EtherTypeIPv6:
		dst = netip.AddrFrom16(k.IPDst)
	default:
		return
	}
	r := t.lpm(dst)
	p.hint = routeHint{c: c, t: t, dst: dst, r: r}
	if r != nil {
		s.pf.add(uintptr(unsafe.Pointer(r)), routeHot)
	}
}

// prefetchMapping queues the CA→PA mapping slot of the route that
// prefetchWalk found for p, when it leads into a VNET, and the slot after
// it: the table probes linearly, filled up to three quarters, so a lookup
// often reads the next slot too, and slots (36 bytes) straddle lines.
func (s *Switch) prefetchMapping(p *pending) {
	if r := p.hint.r; r.hop.Kind == policy.NextHopVNET && r.vnet != nil {
		a, size := p.hint.c.st.MappingSlot(r.vnet.vni, p.hint.dst)
		s.pf.addAll(a, 2*size)
	}
}

// prefetcher collects the addresses a batch will read and prefetches
// them together (internal/prefetch).
type prefetcher struct {
	addrs [prefetchMax]uintptr
	n     int
}

// prefetchMax is how many addresses one prefetch call takes: the slots of
// a 64-packet batch, each spanning up to two cache lines.
const prefetchMax = 256

// add queues the cache lines of [a, a+size); a == 0 queues nothing.
func (p *prefetcher) add(a, size uintptr) {
	if a == 0 {
		return
	}
	p.push(a)
	if size > 1 && (a+size-1)>>6 != a>>6 {
		p.push(a + size - 1)
	}
}

// addAll queues every cache line of [a, a+size).
func (p *prefetcher) addAll(a, size uintptr) {
	for l := a &^ 63; l < a+size; l += 64 {
		p.push(l)
	}
}

func (p *prefetcher) push(a uintptr) {
	p.addrs[p.n] = a
	if p.n++; p.n == prefetchMax {
		p.flush()
	}
}

func (p *prefetcher) flush() {
	if p.n > 0 {
		prefetch.Lines(p.addrs[:p.n])
		p.n = 0
	}
}

type pending struct {
	idx    int
	f      *flow
	hash   uint64 // of key in the flow table
	hint   routeHint
	key    hal.FlowKey
	layout wire.Layout
}

type portFrames struct {
	port   hal.PortID
	frames [][]byte
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

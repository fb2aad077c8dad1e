package softnic

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"sync/atomic"
	"unsafe"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/internal/prefetch"
)

// A packet's fate within a burst.
const (
	fatePending uint8 = iota // parsed, looking for a rule
	fateDrop
	fateHost
	fateOut
	fateSent // fateOut, delivered to its ring
	// fateSealedRoute: an opened sealed frame whose sealed route
	// (SetSealedRoutes) is in prog; it skips the flow table.
	fateSealedRoute
)

const noRule = ^uint32(0)

// burst is the per-call working state of the datapath, pooled so that the
// fast path allocates nothing.
type burst struct {
	bufs  [][]byte // Send's copies, with Headroom in front
	sizes []int

	// key is where wire.Parse keys each frame that parseFast did not
	// take, one after the other: the lookup reads the packet's words (w),
	// the exception path its VNI (vni), encap the flow hash from w.
	key  hal.FlowKey
	vni  [MaxBurst]uint32
	lays [MaxBurst]wire.Layout
	// lazy[i]: parseFast took frame i and lays[i] is not filled: what
	// needs the layout fills it first (fastLayout), from the frame as it
	// arrived.
	lazy [MaxBurst]bool
	// pre is the first tuple's table while parseBurst does the first
	// pass of its lookup (process sets it inside the read section), else
	// nil. parseBurst then leaves in todo[:preT] the packets of the burst
	// that table probes, each packed and hashed for it, its home bucket
	// asked for.
	pre  *htab
	preT int

	w    [MaxBurst]words
	pk   [MaxBurst]words  // w packed by the tuple being probed
	bkt  [MaxBurst]uint32 // the home bucket of the tuple being probed
	home [MaxBurst]uint16
	// The one rule a packet's home bucket names for it, when that is all
	// the tuple being probed can hold for it (home's candBit): its entry
	// and index, found by the bucket pass, compared by compare (which
	// clears cand: entries do not outlive the read section).
	cand    [MaxBurst]*entry
	candIdx [MaxBurst]uint32
	sig     [MaxBurst]uint32
	best    [MaxBurst]uint32
	prio    [MaxBurst]int32
	fate    [MaxBurst]uint8
	why     [MaxBurst]hal.Reason
	rule    [MaxBurst]hal.RuleID
	out     [MaxBurst]*Port
	start   [MaxBurst]int
	end     [MaxBurst]int
	// lookup's scratch: the packets a tuple probes, and the addresses
	// to prefetch for them.
	todo [MaxBurst]uint8
	pf   [3 * MaxBurst]uintptr
	// The packets whose probe chain goes on past the home bucket, and
	// the addresses to prefetch for them.
	chain [MaxBurst]uint8
	pfn   [2 * MaxBurst]uintptr
	prog  [MaxBurst]*program // the program of each hit
	arg   [MaxBurst]uint64   // the hit's entry.arg, when its program takes one

	// Sealed frames: sealed[i] says packet i was opened into open[i] (its
	// clear frame at open[i][Headroom:Headroom+osz[i]], Headroom in front
	// for encapsulation in place). open is nil without Config.Crypto.
	sealed    [MaxBurst]bool
	anySealed bool
	osz       [MaxBurst]int
	open      [][]byte

	tally [2][hal.NumReasons]uint64
}

func newBurst(bufLen int, sealed bool) *burst {
	b := &burst{bufs: make([][]byte, MaxBurst), sizes: make([]int, MaxBurst)}
	b.bufs = carve(bufLen)
	if sealed {
		b.open = carve(bufLen)
	}
	return b
}

// carve returns MaxBurst buffers of bufLen bytes from one allocation.
func carve(bufLen int) [][]byte {
	bufs := make([][]byte, MaxBurst)
	back := make([]byte, MaxBurst*bufLen)
	for i := range bufs {
		bufs[i] = back[i*bufLen : (i+1)*bufLen : (i+1)*bufLen]
	}
	return bufs
}

func (n *NIC) getBurst() *burst {
	select {
	case b := <-n.bursts:
		return b
	default:
		return newBurst(n.burstSz, n.seal != nil)
	}
}

func (n *NIC) putBurst(b *burst) {
	select {
	case n.bursts <- b:
	default:
	}
}

var errOffset = fmt.Errorf("%s: process: offset below Headroom (%d)", DriverName, Headroom)

// Process runs frames that arrived on port through the NIC, on the
// caller's goroutine: frame i is bufs[i][offset:offset+sizes[i]], and
// offset must leave Headroom bytes for encapsulation. The frames are
// rewritten in place (the buffers are the caller's scratch space); what the
// NIC sends out is copied into the destination ports' rings, what goes to
// the host into the exception queue. It allocates nothing.
func (n *NIC) Process(port hal.PortID, bufs [][]byte, sizes []int, offset int) error {
	if n.closed.Load() {
		return hal.ErrClosed
	}
	p := n.port(port)
	if p == nil {
		return fmt.Errorf("%s: process: port %d: %w", DriverName, port, hal.ErrNotFound)
	}
	if offset < Headroom {
		return errOffset
	}
	if len(sizes) < len(bufs) {
		return fmt.Errorf("%s: process: %d sizes for %d buffers", DriverName, len(sizes), len(bufs))
	}
	b := n.getBurst()
	for done := 0; done < len(bufs); done += MaxBurst {
		k := min(len(bufs)-done, MaxBurst)
		n.process(b, p, bufs[done:done+k], sizes[done:done+k], offset)
	}
	n.putBurst(b)
	return nil
}

// process runs one burst of at most MaxBurst frames.
func (n *NIC) process(b *burst, in *Port, bufs [][]byte, sizes []int, offset int) {
	k := len(bufs)
	s := n.rcu.enter()
	v := &n.rcu.views[s]
	// Parse every frame first: the keys are then ready for the bulk lookup.
	// When the first tuple is exact4, parseBurst does its lookup's first
	// pass as it goes (b.pre): the bucket misses are then in flight while
	// the rest of the burst is parsed, not only while it is hashed.
	if len(v.tabs) > 0 && v.tabs[0].shape.exact4 && v.tabs[0].ht.used != 0 {
		b.pre = &v.tabs[0].ht
	}
	rxBytes := n.parseBurst(b, in, bufs, sizes, offset)

	for _, tab := range v.tabs {
		n.lookup(b, v, tab, k)
	}
	b.pre = nil
	// Execute, inside the read section: the rule counters belong to entries
	// that a writer may reuse once no reader is left.
	n.executeBurst(b, v, bufs, sizes, offset)
	n.rcu.exit(s)

	if n.seal != nil {
		n.sealedReplies(b, in, bufs, sizes, offset, k)
	}
	if b.anySealed {
		n.sealedRoutes(b, k)
		n.sealedNoHost(b, k)
	}
	n.deliver(b, in, bufs, sizes, offset, rxBytes)
	if b.anySealed {
		// The clear frames are of no further use: do not leave them in
		// memory the next burst may not overwrite.
		for i := 0; i < k; i++ {
			if b.sealed[i] {
				clear(b.open[i][:Headroom+b.osz[i]])
			}
		}
	}
}

// parseBurst parses the frames of a burst into b (their words, layouts and
// fates) and returns the bytes they hold.
//
// With b.pre (the first tuple's table, exact4), it also does the first
// pass of that table's lookup (hashExact4) as it goes: each frame that
// table probes (every pending IPv4 frame: prio is -1 here, below any
// rule's) is packed, hashed and listed in todo as soon as it is parsed,
// and its home bucket asked for, so that the bucket misses are in flight
// while later frames are parsed.
func (n *NIC) parseBurst(b *burst, in *Port, bufs [][]byte, sizes []int, offset int) uint64 {
	// At most MaxBurst (process's bursts are no longer), with sizes as
	// long as bufs: the compiler then knows every index below in bounds.
	k := min(len(bufs), MaxBurst)
	bufs, sizes = bufs[:k], sizes[:k]
	maxIn := in.info.MTU + l2Allowance
	var rxBytes uint64
	b.anySealed = false
	const want = uint64(hal.EtherTypeIPv4) << ethTypeShift
	pre, nt, pfd := b.pre, 0, 0
	for i, size := range sizes {
		rxBytes += uint64(max(size, 0))
		b.best[i], b.prio[i], b.rule[i], b.sealed[i] = noRule, -1, 0, false
		if size > maxIn || size < 0 || offset+size > len(bufs[i]) {
			b.fate[i], b.why[i] = fateDrop, hal.ReasonMalformed
			continue
		}
		frame := bufs[i][offset : offset+size]
		if parseFast(frame, in.info.ID, &b.w[i]) {
			b.fate[i], b.vni[i], b.lazy[i] = fatePending, 0, true
		} else if !n.parseSlow(b, in, i, frame) {
			continue
		}
		if pre == nil || b.w[i][wordEthType]&ethTypeMask != want {
			continue
		}
		// hashExact4's listing, for this frame: hashExact4One written
		// out (as a call, the loop's registers were saved and restored
		// around it for every frame; Go keeps none across a call).
		w, pk := &b.w[i], &b.pk[i]
		x0, x1, x2, x3, x4 := w[5], w[8]&exact4Mask8, w[9], w[10], w[11]&exact4Mask11
		pk[0], pk[1], pk[2], pk[3], pk[4] = x0, x1, x2, x3, x4
		h := uint64(hashSeed) + x0*wordMul[0] + bits.RotateLeft64(x1, 7)*wordMul[1] +
			bits.RotateLeft64(x2, 14)*wordMul[2] + bits.RotateLeft64(x3, 21)*wordMul[3] +
			bits.RotateLeft64(x4, 28)*wordMul[4]
		sig := sigOf(finish(h))
		bi := pre.home(sig)
		b.sig[i], b.bkt[i] = sig, uint32(bi)
		b.pf[nt&(MaxBurst-1)] = uintptr(unsafe.Pointer(&pre.b[bi]))
		b.todo[nt&(MaxBurst-1)] = uint8(i)
		if nt++; nt-pfd == pfGroup/2 {
			prefetch.Lines(b.pf[pfd:nt])
			pfd = nt
		}
	}
	if pre != nil {
		b.preT = nt
		prefetch.Lines(b.pf[pfd:nt])
	}
	return rxBytes
}

// parseSlow is parseBurst's path for frame i, which parseFast did not
// take: wire.Parse, tunnels, sealed frames. It reports whether the frame
// is pending a lookup, its words in b.w[i].
func (n *NIC) parseSlow(b *burst, in *Port, i int, frame []byte) bool {
	b.lazy[i] = false
	key, lay := &b.key, &b.lays[i]
	err := wire.Parse(frame, in.info.ID, key, lay)
	b.vni[i] = key.VNI
	if key.TunKind != hal.EncapNone {
		// A tunnelled frame (parseFast takes none): one nil compare
		// unless the port has a tunnel endpoint. Checked before
		// anything else, a frame with broken inner headers included:
		// frames for another endpoint are none of this NIC's business.
		if f := in.tun.Load(); f != nil && !f.accepts(frame, &key.TunDst) {
			b.fate[i], b.why[i] = fateDrop, hal.ReasonNotLocal
			return false
		}
	}
	if err != nil {
		r := parseReason(err)
		if r == hal.ReasonMalformed {
			b.fate[i], b.why[i] = fateDrop, r
		} else {
			b.fate[i], b.why[i] = fateHost, r
		}
		return false
	}
	if key.TunKind != hal.EncapNone && !n.caps.Decaps.Has(key.TunKind) {
		b.fate[i], b.why[i] = fateHost, hal.ReasonUnsupported
		return false
	}
	if key.EthType == hal.EtherTypeSealed {
		b.anySealed = true
		ok := n.openSealed(b, in, i, frame)
		b.vni[i] = key.VNI
		if !ok {
			return false
		}
		if b.fate[i] == fateSealedRoute {
			loadWords(key, &b.w[i]) // the encapsulation's flow hash
			return false
		}
	}
	b.fate[i] = fatePending
	loadWords(key, &b.w[i])
	return true
}

// executeBurst runs the program of every hit of the burst (lookup's
// result) and sends every miss to the host, in view v's read section.
func (n *NIC) executeBurst(b *burst, v *view, bufs [][]byte, sizes []int, offset int) {
	// As in parseBurst: no index below out of bounds.
	k := min(len(bufs), MaxBurst)
	bufs, sizes = bufs[:k], sizes[:k]
	// Find every hit's program before executing any. compare asked for
	// each program's line and its template's first (encapProgram) as it
	// found the hits; the last line of the outer headers, when they run
	// on past that one (all but VXLAN over IPv4), is asked for here: not
	// on a NIC that has compiled no such program (n.encapTails), where
	// the walk over the burst would find nothing.
	if n.encapTails.Load() {
		npf := 0
		for i := 0; i < k; i++ {
			if b.fate[i] != fatePending || b.best[i] == noRule {
				continue
			}
			if p := b.prog[i]; p.encapTail { // compare's, with best
				b.pf[npf] = p.encapLastLine()
				npf++
			}
		}
		prefetch.Lines(b.pf[:npf])
	}

	var lastCount uint32 = noRule
	var cntPkts, cntBytes uint64
	for i := 0; i < k; i++ {
		if b.fate[i] != fatePending {
			continue
		}
		if b.best[i] == noRule {
			b.fate[i], b.why[i] = fateHost, hal.ReasonMiss
			continue
		}
		idx := b.best[i]
		p := b.prog[i]
		if p.argMAC {
			b.arg[i] = entryAt(v.ents, idx).arg
		}
		if p.count {
			if idx != lastCount {
				if lastCount != noRule {
					c := &v.chunks[lastCount>>chunkShift].c[lastCount&(chunkSize-1)]
					c.pkts.Add(cntPkts)
					c.bytes.Add(cntBytes)
				}
				lastCount, cntPkts, cntBytes = idx, 0, 0
			}
			cntPkts++
			if b.sealed[i] {
				cntBytes += uint64(b.osz[i]) // the frame as it matched: opened
			} else {
				cntBytes += uint64(sizes[i])
			}
		}
		buf, off, size := bufs[i], offset, sizes[i]
		if b.sealed[i] {
			buf, off, size = b.open[i], Headroom, b.osz[i]
		}
		if p.macsOnly && (b.lazy[i] || b.lays[i].Tunnel < 0) {
			// The common shape (MAC rewrites, an encapsulation, output)
			// on a frame that is not tunnelled: execute's general path,
			// with what cannot happen left out, here in the loop rather
			// than behind a call per packet. It reads the layout's
			// Ethernet header and tags alone: for a frame parseFast took
			// (lazy, no layout), the header is at 0 and the tag, if any,
			// is in the words.
			l2, tags := 0, 0
			if !b.lazy[i] {
				l2, tags = b.lays[i].L2, b.lays[i].VLANs
			} else if b.w[i][wordEthType]>>vlanShift != 0 {
				tags = 1
			}
			l3 := size - wire.EthHeaderLen - wire.VLANTagLen*tags
			if p.encap != nil {
				l3 = size + int(p.encapLen) - wire.EthHeaderLen
			}
			if l3 > int(p.outMTU) {
				b.fate[i], b.why[i] = fateHost, hal.ReasonMTU
				b.rule[i] = v.chunks[idx>>chunkShift].id(idx)
				continue
			}
			if len(p.steps) > 0 { // not for a bare encapsulation
				frame := buf[off : off+size]
				for si := range p.steps {
					if st := &p.steps[si]; st.arg {
						setMAC(frame, l2, macOfWord(b.arg[i]))
					} else if st.kind == hal.ActionSetEthDst {
						setMAC(frame, l2, st.mac)
					} else {
						setMAC(frame, l2+6, st.mac)
					}
				}
			}
			start, end := off, off+size
			if p.encap != nil {
				w := &b.w[i]
				h := uint32(0)
				if uint16(w[wordEthType]>>ethTypeShift) == hal.EtherTypeIPv4 {
					h = flowHash4(w)
				} else {
					h = flowHash(w)
				}
				var err error
				if p.encapLen == wire.HeadroomVXLANIPv4 {
					// VXLAN or Geneve over IPv4, the common tunnels:
					// Push with the offsets as constants.
					start, err = p.encap.PushUDP4(buf, start, end, h)
				} else {
					start, err = p.encap.Push(buf, start, end, h)
				}
				if err != nil {
					b.fate[i], b.why[i] = fateDrop, hal.ReasonUnsupported
					continue
				}
			}
			b.fate[i], b.out[i], b.start[i], b.end[i] = fateOut, p.out, start, end
			continue
		}
		n.execute(b, i, p, buf, off, size)
		// Only exceptions carry the rule ID (chunk.id: the entry's, or
		// the chunk's wide array).
		if b.fate[i] == fateHost {
			b.rule[i] = v.chunks[idx>>chunkShift].id(idx)
		}
	}
	if lastCount != noRule {
		c := &v.chunks[lastCount>>chunkShift].c[lastCount&(chunkSize-1)]
		c.pkts.Add(cntPkts)
		c.bytes.Add(cntBytes)
	}
}

// sealedRoutes runs the sealed routes openSealed found.
func (n *NIC) sealedRoutes(b *burst, k int) {
	var routed uint64
	for i := 0; i < k; i++ {
		if b.fate[i] == fateSealedRoute {
			routed++
			n.execute(b, i, b.prog[i], b.open[i], Headroom, b.osz[i])
		}
	}
	if routed > 0 {
		n.seal.routed.Add(routed)
	}
}

// sealedNoHost turns every opened sealed packet that would go to the host
// into a drop: its clear frame must never reach the exception path.
func (n *NIC) sealedNoHost(b *burst, k int) {
	var noFlow uint64
	for i := 0; i < k; i++ {
		if b.sealed[i] && b.fate[i] == fateHost {
			b.fate[i], b.why[i] = fateDrop, hal.ReasonSealed
			noFlow++
		}
	}
	if noFlow > 0 {
		n.seal.noFlow.Add(noFlow)
	}
}

// parseReason is wire.ReasonOf without errors.As, whose pointer target
// would escape and allocate for every refused frame: Parse returns its
// *ParseError unwrapped.
func parseReason(err error) hal.Reason {
	if pe, ok := err.(*wire.ParseError); ok {
		return pe.Reason
	}
	return hal.ReasonMalformed
}

// lookup probes one tuple for every packet that a rule of this tuple could
// still win, in passes over the burst (DPDK's bulk lookup): hash every
// packet and prefetch its bucket; read the buckets and prefetch the entries
// their signatures point to (and the next bucket, where the probe chain
// goes on); read those next buckets and prefetch their entries; then
// compare. With a million rules the bucket and the entry of a packet are
// each a cache miss; prefetches, unlike loads, do not hold up the
// instructions after them, so the misses of a whole burst are in flight
// together instead of one after the other. Prefetches go out in groups of
// pfGroup as the pass goes, not all at its end: the first packets' lines
// are then on their way while the rest are hashed, and arrive before the
// next pass reads them. For the first tuple, when it is exact4,
// parseBurst has already done the first pass (b.pre), further ahead of
// the bucket pass.
func (n *NIC) lookup(b *burst, v *view, tab *tupleTab, k int) {
	sh := tab.shape
	ht := &tab.ht
	if ht.used == 0 {
		return
	}
	var nt int
	switch {
	case ht == b.pre:
		nt = b.preT // parseBurst's first pass
	case sh.exact4:
		nt = hashExact4(b, ht, int32(tab.maxPrio), k)
	default:
		nt = hashTuple(b, sh, ht, int32(tab.maxPrio), k)
	}
	todo := b.todo[:nt]
	// The buckets: the entries their signatures point to, and the next
	// bucket of every chain that goes on.
	npf, nnx, pfd := 0, 0, 0
	ents, hide := v.ents, v.hide
	for _, ii := range todo {
		i := ii & (MaxBurst - 1)
		sig := b.sig[i]
		bi := uint64(b.bkt[i])
		bk := &ht.b[bi]
		// bk.scan(sig), written out: as a call it cost the loop its
		// registers, saved and restored around it for every packet.
		want := uint64(sig) * scanLanes
		w0, w1, w2, w3 := atomic.LoadUint64(&bk.sigs[0]), atomic.LoadUint64(&bk.sigs[1]), atomic.LoadUint64(&bk.sigs[2]), atomic.LoadUint64(&bk.sigs[3])
		o := ovfSlot(sig)
		more := atomic.LoadUint64(&bk.sigs[o>>1&3])&ovfBit(o) != 0
		x0, x1, x2, x3 := (w0&scanLow31)^want, (w1&scanLow31)^want, (w2&scanLow31)^want, (w3&scanLow31)^want
		// The lanes of x have no top bit (the words' is masked off,
		// want's is zero), so the sum needs no mask before it.
		t0 := ^((x0 + scanLow31) | x0)
		t1 := ^((x1 + scanLow31) | x1)
		t2 := ^((x2 + scanLow31) | x2)
		t3 := ^((x3 + scanLow31) | x3)
		m := laneMask(t0, t1, t2, t3)
		// The home bucket's answer, for the compare pass: bit 8 says
		// the probe chain goes on past it, candBit that the bucket
		// names one rule and the chain ends there, which the bucket
		// pass found (cand): compare takes it without reading the
		// bucket again.
		h := uint16(m)
		if more {
			h |= moreBit
			b.chain[nnx] = i
			b.pfn[nnx] = uintptr(unsafe.Pointer(&ht.b[ht.next(bi)]))
			nnx++
		}
		if m != 0 {
			if idx, ok := bk.ref(bits.TrailingZeros32(m)&7, hide); ok {
				e := entryAt(ents, idx)
				if h == uint16(m&-m) {
					h = candBit
					b.cand[i], b.candIdx[i] = e, idx
				}
				b.pf[npf] = uintptr(unsafe.Pointer(e))
				npf++
				if npf-pfd == pfGroup {
					prefetch.Lines(b.pf[pfd:npf])
					pfd = npf
				}
			} else if h == uint16(m&-m) {
				h = 0 // its one slot is not this view's
			}
		}
		b.home[i] = h
	}
	prefetch.Lines(b.pf[pfd:npf])
	prefetch.Lines(b.pfn[:nnx])
	// The rest of each entry the compare reads, when it may lie in the
	// next line: without this, a second miss per packet, one after the
	// other. A large entry's key goes on in its second line
	// (entry.more); a 48-byte tiny entry straddles two lines at every
	// other index.
	switch sizeClass(sh.n) {
	case classLarge:
		for j := 0; j < npf; j++ {
			b.pf[j] += 64
		}
		prefetch.Lines(b.pf[:npf])
	case classTiny:
		for j := 0; j < npf; j++ {
			b.pf[j] += 40 // the last key word
		}
		prefetch.Lines(b.pf[:npf])
	}
	if nnx > 0 {
		chainEntries(b, v, tab, nnx)
	}
	compare(b, v, tab, todo)
}

// hashTuple is lookup's first pass, for a tuple of any shape sh: every
// packet of the first k that a rule of the tuple could still win (no
// better priority found than floor, the tuple's best) is packed and
// hashed, its home bucket asked for, and its index listed in b.todo. It
// returns how many were.
func hashTuple(b *burst, sh *tupleShape, ht *htab, floor int32, k int) int {
	nw := min(sh.n, numWords)
	// The shape's first entryLineWords words, as byte offsets into a
	// packet's words (newShape keeps every index below numWords, so
	// wordAt reads inside them, without a bounds check per word), and
	// their masks: with the words past nw masked to zero (pmask is zero
	// there), the packing and the hash of a tuple of at most
	// entryLineWords words are straight-line code, whatever nw.
	o0, o1, o2, o3, o4 := wordOff(sh.idx[0]), wordOff(sh.idx[1]), wordOff(sh.idx[2]), wordOff(sh.idx[3]), wordOff(sh.idx[4])
	m0, m1, m2, m3, m4 := sh.pmask[0], sh.pmask[1], sh.pmask[2], sh.pmask[3], sh.pmask[4]
	// A v4 tuple leaves out words that only IPv4 packets are sure to
	// hold as its rules do (v4Known): no other packet probes it. For
	// any other tuple, want and etMask let every EtherType through.
	want, etMask := uint64(0), uint64(0)
	if sh.v4 {
		want, etMask = uint64(hal.EtherTypeIPv4)<<ethTypeShift, ethTypeMask
	}
	k = min(k, MaxBurst)
	nt, pfd := 0, 0
	for i := range b.fate[:k] {
		if b.fate[i] != fatePending || b.prio[i] > floor || b.w[i][wordEthType]&etMask != want {
			continue
		}
		// The packet's words as this tuple sees them, packed like its
		// rules' keys: hashed here, compared below without the masks.
		// Words nw to entryLineWords stay zero, as in a packed rule
		// key (see keyEqual); they add nothing to the hash.
		w, pk := &b.w[i], &b.pk[i]
		x0, x1, x2, x3, x4 := wordAt(w, o0)&m0, wordAt(w, o1)&m1, wordAt(w, o2)&m2, wordAt(w, o3)&m3, wordAt(w, o4)&m4
		pk[0], pk[1], pk[2], pk[3], pk[4] = x0, x1, x2, x3, x4
		h := uint64(hashSeed) + x0*wordMul[0] + bits.RotateLeft64(x1, 7)*wordMul[1] +
			bits.RotateLeft64(x2, 14)*wordMul[2] + bits.RotateLeft64(x3, 21)*wordMul[3] +
			bits.RotateLeft64(x4, 28)*wordMul[4]
		for j := entryLineWords; j < nw; j++ {
			x := w[sh.idx[j]] & sh.pmask[j]
			pk[j] = x
			h += bits.RotateLeft64(x, j*7) * wordMul[j]
		}
		sig := sigOf(finish(h))
		bi := ht.home(sig)
		b.sig[i], b.bkt[i] = sig, uint32(bi)
		// nt counts at most k packets: the masks only let the compiler
		// see that the indexes are in bounds.
		b.pf[nt&(MaxBurst-1)] = uintptr(unsafe.Pointer(&ht.b[bi]))
		b.todo[nt&(MaxBurst-1)] = uint8(i)
		if nt++; nt-pfd == pfGroup {
			prefetch.Lines(b.pf[pfd:nt])
			pfd = nt
		}
	}
	prefetch.Lines(b.pf[pfd:nt])
	return nt
}

// hashExact4 is hashTuple for an exact4 tuple, the words and masks
// constants: the same packing, hash and todo list (TestHashExact4).
// (For the first tuple, parseBurst does its work with b.pre.)
func hashExact4(b *burst, ht *htab, floor int32, k int) int {
	const want = uint64(hal.EtherTypeIPv4) << ethTypeShift
	k = min(k, MaxBurst)
	nt, pfd := 0, 0
	for i := range b.fate[:k] {
		w := &b.w[i]
		if b.fate[i] != fatePending || b.prio[i] > floor || w[wordEthType]&ethTypeMask != want {
			continue
		}
		b.pf[nt&(MaxBurst-1)] = hashExact4One(b, ht, i)
		b.todo[nt&(MaxBurst-1)] = uint8(i)
		if nt++; nt-pfd == pfGroup {
			prefetch.Lines(b.pf[pfd:nt])
			pfd = nt
		}
	}
	prefetch.Lines(b.pf[pfd:nt])
	return nt
}

// hashExact4One packs and hashes packet i for an exact4 tuple of table
// ht, records its signature and home bucket, and returns the bucket's
// address to prefetch. parseBurst has its own copy, written out in its
// loop (TestParseBurstLists holds the two to the same answers).
func hashExact4One(b *burst, ht *htab, i int) uintptr {
	i &= MaxBurst - 1
	w, pk := &b.w[i], &b.pk[i]
	x0, x1, x2, x3, x4 := w[5], w[8]&exact4Mask8, w[9], w[10], w[11]&exact4Mask11
	pk[0], pk[1], pk[2], pk[3], pk[4] = x0, x1, x2, x3, x4
	h := uint64(hashSeed) + x0*wordMul[0] + bits.RotateLeft64(x1, 7)*wordMul[1] +
		bits.RotateLeft64(x2, 14)*wordMul[2] + bits.RotateLeft64(x3, 21)*wordMul[3] +
		bits.RotateLeft64(x4, 28)*wordMul[4]
	sig := sigOf(finish(h))
	bi := ht.home(sig)
	b.sig[i], b.bkt[i] = sig, uint32(bi)
	return uintptr(unsafe.Pointer(&ht.b[bi]))
}

// pfGroup is how many prefetches lookup gathers before it sends them.
const pfGroup = 16

// The bits of burst.home above a home bucket's slot mask: moreBit, the
// probe chain goes on past the bucket; candBit (alone), the bucket names
// one rule this view sees, in burst.cand, and the chain ends there.
const (
	moreBit = 1 << 8
	candBit = 1 << 9
)

// chainEntries prefetches, for the nnx packets b.chain whose probe chain
// goes on past the home bucket (some 8% of lookups at a million rules),
// the entries that the next bucket's signatures point to: without
// it, compare would wait there for the bucket and then for the entry, one
// packet after the other. By now the next buckets have had the bucket pass
// to arrive.
func chainEntries(b *burst, v *view, tab *tupleTab, nnx int) {
	ht := &tab.ht
	large := sizeClass(tab.shape.n) == classLarge
	npf := 0
	for _, i := range b.chain[:nnx] {
		sig := b.sig[i]
		bk := &ht.b[ht.next(uint64(b.bkt[i]))]
		m, _ := bk.scan(sig)
		for ; m != 0 && npf < len(b.pfn)-1; m &= m - 1 {
			idx, ok := bk.ref(bits.TrailingZeros32(m)&7, v.hide)
			if !ok {
				continue // a batch's slot, not this view's
			}
			e := uintptr(unsafe.Pointer(entryAt(v.ents, idx)))
			b.pfn[npf] = e
			npf++
			if large {
				b.pfn[npf] = e + 64
				npf++
			}
		}
	}
	prefetch.Lines(b.pfn[:npf])
}

// compare is lookup's third pass, on its own so that its loop has the
// registers to itself: the packets todo, hashed for tab, against the rules
// their buckets point to. Most packets' home bucket names one rule and
// ends the probe chain (candBit): the bucket pass found that rule's
// entry, and compare checks it in straight-line code; the others walk the
// chain (compareChain).
func compare(b *burst, v *view, tab *tupleTab, todo []uint8) {
	nw := min(tab.shape.n, numWords)
	tiny, large := nw <= tinyWords, nw > entryLineWords
	gens, progs := v.gens, v.progs
	npf, pfd := 0, 0
	for _, ii := range todo {
		i := ii & (MaxBurst - 1)
		was := b.best[i]
		if h := b.home[i]; h == candBit {
			// keyEqual, with the entry's class known for the tuple.
			e, pk := b.cand[i], &b.pk[i]
			// Not kept past the read section: a huge-page slab's
			// entries may be unmapped once no reader is left.
			b.cand[i] = nil
			ek := &e.key
			d := (pk[0] ^ ek[0]) | (pk[1] ^ ek[1]) | (pk[2] ^ ek[2])
			if !tiny {
				d |= (pk[3] ^ ek[3]) | (pk[4] ^ ek[4])
				if large {
					for j := entryLineWords; j < nw; j++ {
						d |= pk[j] ^ e.more[j-entryLineWords]
					}
				}
			}
			if d == 0 && gens[e.scope] == e.gen {
				idx, pr := b.candIdx[i], int32(e.prio)
				if pr > b.prio[i] || (pr == b.prio[i] && idOf(v.chunks, idx) < idOf(v.chunks, was)) {
					b.best[i], b.prio[i], b.prog[i] = idx, pr, progs[e.prog]
				}
			}
		} else if h != 0 {
			compareChain(b, v, tab, i, nw)
		}
		// A hit: the line of its program that the execute pass reads,
		// and the first line of the template that an encapsulating
		// program carries after it (encapProgram: the fields Push reads
		// and the outer headers, all of them for VXLAN over IPv4), are
		// asked for now, while the rest of the burst is compared, rather
		// than after the lookup. With a thousand remote hosts neither is
		// in the nearer caches, and in the execute loop each packet
		// would wait for its own. (These are hints: for a program without
		// an encapsulation only the second prefetch is wasted; a later
		// tuple may still find a better rule, whose program compare then
		// records instead.)
		if b.best[i] != was {
			p := uintptr(unsafe.Pointer(b.prog[i]))
			b.pf[npf], b.pf[npf+1] = p, p+tmplOffset
			if npf += 2; npf-pfd >= pfGroup {
				prefetch.Lines(b.pf[pfd:npf])
				pfd = npf
			}
		}
	}
	prefetch.Lines(b.pf[pfd:npf])
}

// compareChain compares packet i, hashed for tab, against every rule its
// probe chain names that the view sees: the home bucket's slots b.home
// found, and those of the buckets after it while the chain goes on.
func compareChain(b *burst, v *view, tab *tupleTab, i uint8, nw int) {
	ht := &tab.ht
	chunks, ents, gens, progs, hide := v.chunks, v.ents, v.gens, v.progs, v.hide
	sig, pk := b.sig[i], &b.pk[i]
	bi := uint64(b.bkt[i])
	m, more := uint32(b.home[i]&0xff), b.home[i]&moreBit != 0
	for {
		bk := &ht.b[bi]
		for ; m != 0; m &= m - 1 {
			idx, ok := bk.ref(bits.TrailingZeros32(m)&7, hide)
			if !ok {
				continue // a batch's, not yet (or no longer) this view's
			}
			e := entryAt(ents, idx)
			if !keyEqual(pk, e, nw) || gens[e.scope] != e.gen {
				continue
			}
			pr := int32(e.prio)
			if pr > b.prio[i] || (pr == b.prio[i] && idOf(chunks, idx) < idOf(chunks, b.best[i])) {
				b.best[i], b.prio[i], b.prog[i] = idx, pr, progs[e.prog]
			}
		}
		if !more {
			return
		}
		if bi++; bi == ht.nb {
			bi = 0
		}
		m, more = ht.b[bi].scan(sig)
	}
}

// idOf is the rule ID of entry idx, which a lookup reads only to break a
// tie of priorities.
func idOf(chunks []*chunk, idx uint32) hal.RuleID {
	return chunks[idx>>chunkShift].id(idx)
}

// execute runs program p on packet i. Whatever can send the packet to the
// host instead (TTL, MTU, a VLAN to pop that is not there) is checked before
// the frame is touched, so that the host gets the frame as it arrived.
// executeBurst runs the common shape (program.macsOnly on a frame that is
// not tunnelled) itself, with what cannot happen there left out.
func (n *NIC) execute(b *burst, i int, p *program, buf []byte, offset, size int) {
	switch p.term {
	case hal.ActionDrop:
		b.fate[i], b.why[i] = fateDrop, p.reason
		return
	case hal.ActionToHost:
		b.fate[i], b.why[i] = fateHost, p.reason
		return
	}
	l := &b.lays[i]
	if b.lazy[i] {
		// Before anything below changes the frame.
		fastLayout(buf[offset:offset+size], l)
		b.lazy[i] = false
	}
	tunnelled := l.Tunnel >= 0
	start, end := offset, offset+size
	tags := l.VLANs
	if tunnelled {
		if p.decap {
			start, end = offset+l.L2, offset+outerEnd(buf[offset:offset+size], l)
		} else {
			tags = l.OuterVLANs
			if len(p.steps) > 0 {
				// The rewrites address the inner headers; with the outer
				// ones kept, their checksums would go stale.
				b.fate[i], b.why[i] = fateHost, hal.ReasonUnsupported
				return
			}
		}
	}
	frame := buf[offset : offset+size]
	if p.decTTL {
		ttl := frame[l.L3+8]
		if l.EthType == hal.EtherTypeIPv6 {
			ttl = frame[l.L3+7]
		}
		if ttl <= 1 {
			b.fate[i], b.why[i] = fateHost, hal.ReasonTTL
			return
		}
	}
	if p.pops > 0 && !popsFit(p, tags) {
		b.fate[i], b.why[i] = fateHost, hal.ReasonUnsupported
		return
	}
	tags += p.pushes - p.pops
	ln := end - start + wire.VLANTagLen*(p.pushes-p.pops)
	l3 := ln - wire.EthHeaderLen - wire.VLANTagLen*tags
	if p.encap != nil {
		l3 = ln + int(p.encapLen) - wire.EthHeaderLen
	}
	if l3 > int(p.outMTU) {
		b.fate[i], b.why[i] = fateHost, hal.ReasonMTU
		return
	}
	var err error
	for si := range p.steps {
		st := &p.steps[si]
		switch st.kind {
		case hal.ActionSetEthSrc:
			wire.SetEthSrc(frame, l, st.mac)
		case hal.ActionSetEthDst:
			if st.arg {
				wire.SetEthDst(frame, l, macOfWord(b.arg[i]))
			} else {
				wire.SetEthDst(frame, l, st.mac)
			}
		case hal.ActionSetIPSrc:
			err = wire.SetIPSrc(frame, l, st.addr)
		case hal.ActionSetIPDst:
			err = wire.SetIPDst(frame, l, st.addr)
		case hal.ActionSetL4Src:
			err = wire.SetL4Src(frame, l, st.port)
		case hal.ActionSetL4Dst:
			err = wire.SetL4Dst(frame, l, st.port)
		case hal.ActionDecTTL:
			_, err = wire.DecTTL(frame, l)
		}
		if err != nil {
			break
		}
	}
	// VLAN tags last: they move the MACs, not the L3 headers, so doing
	// them after the other rewrites gives the same frame.
	for si := 0; err == nil && si < len(p.steps); si++ {
		switch st := &p.steps[si]; st.kind {
		case hal.ActionPushVLAN:
			start, err = wire.PushVLAN(buf, start, end, st.port)
		case hal.ActionPopVLAN:
			start, err = wire.PopVLAN(buf, start, end)
		}
	}
	if err == nil && p.encap != nil {
		start, err = p.encap.Push(buf, start, end, flowHash(&b.w[i]))
	}
	if err != nil {
		// Validation rules this out; if it happens the frame may be half
		// rewritten, so it is dropped rather than handed on.
		b.fate[i], b.why[i] = fateDrop, hal.ReasonUnsupported
		return
	}
	b.fate[i], b.out[i], b.start[i], b.end[i] = fateOut, p.out, start, end
}

// setMAC writes m at frame[at:at+6]: wire.SetEthDst, with at the
// layout's L2, and wire.SetEthSrc, with L2+6, without the layout.
func setMAC(frame []byte, at int, m hal.MAC) {
	if at >= 0 && at+6 <= len(frame) {
		copy(frame[at:at+6], m[:])
	}
}

// outerEnd is where the outer IP packet of a tunnelled frame ends: the
// inner frame runs from its Ethernet header to there, with any padding the
// sender gave it (Layout.End would cut that), but without padding of the
// outer frame.
func outerEnd(frame []byte, l *wire.Layout) int {
	o := l.OuterL3
	var n int
	if l.OuterEthType == hal.EtherTypeIPv6 {
		n = o + wire.IPv6HeaderLen + int(binary.BigEndian.Uint16(frame[o+4:]))
	} else {
		n = o + int(binary.BigEndian.Uint16(frame[o+2:]))
	}
	return min(max(n, l.End), len(frame))
}

// popsFit reports whether every pop of p finds a tag, starting from tags.
func popsFit(p *program, tags int) bool {
	for si := range p.steps {
		switch p.steps[si].kind {
		case hal.ActionPushVLAN:
			tags++
		case hal.ActionPopVLAN:
			if tags == 0 {
				return false
			}
			tags--
		}
	}
	return true
}

// deliver moves the burst's results out: frames into the transmit rings
// (one lock per destination port), exceptions into the queue, and the
// counters, once per burst.
func (n *NIC) deliver(b *burst, in *Port, bufs [][]byte, sizes []int, offset int, rxBytes uint64) {
	// As in parseBurst: no index below out of bounds.
	k := min(len(bufs), MaxBurst)
	bufs, sizes = bufs[:k], sizes[:k]
	in.rxPkts.Add(uint64(k))
	in.rxBytes.Add(rxBytes)
	var inDrops, inExc uint64
	hasExc, anyFull := false, false
	for i := 0; i < k; i++ {
		switch b.fate[i] {
		case fateDrop:
			b.tally[1][b.why[i]]++
			inDrops++
		case fateHost:
			hasExc = true
		}
	}
	if hasExc {
		q := &n.exc
		q.mu.Lock()
		for i := 0; i < k; i++ {
			if b.fate[i] != fateHost {
				continue
			}
			// Exceptions come only from frames Parse has seen, so vni
			// holds the tunnel's, when there is one.
			m := hal.Exception{InPort: in.info.ID, Reason: b.why[i], VNI: b.vni[i], Rule: b.rule[i]}
			if q.putExc(bufs[i][offset:offset+sizes[i]], m) {
				b.tally[0][b.why[i]]++
				inExc++
			} else {
				b.tally[1][hal.ReasonQueueFull]++
				inDrops++
			}
		}
		// Counted before the reader is woken: whoever reads an exception
		// finds it in Stats.
		for r := range b.tally[0] {
			if c := b.tally[0][r]; c > 0 {
				n.stats[0][r].Add(c)
				b.tally[0][r] = 0
			}
		}
		in.excs.Add(inExc) // the port's count too
		q.mu.Unlock()
		q.wake()
		if in.info.Kind == hal.PortVPort {
			for i := 0; i < k; i++ {
				// A sealed frame's source is learned from the frame as it
				// arrived (bufs), never from what was opened.
				if b.fate[i] == fateHost && b.vni[i] == 0 {
					n.learn.Frame(in.info.ID, bufs[i][offset:offset+sizes[i]])
				}
			}
		}
	}
	// Outputs, grouped by port.
	for i := 0; i < k; i++ {
		if b.fate[i] != fateOut {
			continue
		}
		p := b.out[i]
		var bytes, full uint64
		p.tx.mu.Lock()
		// p.tx.put(f) for each frame, with the copy in line (copyFrame;
		// put itself would then be too large to be inlined) and the
		// ring's fields held in locals across the loop: its stores
		// (fate, the copy) would otherwise have each one read again.
		r := &p.tx
		slots, lens, head, n0 := r.slots, r.lens, r.head, r.n
		rn := n0
		for j := i; j < k; j++ {
			if b.fate[j] != fateOut || b.out[j] != p {
				continue
			}
			b.fate[j] = fateSent
			src := bufs[j]
			if b.sealed[j] {
				src = b.open[j]
			}
			f := src[b.start[j]:b.end[j]]
			if rn < len(slots) {
				s := head + rn // r.slot(rn)
				if s >= len(slots) {
					s -= len(slots)
				}
				if dst := slots[s]; len(f) <= len(dst) {
					copyFrame(dst, f)
					lens[s] = len(f)
					rn++
					bytes += uint64(len(f))
					continue
				}
			}
			full++
		}
		r.n = rn
		pkts, wasEmpty := uint64(rn-n0), n0 == 0
		// Counted before the frames can be taken: whoever receives one
		// finds it in the port's counters.
		p.txPkts.Add(pkts)
		p.txBytes.Add(bytes)
		p.tx.mu.Unlock()
		if wasEmpty && pkts > 0 {
			p.wake()
		}
		if full > 0 {
			p.drops.Add(full)
			b.tally[1][hal.ReasonQueueFull] += full
			anyFull = true
		}
	}
	if inDrops > 0 {
		in.drops.Add(inDrops)
	}
	// Only a drop or a full ring tallies anything here (the exceptions'
	// tally went out above): a burst of hits that all went out, the
	// common case, skips the walk over every reason.
	if inDrops == 0 && !anyFull {
		return
	}
	for d := 0; d < 2; d++ {
		for r := range b.tally[d] {
			if c := b.tally[d][r]; c > 0 {
				n.stats[d][r].Add(c)
				b.tally[d][r] = 0
			}
		}
	}
}

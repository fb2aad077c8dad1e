package softnic

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"unsafe"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// program is a rule's action list compiled for the datapath. Rules with the
// same actions share one program (a host has far fewer distinct actions,
// e.g. remote hosts to encapsulate to, than flows), so that per-rule memory
// stays a fixed-size entry. The MAC of the first set_eth_dst is the rule's
// own (entry.arg), not the program's: rules to every VM behind one remote
// host differ only there, and share one program.
type program struct {
	// What the datapath reads of a hit comes first, in progHotBytes
	// bytes, which lie in one cache line (newProgram): the execute pass
	// reads that line and, for an encapsulation, the template's first
	// (encapProgram), and nothing else of the program.
	term     hal.ActionKind
	count    bool
	decap    bool
	decTTL   bool
	macsOnly bool // steps are MAC rewrites only, nothing else but encap and output: see execute
	argMAC   bool // argAct >= 0
	reason   hal.Reason
	// encapTail says that encap's outer headers run on past the line
	// the template starts on (all but VXLAN over IPv4): the execute
	// pass then asks for their last line (encapLastLine).
	encapTail bool
	out       *Port
	encap     *wire.EncapTemplate
	outMTU    int32  // out's MTU, which never changes
	encapLen  int32  // encap.Len()
	steps     []step // header rewrites, in order

	pushes int // VLAN tags pushed
	pops   int // VLAN tags popped
	// argAct is the index in actions of the set_eth_dst whose MAC each
	// rule gives (entry.arg; zero in actions), -1 when none.
	argAct int

	// What interning a rule's actions reads, side by side (a line or
	// two, not three).
	quick uint64 // quickActionsHash(actions)
	refs  int    // rules that use it
	idx   uint32
	// srcTraits is hal.TraitsOf the match of the rule that the program
	// was last found for, which passed hal's checks with src: see
	// writerState.knownActions.
	srcTraits hal.ActionTraits
	// The caller's slice that the program was last found for, and in
	// which batch (writerState.batch): see matches.
	srcLen   int
	src      uintptr
	srcBatch uint64
	// key is actions packed (appendActionsKey), nil for a list it cannot
	// pack: interning compares a rule's list with it (matchKey), not
	// with actions.
	key     []uint64
	actions []hal.Action // as given, for Dump (and interning when key is nil)
	hash    uint64       // hashActions(actions), its index in progByHash
}

type step struct {
	kind hal.ActionKind
	arg  bool // set_eth_dst to the rule's MAC (entry.arg), not mac
	mac  hal.MAC
	addr [16]byte
	port uint16
}

// argAction is the index of acts' first set_eth_dst, whose MAC becomes the
// rule's operand rather than part of its program, or -1.
func argAction(acts []hal.Action) int {
	for i := range acts {
		if acts[i].Kind == hal.ActionSetEthDst {
			return i
		}
	}
	return -1
}

// progHotBytes is the size of a program's first fields, those the
// datapath reads (term to steps).
const progHotBytes = unsafe.Offsetof(program{}.steps) + unsafe.Sizeof(program{}.steps)

// mallocHeader is what Go's allocator puts in front of an object larger
// than 512 bytes that holds pointers, in the object's first bytes: the
// object itself starts on a 64-byte boundary (every size class above 512
// bytes is a multiple of 64, in spans that start on a page), the pointer
// new returns is mallocHeader bytes into it. Objects of up to 512 bytes
// have no header. TestProgramLines holds the layouts below to this.
const mallocHeader = 8

// plainProgram is a program without an encapsulation, padded to a
// multiple of 64 bytes: a size class of such a size keeps its objects on
// 64-byte boundaries, so that the program's hot fields lie in its first
// cache line.
type plainProgram struct {
	program
	_ [(64 - unsafe.Sizeof(program{})%64) % 64]byte
}

// encapProgram is a program that encapsulates, with its template, in one
// allocation: the template starts on the cache line boundary after the
// program's fields, so that its hot part (wire.EncapHotFields and the
// headers; all of it for VXLAN over IPv4) is one line that compare
// prefetches from the program's address alone, and that line holds
// nothing else.
type encapProgram struct {
	program
	_    [(64 - (mallocHeader+unsafe.Sizeof(program{}))%64) % 64]byte
	tmpl wire.EncapTemplate
}

// encapLastLine is the address of the last byte of the outer headers of
// p's template (p.encap not nil).
func (p *program) encapLastLine() uintptr {
	return uintptr(unsafe.Pointer(p.encap)) + wire.EncapHotFields + uintptr(p.encapLen) - 1
}

// tmplOffset is where an encapProgram's template starts.
const tmplOffset = unsafe.Offsetof(encapProgram{}.tmpl)

func hasEncap(acts []hal.Action) bool {
	for i := range acts {
		if acts[i].Kind == hal.ActionEncap {
			return true
		}
	}
	return false
}

// compile builds a program from actions that validate accepted; the MAC
// of acts[arg] (argAction), if any, is left to each rule.
func (n *NIC) compile(acts []hal.Action, arg int) (*program, error) {
	var p *program
	var tmpl *wire.EncapTemplate
	if hasEncap(acts) {
		// The program and its template in one allocation, the template
		// right after the program's fields (encapProgram): the datapath
		// reads both for every packet, and prefetches the template's
		// lines from the program's address (compare) without first
		// waiting for the program.
		ep := new(encapProgram)
		p, tmpl = &ep.program, &ep.tmpl
	} else {
		p = &new(plainProgram).program
	}
	*p = program{actions: make([]hal.Action, len(acts)), argAct: arg, argMAC: arg >= 0}
	for i := range acts {
		p.actions[i] = readFields(&acts[i])
	}
	if arg >= 0 {
		p.actions[arg].MAC = hal.MAC{}
	}
	for i := range acts {
		a := &acts[i]
		switch a.Kind {
		case hal.ActionDecap:
			p.decap = true
		case hal.ActionSetEthSrc, hal.ActionSetEthDst:
			if i == arg {
				p.steps = append(p.steps, step{kind: a.Kind, arg: true})
				continue
			}
			p.steps = append(p.steps, step{kind: a.Kind, mac: a.MAC})
		case hal.ActionSetIPSrc, hal.ActionSetIPDst:
			p.steps = append(p.steps, step{kind: a.Kind, addr: a.Addr.As16()})
		case hal.ActionSetL4Src, hal.ActionSetL4Dst:
			p.steps = append(p.steps, step{kind: a.Kind, port: a.L4Port})
		case hal.ActionDecTTL:
			p.decTTL = true
			p.steps = append(p.steps, step{kind: a.Kind})
		case hal.ActionPushVLAN:
			p.pushes++
			p.steps = append(p.steps, step{kind: a.Kind, port: a.VLAN})
		case hal.ActionPopVLAN:
			p.pops++
			p.steps = append(p.steps, step{kind: a.Kind})
		case hal.ActionEncap:
			t, err := wire.NewEncapTemplate(&a.Encap)
			if err != nil {
				return nil, &hal.RuleError{Field: fmt.Sprintf("actions[%d] encap", i), Reason: err.Error()}
			}
			*tmpl = *t
			p.encap = tmpl
		case hal.ActionCount:
			p.count = true
		case hal.ActionOutput:
			p.term, p.out = a.Kind, n.port(a.OutPort)
		case hal.ActionDrop, hal.ActionToHost:
			p.term, p.reason = a.Kind, a.Reason
		}
	}
	if p.encap != nil {
		p.encapLen = int32(p.encap.Len())
		// The template never moves: its lines are known now.
		t := uintptr(unsafe.Pointer(p.encap))
		if p.encapTail = p.encapLastLine()>>6 != t>>6; p.encapTail {
			n.encapTails.Store(true)
		}
	}
	if p.term == hal.ActionOutput && p.out != nil {
		p.outMTU = int32(p.out.info.MTU)
		p.macsOnly = !p.decap && p.pushes == 0 && p.pops == 0 && !p.decTTL
		for i := range p.steps {
			if k := p.steps[i].kind; k != hal.ActionSetEthSrc && k != hal.ActionSetEthDst {
				p.macsOnly = false
			}
		}
	}
	return p, nil
}

// progCacheBits sizes writerState.progCache: 4096 sets of two programs,
// so that the few thousand action lists of a host's flows (one per remote
// host) rarely evict each other.
const (
	progCacheBits = 12
	progCacheSize = 1 << progCacheBits
)

// quickActionsHash is a cheap fingerprint of an action list: the kinds, the
// output port and the encapsulation's destination and VNI, which is what
// tells apart the action lists of a host's flows. Collisions only cost a
// miss in writerState.progCache. The result is multiplied out so that its
// top bits, which pick the cache set, depend on every input bit.
func quickActionsHash(acts []hal.Action) uint64 {
	h := uint64(len(acts))
	for i := range acts {
		a := &acts[i]
		h = h*31 + uint64(a.Kind)
		if a.Kind == hal.ActionOutput {
			h += uint64(a.OutPort) << 8
		} else if a.Kind == hal.ActionEncap {
			// The last four bytes of the destination: an IPv4
			// address's through As4, kept in a 4-byte word. As16's
			// array is built in two 8-byte stores and copied as one
			// 16-byte load, which the store buffer cannot forward (a
			// third of this function's time in profiles).
			var d32 uint32
			if a.Encap.Dst.Is4() {
				d := a.Encap.Dst.As4()
				d32 = binary.LittleEndian.Uint32(d[:])
			} else {
				d32 = addrLow32(a.Encap.Dst)
			}
			h = h*31 + uint64(d32) + uint64(a.Encap.VNI)<<32
		}
	}
	return (h ^ h>>31) * hashMul1
}

// addrLow32 is the last four bytes of a's 16-byte form, read little
// endian (quickActionsHash's for an address that is not IPv4).
func addrLow32(a netip.Addr) uint32 {
	d := a.As16()
	return binary.LittleEndian.Uint32(d[12:])
}

// appendActionsKey appends to dst the action list acts as interning
// compares it: the fields each kind reads (sameActions), but for the MAC of
// acts[skip] (argAction), packed into words, so that two lists are the
// same exactly when their keys are. A program keeps its list's key in a
// few contiguous words, where the list itself spreads over a cache line or
// two per action: comparing a rule's list with a program's (matchKey)
// reads two or three lines of the program, which interning prefetches for
// a whole batch (writerState.prepare). ok is false for a list it cannot
// pack (an address with an IPv6 zone), which interning compares with
// sameActions instead.
func appendActionsKey(dst []uint64, acts []hal.Action, skip int) ([]uint64, bool) {
	dst = append(dst, uint64(len(acts)))
	for i := range acts {
		var w [actionWordsMax]uint64
		n, ok := actionWords(&acts[i], i == skip, &w)
		if !ok {
			return dst, false
		}
		dst = append(dst, w[:n]...)
		for o := acts[i].Encap.GeneveOptions; acts[i].Kind == hal.ActionEncap && len(o) > 0; {
			var b [8]byte
			k := copy(b[:], o)
			o = o[k:]
			dst = append(dst, binary.LittleEndian.Uint64(b[:]))
		}
	}
	return dst, true
}

// matchKey says whether acts is the list of key, a program's
// (appendActionsKey): the same comparison as packing acts and comparing
// keys, without the packing's stores, and stopping at the first action
// that differs.
func matchKey(key []uint64, acts []hal.Action, skip int) bool {
	if len(key) == 0 || key[0] != uint64(len(acts)) {
		return false
	}
	key = key[1:]
	for i := range acts {
		var w [actionWordsMax]uint64
		n, ok := actionWords(&acts[i], i == skip, &w)
		if !ok || len(key) < n {
			return false
		}
		for j := 0; j < n; j++ {
			if key[j] != w[j] {
				return false
			}
		}
		key = key[n:]
		for o := acts[i].Encap.GeneveOptions; acts[i].Kind == hal.ActionEncap && len(o) > 0; {
			var b [8]byte
			k := copy(b[:], o)
			o = o[k:]
			if len(key) == 0 || key[0] != binary.LittleEndian.Uint64(b[:]) {
				return false
			}
			key = key[1:]
		}
	}
	return len(key) == 0
}

// actionWordsMax is the most words actionWords packs an action into.
const actionWordsMax = 8

// actionWords packs the fields of a that its kind reads into w (but for
// its MAC when arg: the rule's own, see argAction), and returns how many
// words; an encapsulation's Geneve options follow, packed by the caller.
// ok is false for what a key cannot hold (addrTag).
func actionWords(a *hal.Action, arg bool, w *[actionWordsMax]uint64) (n int, ok bool) {
	k := uint64(a.Kind)
	switch a.Kind {
	case hal.ActionEncap:
		e := &a.Encap
		st, sok := addrTag(e.Src)
		dt, dok := addrTag(e.Dst)
		s, d := e.Src.As16(), e.Dst.As16()
		*w = [actionWordsMax]uint64{k | uint64(e.Kind)<<8 | uint64(e.TTL)<<16 | uint64(e.DstPort)<<24 | uint64(e.FlowID)<<40 | st<<48 | dt<<52,
			uint64(e.VNI) | uint64(len(e.GeneveOptions))<<32,
			binary.LittleEndian.Uint64(d[:8]), binary.LittleEndian.Uint64(d[8:]),
			binary.LittleEndian.Uint64(s[:8]), binary.LittleEndian.Uint64(s[8:]),
			macWord(e.SrcMAC), macWord(e.DstMAC)}
		return 8, sok && dok
	case hal.ActionOutput:
		w[0] = k | uint64(a.OutPort)<<32
	case hal.ActionSetEthSrc, hal.ActionSetEthDst:
		w[0] = k
		if !arg {
			w[0] |= macWord(a.MAC) << 8
		}
	case hal.ActionSetIPSrc, hal.ActionSetIPDst:
		t, tok := addrTag(a.Addr)
		b := a.Addr.As16()
		w[0], w[1], w[2] = k|t<<8, binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:])
		return 3, tok
	case hal.ActionSetL4Src, hal.ActionSetL4Dst:
		w[0] = k | uint64(a.L4Port)<<8
	case hal.ActionPushVLAN:
		w[0] = k | uint64(a.VLAN)<<8
	case hal.ActionDrop, hal.ActionToHost:
		w[0] = k | uint64(a.Reason)<<8
	default:
		w[0] = k
	}
	return 1, true
}

// addrTag tells apart what As16 does not: no address (0), IPv4 (1),
// IPv6 (2). ok is false for an IPv6 address with a zone, which a key does
// not hold.
func addrTag(a netip.Addr) (tag uint64, ok bool) {
	switch {
	case a.Is4():
		return 1, true
	case !a.IsValid():
		return 0, true
	}
	return 2, a.Zone() == ""
}

// hashActions fingerprints an action list for interning by the fields each
// kind reads (sameActions), without the MAC of acts[skip] (argAction).
func hashActions(acts []hal.Action, skip int) uint64 {
	h := uint64(hashSeed) ^ uint64(len(acts))
	var b [16]byte
	for i := range acts {
		a := &acts[i]
		h = mix(h, uint64(a.Kind))
		switch a.Kind {
		case hal.ActionEncap:
			e := &a.Encap
			h = mix(h, uint64(e.Kind)|uint64(e.VNI)<<8|uint64(e.TTL)<<32|uint64(e.DstPort)<<40|uint64(e.FlowID)<<56)
			b = e.Src.As16()
			h = mix(h, binary.LittleEndian.Uint64(b[:8]))
			h = mix(h, binary.LittleEndian.Uint64(b[8:]))
			b = e.Dst.As16()
			h = mix(h, binary.LittleEndian.Uint64(b[:8]))
			h = mix(h, binary.LittleEndian.Uint64(b[8:]))
			h = mix(h, macWord(e.SrcMAC)^macWord(e.DstMAC)<<1)
			for _, o := range e.GeneveOptions {
				h = mix(h, uint64(o))
			}
		case hal.ActionOutput:
			h = mix(h, uint64(a.OutPort))
		case hal.ActionSetEthSrc, hal.ActionSetEthDst:
			if i != skip {
				h = mix(h, macWord(a.MAC))
			}
		case hal.ActionSetIPSrc, hal.ActionSetIPDst:
			if a.Addr.IsValid() {
				b = a.Addr.As16()
				h = mix(h, binary.LittleEndian.Uint64(b[:8])^1)
				h = mix(h, binary.LittleEndian.Uint64(b[8:]))
			}
		case hal.ActionSetL4Src, hal.ActionSetL4Dst:
			h = mix(h, uint64(a.L4Port))
		case hal.ActionPushVLAN:
			h = mix(h, uint64(a.VLAN))
		case hal.ActionDrop, hal.ActionToHost:
			h = mix(h, uint64(a.Reason))
		}
	}
	return finish(h)
}

func macWord(m hal.MAC) uint64 {
	return uint64(m[0]) | uint64(m[1])<<8 | uint64(m[2])<<16 | uint64(m[3])<<24 | uint64(m[4])<<32 | uint64(m[5])<<40
}

func macOfWord(w uint64) hal.MAC {
	return hal.MAC{byte(w), byte(w >> 8), byte(w >> 16), byte(w >> 24), byte(w >> 32), byte(w >> 40)}
}

// sameActions compares two action lists by the fields each kind reads
// (hal.Action: only those mean anything), but for the MAC of action skip
// (argAction): a program's list (a) has it zero. Among an encapsulation's
// fields the destination and the VNI, which tell the lists of a host's
// flows apart, come first.
func sameActions(a, b []hal.Action, skip int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := &a[i], &b[i]
		if x.Kind != y.Kind {
			return false
		}
		switch x.Kind {
		case hal.ActionEncap:
			ex, ey := &x.Encap, &y.Encap
			if ex.Dst != ey.Dst || ex.VNI != ey.VNI || ex.Kind != ey.Kind || ex.Src != ey.Src || ex.DstMAC != ey.DstMAC ||
				ex.SrcMAC != ey.SrcMAC || ex.TTL != ey.TTL || ex.DstPort != ey.DstPort || ex.FlowID != ey.FlowID ||
				string(ex.GeneveOptions) != string(ey.GeneveOptions) {
				return false
			}
		case hal.ActionOutput:
			if x.OutPort != y.OutPort {
				return false
			}
		case hal.ActionSetEthSrc, hal.ActionSetEthDst:
			if x.MAC != y.MAC && i != skip {
				return false
			}
		case hal.ActionSetIPSrc, hal.ActionSetIPDst:
			if x.Addr != y.Addr {
				return false
			}
		case hal.ActionSetL4Src, hal.ActionSetL4Dst:
			if x.L4Port != y.L4Port {
				return false
			}
		case hal.ActionPushVLAN:
			if x.VLAN != y.VLAN {
				return false
			}
		case hal.ActionDrop, hal.ActionToHost:
			if x.Reason != y.Reason {
				return false
			}
		}
	}
	return true
}

// readFields returns a with only the fields its kind reads (hal.Action),
// the others zero: what a program keeps of a list, so that lists that
// sameActions takes for one give one answer in Dump.
func readFields(a *hal.Action) hal.Action {
	r := hal.Action{Kind: a.Kind}
	switch a.Kind {
	case hal.ActionEncap:
		r.Encap = a.Encap
		r.Encap.GeneveOptions = bytes.Clone(a.Encap.GeneveOptions)
	case hal.ActionOutput:
		r.OutPort = a.OutPort
	case hal.ActionSetEthSrc, hal.ActionSetEthDst:
		r.MAC = a.MAC
	case hal.ActionSetIPSrc, hal.ActionSetIPDst:
		r.Addr = a.Addr
	case hal.ActionSetL4Src, hal.ActionSetL4Dst:
		r.L4Port = a.L4Port
	case hal.ActionPushVLAN:
		r.VLAN = a.VLAN
	case hal.ActionDrop, hal.ActionToHost:
		r.Reason = a.Reason
	}
	return r
}

package hal

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"unsafe"
)

// CheckRule is the validation every driver starts from: it checks that r is
// well formed (returning a *RuleError) and that every field and action it
// uses is in caps (returning an *UnsupportedError). Drivers add their own
// device-specific checks after it.
func CheckRule(caps *Capabilities, r *Rule) error {
	if err := CheckShape(r); err != nil {
		return err
	}
	return CheckCapabilities(caps, r)
}

func invalid(field, format string, args ...any) error {
	return &RuleError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// actionField names actions[i] of a rule without formatting it until needed.
type actionField struct {
	i    int
	kind ActionKind
}

func lazyField(i int, k ActionKind) actionField { return actionField{i, k} }

func (f actionField) String() string { return fmt.Sprintf("actions[%d] %s", f.i, f.kind) }

// CheckShape checks that r is well formed whatever the NIC.
func CheckShape(r *Rule) error {
	if err := checkMatchShape(r); err != nil {
		return err
	}
	return checkActionShape(r)
}

// checkMatchShape is CheckShape up to the action list: the rule's ID, its
// match, and that it has actions.
func checkMatchShape(r *Rule) error {
	if r.ID == 0 {
		return invalid("id", "rule ID 0 is reserved")
	}
	m := &r.Match
	k, mk := &m.Key, &m.Mask
	isIP := k.EthType == EtherTypeIPv4 || k.EthType == EtherTypeIPv6
	if (nonzero16(&mk.IPSrc) || nonzero16(&mk.IPDst)) && (mk.EthType != 0xffff || !isIP) {
		return invalid("match.ip", "an IP address match needs eth_type IPv4 or IPv6")
	}
	if mk.Proto != 0 && (mk.EthType != 0xffff || !isIP) {
		return invalid("match.proto", "an IP protocol match needs eth_type IPv4 or IPv6")
	}
	if (mk.L4Src != 0 || mk.L4Dst != 0) && mk.Proto != 0xff {
		return invalid("match.l4", "a port match needs an exact ip_proto")
	}
	if (mk.VNI != 0 || nonzero16(&mk.TunSrc) || nonzero16(&mk.TunDst)) && (mk.TunKind != 0xff || k.TunKind == EncapNone) {
		return invalid("match.tunnel", "a VNI or tunnel address match needs a tunnel kind")
	}
	if k.VNI > 0xffffff {
		return invalid("match.vni", "VNI %d does not fit 24 bits", k.VNI)
	}
	if len(r.Actions) == 0 {
		return invalid("actions", "no actions: a rule needs a terminal action (output, drop or to_host)")
	}
	return nil
}

// checkActionShape is the rest of CheckShape: the action list, in the
// light of what the match pins (ActionTraits).
func checkActionShape(r *Rule) error {
	m := &r.Match
	k, mk := &m.Key, &m.Mask
	isIP := k.EthType == EtherTypeIPv4 || k.EthType == EtherTypeIPv6
	const (
		stageDecap = iota
		stageRewrite
		stageEncap
		stageEnd
	)
	stage := stageDecap
	tunnelled := mk.TunKind == 0xff && k.TunKind != EncapNone
	family := k.EthType
	for i := range r.Actions {
		a := &r.Actions[i]
		// field names the action in an error; built only when one is returned,
		// since CheckRule runs for every rule a driver programs.
		field := lazyField(i, a.Kind)
		if stage == stageEnd {
			return invalid(field.String(), "follows the terminal action")
		}
		switch a.Kind {
		case ActionDecap:
			if stage != stageDecap || i != 0 {
				return invalid(field.String(), "decap must be the first action")
			}
			if !tunnelled {
				return invalid(field.String(), "decap needs a match on the tunnel kind")
			}
			stage = stageRewrite
		case ActionSetEthSrc, ActionSetEthDst, ActionDecTTL, ActionPushVLAN, ActionPopVLAN:
			if stage > stageRewrite {
				return invalid(field.String(), "header rewrites must come before encap")
			}
			if a.Kind == ActionPushVLAN && a.VLAN > 0x0fff {
				return invalid(field.String(), "VLAN ID %d does not fit 12 bits", a.VLAN)
			}
			if a.Kind == ActionDecTTL && (mk.EthType != 0xffff || !isIP) {
				return invalid(field.String(), "dec_ttl needs a match on eth_type IPv4 or IPv6")
			}
			stage = stageRewrite
		case ActionSetIPSrc, ActionSetIPDst:
			if stage > stageRewrite {
				return invalid(field.String(), "header rewrites must come before encap")
			}
			if mk.EthType != 0xffff || !isIP {
				return invalid(field.String(), "an IP rewrite needs a match on eth_type IPv4 or IPv6")
			}
			if !a.Addr.IsValid() || (a.Addr.Is4() != (family == EtherTypeIPv4)) || a.Addr.Zone() != "" {
				return invalid(field.String(), "address %v is not of the matched family", a.Addr)
			}
			stage = stageRewrite
		case ActionSetL4Src, ActionSetL4Dst:
			if stage > stageRewrite {
				return invalid(field.String(), "header rewrites must come before encap")
			}
			if mk.Proto != 0xff || (k.Proto != ProtoTCP && k.Proto != ProtoUDP) {
				return invalid(field.String(), "a port rewrite needs a match on ip_proto TCP or UDP")
			}
			stage = stageRewrite
		case ActionEncap:
			if stage >= stageEncap {
				return invalid(field.String(), "at most one encap per rule")
			}
			if err := checkEncap(field, &a.Encap); err != nil {
				return err
			}
			stage = stageEncap
		case ActionCount:
		case ActionOutput:
			if a.OutPort == 0 {
				return invalid(field.String(), "port 0 is not a port")
			}
			stage = stageEnd
		case ActionDrop, ActionToHost:
			if a.Reason >= NumReasons {
				return invalid(field.String(), "unknown reason %d", a.Reason)
			}
			stage = stageEnd
		default:
			return invalid(field.String(), "unknown action kind %d", a.Kind)
		}
	}
	if stage != stageEnd {
		return invalid("actions", "the last action must be output, drop or to_host")
	}
	return nil
}

func checkEncap(field actionField, e *Encap) error {
	switch e.Kind {
	case EncapVXLAN, EncapGeneve, EncapNVGRE:
	default:
		return invalid(field.String(), "unknown encapsulation %s", e.Kind)
	}
	if e.VNI > 0xffffff {
		return invalid(field.String(), "VNI %d does not fit 24 bits", e.VNI)
	}
	if !e.Src.IsValid() || !e.Dst.IsValid() || e.Src.Is4() != e.Dst.Is4() || e.Src.Zone() != "" || e.Dst.Zone() != "" {
		return invalid(field.String(), "outer addresses %v -> %v must both be IPv4 or both IPv6", e.Src, e.Dst)
	}
	if e.Src.Is4In6() || e.Dst.Is4In6() {
		return invalid(field.String(), "outer addresses must not be IPv4-mapped IPv6")
	}
	if len(e.GeneveOptions) > 0 {
		if e.Kind != EncapGeneve {
			return invalid(field.String(), "geneve options on %s", e.Kind)
		}
		if len(e.GeneveOptions)%4 != 0 || len(e.GeneveOptions) > 252 {
			return invalid(field.String(), "geneve options are %d bytes; want a multiple of 4, at most 252", len(e.GeneveOptions))
		}
	}
	if e.FlowID != 0 && e.Kind != EncapNVGRE {
		return invalid(field.String(), "flow ID is NVGRE's")
	}
	return nil
}

// CheckCapabilities checks every field and action of r against caps.
func CheckCapabilities(caps *Capabilities, r *Rule) error {
	if err := checkFields(caps, &r.Match); err != nil {
		return err
	}
	return checkActions(caps, r)
}

// checkFields checks the match fields m uses against caps. Its answer
// depends only on m's mask and on whether m's key is IPv6.
func checkFields(caps *Capabilities, m *Match) error {
	used := m.Fields()
	if missing := used &^ caps.MatchFields; missing != 0 {
		return Unsupported(caps.Driver, "match."+missing.String(), "the NIC cannot match on it")
	}
	if partial := m.PartialFields() &^ caps.MaskedFields; partial != 0 {
		return Unsupported(caps.Driver, "match."+partial.String(), "the NIC matches this field exactly or not at all, not with a partial mask")
	}
	return nil
}

// checkGeneration checks r's scope and generation against caps.
func checkGeneration(caps *Capabilities, r *Rule) error {
	if (r.Scope != 0 || r.Generation != 0) && !caps.Generations {
		return Unsupported(caps.Driver, "generation", "the NIC has no generations (scope %d gen %d)", r.Scope, r.Generation)
	}
	return nil
}

// checkActions checks r's generation and actions against caps.
func checkActions(caps *Capabilities, r *Rule) error {
	if err := checkGeneration(caps, r); err != nil {
		return err
	}
	for i := range r.Actions {
		a := &r.Actions[i]
		if !caps.Actions.Has(a.Kind) {
			return Unsupported(caps.Driver, lazyField(i, a.Kind).String(), "the NIC has no such action")
		}
		switch a.Kind {
		case ActionEncap:
			if !caps.Encaps.Has(a.Encap.Kind) {
				return Unsupported(caps.Driver, lazyField(i, a.Kind).String()+" "+a.Encap.Kind.String(), "the NIC cannot encapsulate in %s", a.Encap.Kind)
			}
		case ActionDecap:
			if !caps.Decaps.Has(r.Match.Key.TunKind) {
				return Unsupported(caps.Driver, lazyField(i, a.Kind).String()+" "+r.Match.Key.TunKind.String(), "the NIC cannot decapsulate %s", r.Match.Key.TunKind)
			}
		}
	}
	return nil
}

// Checker is CheckRule for a run of rules against one set of capabilities,
// as a driver's Apply checks a batch: it remembers the last mask whose
// fields the capabilities cover, and a rule with the same mask (the rules
// of a batch mostly share one) skips the field checks, the costliest part
// of CheckRule. A rule with that mask whose key has the same shape (an IP
// ethertype or not, IPv6 or not, a tunnel kind or not) as the last rule
// that passed skips the checks of its match too, but for its ID and VNI
// and that it has actions (about 85 instructions where the full checks of
// a match take 200). Its answer for every rule is CheckRule's, error for
// error.
// A driver that knows a rule's action list passed before (CheckKnownActions)
// spares the checks of the list as well.
// A Checker is not safe for concurrent use, and the capabilities it was
// made with must not change while it is used.
type Checker struct {
	caps *Capabilities
	mask FlowKey // the last mask that passed the field checks
	v6   bool    // whether that rule's key was IPv6
	ok   bool    // mask and v6 hold a mask that passed
	seq  uint64  // counts the changes of mask and v6 (MaskSeq)
	// shape is what checkMatchShape's mask checks read of the key of the
	// last rule that passed them and the field checks (shapeOf), with
	// the mask that rule had (mask); shapeOK says shape holds it. A rule
	// with that mask and that shape passes both again (quickMatch).
	shape   matchShape
	shapeOK bool
}

// matchShape is what checkMatchShape's checks of the mask read of a key,
// and whether the key is IPv6 (which checkFields reads): the key pins an
// IP ethertype (1), is IPv6 (2), has a tunnel kind (4).
type matchShape uint8

func shapeOf(k *FlowKey) matchShape {
	var s matchShape
	if k.EthType == EtherTypeIPv4 || k.EthType == EtherTypeIPv6 {
		s |= 1
	}
	if k.EthType == EtherTypeIPv6 {
		s |= 2
	}
	if k.TunKind != EncapNone {
		s |= 4
	}
	return s
}

// NewChecker returns a Checker for caps.
func NewChecker(caps *Capabilities) *Checker { return &Checker{caps: caps} }

// ActionTraits is what the checks of a rule's action list read of its
// match: whether the match pins an IP ethertype and which, whether it pins
// TCP or UDP, whether it matches a tunnel, and the key's tunnel kind. Two
// rules with equal action lists and equal traits get the same answer from
// those checks, whatever else their matches, IDs or priorities hold.
type ActionTraits uint16

// TraitsOf returns the ActionTraits of match m.
func TraitsOf(m *Match) ActionTraits {
	k, mk := &m.Key, &m.Mask
	var t ActionTraits
	if mk.EthType == 0xffff && (k.EthType == EtherTypeIPv4 || k.EthType == EtherTypeIPv6) {
		t |= 1
	}
	if k.EthType == EtherTypeIPv4 {
		t |= 2
	}
	if mk.Proto == 0xff && (k.Proto == ProtoTCP || k.Proto == ProtoUDP) {
		t |= 4
	}
	if mk.TunKind == 0xff && k.TunKind != EncapNone {
		t |= 8
	}
	return t | ActionTraits(k.TunKind)<<8
}

// Check returns what CheckRule(caps, r) returns.
func (c *Checker) Check(r *Rule) error {
	if c.quickMatch(r) {
		// The match passes, the generation too: what is left is the
		// action list's.
		if err := checkActionShape(r); err != nil {
			return err
		}
		return checkActions(c.caps, r)
	}
	if err := CheckShape(r); err != nil {
		return err
	}
	if err := c.checkFields(&r.Match); err != nil {
		return err
	}
	return checkActions(c.caps, r)
}

// CheckKnownActions returns what Check(r) returns, for a rule whose action
// list is known to pass: a rule with an equal list and equal TraitsOf its
// match passed Check before, against the same capabilities. It leaves out
// the checks of the list, which would pass again. Controllers share one
// list among many rules (those to one remote host), and a driver that
// remembers the lists that passed in a batch whose lists do not change
// (an Apply's operations are the caller's, unchanged, until it returns)
// checks each distinct list once per batch, not once per rule.
func (c *Checker) CheckKnownActions(r *Rule) error {
	if c.quickMatch(r) {
		return nil
	}
	if err := checkMatchShape(r); err != nil {
		return err
	}
	if err := c.checkFields(&r.Match); err != nil {
		return err
	}
	return checkGeneration(c.caps, r)
}

// checkFields is checkFields against c's capabilities, skipped for the
// mask that passed last.
func (c *Checker) checkFields(m *Match) error {
	if v6 := m.Key.EthType == EtherTypeIPv6; !c.ok || c.v6 != v6 || c.mask != m.Mask {
		if err := checkFields(c.caps, m); err != nil {
			return err
		}
		c.mask, c.v6, c.ok = m.Mask, v6, true
		c.seq++
	}
	// Both callers ran checkMatchShape on m's rule first, and it passed.
	c.shape, c.shapeOK = shapeOf(&m.Key), true
	return nil
}

// quickMatch reports, for a rule whose match has the mask that passed
// last (so the field checks would pass again) and whose key has the same
// shapeOf as that rule's (so checkMatchShape's checks of the mask would
// pass again), that the rest of checkMatchShape and checkGeneration pass
// as well: then CheckKnownActions(r) is nil and Check(r) is what the
// action list's checks say. It leaves the Checker as it is, which is what
// the full checks would leave it in, since the mask and the shape are
// those it holds. false says only that the full checks must run.
func (c *Checker) quickMatch(r *Rule) bool {
	k := &r.Match.Key
	if !c.shapeOK || r.ID == 0 || k.VNI > 0xffffff || len(r.Actions) == 0 ||
		(r.Scope != 0 || r.Generation != 0) && !c.caps.Generations || shapeOf(k) != c.shape {
		return false
	}
	// sameMask(&r.Match.Mask, &c.mask), written out here: a call would
	// cost a tenth of it.
	const (
		ports = unsafe.Offsetof(FlowKey{}.L4Src)
		proto = unsafe.Offsetof(FlowKey{}.Proto)
	)
	x := (*[unsafe.Sizeof(FlowKey{})]byte)(unsafe.Pointer(&r.Match.Mask))
	y := (*[unsafe.Sizeof(FlowKey{})]byte)(unsafe.Pointer(&c.mask))
	le := binary.LittleEndian
	d := (le.Uint64(x[0:]) ^ le.Uint64(y[0:])) |
		(le.Uint64(x[8:]) ^ le.Uint64(y[8:])) |
		(le.Uint64(x[16:]) ^ le.Uint64(y[16:])) |
		(le.Uint64(x[24:]) ^ le.Uint64(y[24:])) |
		(le.Uint64(x[32:]) ^ le.Uint64(y[32:])) |
		(le.Uint64(x[40:]) ^ le.Uint64(y[40:])) |
		(le.Uint64(x[48:]) ^ le.Uint64(y[48:])) |
		(le.Uint64(x[56:]) ^ le.Uint64(y[56:])) |
		(le.Uint64(x[64:]) ^ le.Uint64(y[64:])) |
		(le.Uint64(x[72:]) ^ le.Uint64(y[72:])) |
		(le.Uint64(x[80:]) ^ le.Uint64(y[80:])) |
		uint64(le.Uint32(x[ports:])^le.Uint32(y[ports:])) |
		uint64(le.Uint16(x[proto:])^le.Uint16(y[proto:]))
	return d == 0
}

// The mask compare in quickMatch is *a == *b for two FlowKeys in 13
// word compares: the first 88 bytes (four addresses, in_port, VNI, two
// MACs, eth_type and VLAN) as 11 words, then the ports, then proto with
// the tunnel kind; the 2 bytes of padding at the end are left out. These
// fail to compile if the fields move.
var (
	_ [0]struct{} = [unsafe.Offsetof(FlowKey{}.L4Src) - 88]struct{}{}
	_ [0]struct{} = [unsafe.Offsetof(FlowKey{}.L4Dst) - 90]struct{}{}
	_ [0]struct{} = [unsafe.Offsetof(FlowKey{}.Proto) - 92]struct{}{}
	_ [0]struct{} = [unsafe.Offsetof(FlowKey{}.TunKind) - 93]struct{}{}
	_ [0]struct{} = [unsafe.Sizeof(FlowKey{}) - 96]struct{}{}
)

// MaskSeq hands back what Check found about the mask: a number that
// changes each time the Checker takes a new mask to remember. Check(r)
// (or CheckKnownActions(r)) returning nil leaves the Checker remembering r's mask (and whether r's
// key is IPv6), so two rules for which Check returned nil, with the same
// MaskSeq read after each, have equal masks and the same IP version. A
// driver that keeps something per mask (a table found for the previous
// rule) can thus reuse it without comparing the masks a second time.
func (c *Checker) MaskSeq() uint64 { return c.seq }

// MustPrefix parses a prefix for constants; it panics on a bad one.
func MustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

package hal_test

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"unsafe"

	"github.com/nicpath/nicpath/hal"
)

// TestCheckerQuickMatch: the Checker's shortcut for a rule whose mask and
// key shape are those of the last rule that passed answers what CheckRule
// answers, error for error, through Check and through CheckKnownActions,
// on rules made to sit next to that shortcut's edge:
//   - the mask of a rule that passed with one bit flipped, for every bit
//     of the mask's 94 bytes (under capabilities that match the rule's
//     fields exactly and no others, so that every flip changes the
//     answer);
//   - the same mask with a key of another shape (ethertype IPv4, IPv6,
//     ARP; a tunnel kind or none), ID 0, a VNI past 24 bits, no actions,
//     a scope or generation under capabilities with and without them;
//   - random rules (randomRule), each following one that passed, with
//     its mask, and with a random one of the changes above.
func TestCheckerQuickMatch(t *testing.T) {
	enc := hal.Encap{Kind: hal.EncapVXLAN, VNI: 7, Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2")}
	acts := []hal.Action{hal.SetEthDst(hal.MAC{2}), hal.EncapWith(enc), hal.Count(), hal.Output(1)}
	k := key4("198.18.0.1", "198.18.0.2", hal.ProtoUDP, 1000, 53)
	k.TunKind, k.VNI = hal.EncapVXLAN, 77
	k.TunSrc, k.TunDst = hal.Addr16(netip.MustParseAddr("198.19.0.1")), hal.Addr16(netip.MustParseAddr("198.19.0.2"))
	base := hal.Rule{ID: 1, Match: hal.Exact(&k), Actions: acts}
	fields := base.Match.Fields()
	capsets := []hal.Capabilities{
		{Driver: "these", MatchFields: fields, Actions: hal.AllActions, Encaps: hal.EncapsOf(hal.EncapVXLAN), Decaps: hal.EncapsOf(hal.EncapVXLAN), Generations: true},
		{Driver: "nogen", MatchFields: hal.MatchAll, MaskedFields: hal.MatchAll, Actions: hal.AllActions,
			Encaps: hal.EncapsOf(hal.EncapVXLAN, hal.EncapGeneve), Decaps: hal.EncapsOf(hal.EncapVXLAN, hal.EncapGeneve)},
		{Driver: "all", MatchFields: hal.MatchAll, MaskedFields: hal.MatchAll, Actions: hal.AllActions,
			Encaps: hal.EncapsOf(hal.EncapVXLAN, hal.EncapGeneve, hal.EncapNVGRE), Decaps: hal.EncapsOf(hal.EncapVXLAN, hal.EncapGeneve, hal.EncapNVGRE), Generations: true},
	}
	checkers := make([]*hal.Checker, len(capsets))
	for i := range capsets {
		checkers[i] = hal.NewChecker(&capsets[i])
	}
	refused, newSeq := 0, 0 // rules refused; passed with a new MaskSeq
	// agree checks r against every caps set after prev (a rule that
	// passes CheckRule there, or not): prev through Check, then r through
	// CheckKnownActions, and again with r through Check; and, when both
	// pass, that MaskSeq changed with the mask. (A flip CheckRule does not
	// mind, in the bytes before an IPv4 address, must still change
	// MaskSeq: the shortcut must not take it for the mask before.)
	agree := func(what string, prev, r *hal.Rule) {
		t.Helper()
		for ci := range capsets {
			c := checkers[ci]
			want := hal.CheckRule(&capsets[ci], r)
			if want != nil {
				refused++
			}
			for pass := 0; pass < 2; pass++ {
				err := c.Check(prev)
				if (err == nil) != (hal.CheckRule(&capsets[ci], prev) == nil) {
					t.Fatalf("%s: caps %s: Checker and CheckRule differ on the rule before: %v", what, capsets[ci].Driver, err)
				}
				prevPassed, prevSeq := err == nil, c.MaskSeq()
				var got error
				if pass == 0 {
					if listFails(&capsets[ci], r) {
						// CheckKnownActions is for a list known to
						// pass; this one does not.
						continue
					}
					got = c.CheckKnownActions(r)
				} else {
					got = c.Check(r)
				}
				if (got == nil) != (want == nil) || (got != nil && got.Error() != want.Error()) {
					t.Fatalf("%s: caps %s, pass %d: Checker says %v, CheckRule %v:\nbefore %v\nrule   %v", what, capsets[ci].Driver, pass, got, want, prev.String(), r.String())
				}
				// MaskSeq: two rules that pass, one after the other, read
				// the same number only if their masks are equal and their
				// keys of one IP version.
				if got == nil && prevPassed {
					eq := r.Match.Mask == prev.Match.Mask &&
						(r.Match.Key.EthType == hal.EtherTypeIPv6) == (prev.Match.Key.EthType == hal.EtherTypeIPv6)
					if seq := c.MaskSeq(); (seq == prevSeq) != eq {
						t.Fatalf("%s: caps %s, pass %d: masks equal %v, MaskSeq %d then %d:\nbefore %v\nrule   %v", what, capsets[ci].Driver, pass, eq, prevSeq, seq, prev.String(), r.String())
					}
					if !eq {
						newSeq++
					}
				}
			}
		}
	}
	// A new Checker remembers no mask, not even the zero one: the first
	// rule that passes, with a zero mask, takes a new MaskSeq.
	for ci := range capsets {
		c := hal.NewChecker(&capsets[ci])
		seq := c.MaskSeq()
		r := hal.Rule{ID: 1, Actions: []hal.Action{hal.Drop(0)}}
		if err := c.CheckKnownActions(&r); err != nil || c.MaskSeq() == seq {
			t.Fatalf("caps %s: a new Checker on a rule matching all: %v, MaskSeq %d then %d", capsets[ci].Driver, err, seq, c.MaskSeq())
		}
	}
	// Every bit of the mask.
	const size = int(unsafe.Sizeof(hal.FlowKey{}))
	const used = int(unsafe.Offsetof(hal.FlowKey{}.TunKind)) + 1
	for i := 0; i < used; i++ {
		before := refused + newSeq
		for bit := 0; bit < 8; bit++ {
			r := base
			(*[size]byte)(unsafe.Pointer(&r.Match.Mask))[i] ^= 1 << bit
			agree("mask byte flipped", &base, &r)
		}
		if refused+newSeq == before {
			t.Fatalf("no flip of mask byte %d is refused or passes with a new MaskSeq: the test would not see that byte left out", i)
		}
	}
	// The same mask with every other input of the shortcut changed.
	variants := func(r *hal.Rule, rng *rand.Rand) {
		switch rng.IntN(9) {
		case 0:
			r.Match.Key.EthType = hal.EtherTypeIPv6
		case 1:
			r.Match.Key.EthType = 0x0806
		case 2:
			r.Match.Key.EthType = hal.EtherTypeIPv4
		case 3:
			r.Match.Key.TunKind = hal.EncapKind(rng.IntN(4))
		case 4:
			r.ID = 0
		case 5:
			r.Match.Key.VNI = 0xffffff + uint32(rng.IntN(2))
		case 6:
			r.Actions = r.Actions[:0]
		case 7:
			r.Scope = hal.Scope(rng.IntN(2))
		case 8:
			r.Generation = hal.Generation(rng.IntN(2))
		}
	}
	rng := rand.New(rand.NewPCG(21, 22))
	for i := 0; i < 2000; i++ {
		r := base
		variants(&r, rng)
		if rng.IntN(2) == 0 {
			variants(&r, rng)
		}
		agree("base varied", &base, &r)
	}
	// Random rules after random rules, with the one before's mask.
	for i := 0; i < 20000; i++ {
		prev := randomRule(rng)
		r := randomRule(rng)
		r.Match.Mask = prev.Match.Mask
		if rng.IntN(2) == 0 {
			r.Match.Key = prev.Match.Key
			r.Actions = prev.Actions
		}
		variants(&r, rng)
		agree("random", &prev, &r)
	}
	if refused < 10000 {
		t.Fatalf("only %d refusals: the rules do not reach the shortcut's edges", refused)
	}
}

// listFails says whether r's action list fails the checks of a list, in
// the light of r's match, under caps: whether CheckRule refuses r with
// ID 1 for a reason about its actions. (A list it does not reach, behind
// a match or generation it refuses, is one CheckKnownActions may be
// asked about: both stop at the same error before the list.)
func listFails(caps *hal.Capabilities, r *hal.Rule) bool {
	v := *r
	v.ID = 1
	switch err := hal.CheckRule(caps, &v).(type) {
	case *hal.RuleError:
		return strings.HasPrefix(err.Field, "actions")
	case *hal.UnsupportedError:
		return strings.HasPrefix(err.Field, "actions")
	}
	return false
}

package xdp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"testing"
	"unsafe"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// fakeBackend keeps the table's writes in memory; full makes it refuse new
// keys beyond a size, as a full BPF hash does.
type fakeBackend struct {
	mu      sync.Mutex // an exact IPv4 entry may be written during a batch in flight
	entries map[bpfKey]bpfFlowVal
	masks   [2]bpfMaskSet
	bank    uint32
	full    int
}

func (f *fakeBackend) putEntries(keys []bpfKey, vals []bpfFlowVal) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range keys {
		if _, ok := f.entries[keys[i]]; !ok && f.full > 0 && len(f.entries) >= f.full {
			return i, errFull
		}
		f.entries[keys[i]] = vals[i]
	}
	return len(keys), nil
}
func (f *fakeBackend) deleteEntry(k *bpfKey) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.entries, *k)
	return nil
}
func (f *fakeBackend) putMasks(bank uint32, s *bpfMaskSet) error {
	f.masks[bank], f.bank = *s, bank
	return nil
}
func (f *fakeBackend) resetCounter(uint32) error { return nil }

func prefixRule(id hal.RuleID, prio uint16, p string) hal.Rule {
	var m hal.Match
	m.IPDst(netip.MustParsePrefix(p))
	return hal.Rule{ID: id, Priority: prio, Match: m, Actions: []hal.Action{hal.Output(1)}}
}

func applyT(t *testing.T, tab *table, ops ...hal.Op) []hal.OpResult {
	t.Helper()
	res := make([]hal.OpResult, len(ops))
	tab.apply(ops, res, func(r *hal.Rule) error { return tab.validate(r, false) })
	return res
}

func TestTableBookkeeping(t *testing.T) {
	fb := &fakeBackend{entries: map[bpfKey]bpfFlowVal{}}
	tab := newTable("test", 100, 16, 100, nil, fb)
	res := applyT(t, tab,
		hal.AddOp(prefixRule(1, 5, "198.19.0.0/16")),
		hal.AddOp(prefixRule(2, 9, "198.19.1.0/24")),
		hal.AddOp(prefixRule(3, 1, "198.19.2.0/24")))
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("op %d: %v", i, r.Err)
		}
	}
	// Two shapes, published in order of their highest priority.
	ms := fb.masks[fb.bank]
	if ms.N != 2 || ms.M[0].MaxPrio != 9 || ms.M[1].MaxPrio != 5 {
		t.Fatalf("mask set %d shapes, prios %d %d", ms.N, ms.M[0].MaxPrio, ms.M[1].MaxPrio)
	}
	if len(fb.entries) != 3 {
		t.Fatalf("%d entries", len(fb.entries))
	}
	// Same match in another generation shares the entry; a third does not fit.
	shadow := prefixRule(4, 5, "198.19.0.0/16")
	shadow.Generation = 1
	third := prefixRule(5, 5, "198.19.0.0/16")
	third.Generation = 2
	res = applyT(t, tab, hal.AddOp(shadow), hal.AddOp(third))
	if res[0].Err != nil || !errors.Is(res[1].Err, hal.ErrTableFull) {
		t.Fatalf("shadow %v, third %v", res[0].Err, res[1].Err)
	}
	k := tab.rules.get(1).bpfKey()
	if v := fb.entries[k]; v.Slot[0].ID != 1 || v.Slot[1].ID != 4 || v.Slot[1].Gen != 1 {
		t.Fatalf("shared entry %+v / %+v", v.Slot[0].ID, v.Slot[1].ID)
	}
	// Deleting the last /24 rule of a shape unpublishes the shape.
	applyT(t, tab, hal.DeleteOp(2), hal.DeleteOp(3))
	if ms := fb.masks[fb.bank]; ms.N != 1 || len(fb.entries) != 1 {
		t.Fatalf("after deletes: %d shapes, %d entries", ms.N, len(fb.entries))
	}
	// Modify in place keeps the entry; modify to another match moves it.
	m := prefixRule(1, 7, "198.19.0.0/16")
	m.Actions = []hal.Action{hal.Drop(hal.ReasonPolicy)}
	if res := applyT(t, tab, hal.ModifyOp(m)); res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	if v := fb.entries[k]; v.Slot[0].Terminal != termDrop || v.Slot[0].Prio != 7 {
		t.Fatalf("modified slot %+v", v.Slot[0])
	}
	moved := prefixRule(1, 7, "203.0.113.0/24")
	if res := applyT(t, tab, hal.ModifyOp(moved)); res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	if v := fb.entries[k]; v.Slot[0].ID != 0 || v.Slot[1].ID != 4 {
		t.Fatalf("old entry after the move: %d %d", v.Slot[0].ID, v.Slot[1].ID)
	}
	if len(fb.entries) != 2 || tab.rules.len() != 2 {
		t.Fatalf("%d entries %d rules", len(fb.entries), tab.rules.len())
	}
	// Errors: exists, not found.
	res = applyT(t, tab, hal.AddOp(moved), hal.DeleteOp(99), hal.ModifyOp(prefixRule(98, 1, "192.0.2.0/24")))
	if !errors.Is(res[0].Err, hal.ErrExists) || !errors.Is(res[1].Err, hal.ErrNotFound) || !errors.Is(res[2].Err, hal.ErrNotFound) {
		t.Fatalf("errors %v / %v / %v", res[0].Err, res[1].Err, res[2].Err)
	}
}

// TestTableFullRollsBack: a batch that overflows the map lands what fits,
// gives ErrTableFull to the rest and leaves no trace of them.
func TestTableFullRollsBack(t *testing.T) {
	fb := &fakeBackend{entries: map[bpfKey]bpfFlowVal{}, full: 3}
	tab := newTable("test", 100, 16, 100, nil, fb)
	var ops []hal.Op
	for i := 0; i < 5; i++ {
		ops = append(ops, hal.AddOp(prefixRule(hal.RuleID(i+1), 1, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(i), 0}), 24).String())))
	}
	res := applyT(t, tab, ops...)
	for i, r := range res {
		if (i < 3) != (r.Err == nil) || (r.Err != nil && !errors.Is(r.Err, hal.ErrTableFull)) {
			t.Fatalf("op %d: %v", i, r.Err)
		}
	}
	if tab.rules.len() != 3 || tab.entries.len() != 3 {
		t.Fatalf("%d rules, %d entries kept", tab.rules.len(), tab.entries.len())
	}
	if err := hal.Summarize(res); !errors.Is(err, hal.ErrTableFull) {
		t.Fatalf("summary %v", err)
	}
}

// TestEncodeEncap: the template is hal/wire's headers with the per-packet
// fields zeroed, and its folded sum is what the program adds the length to.
func TestEncodeEncap(t *testing.T) {
	e := hal.Encap{Kind: hal.EncapVXLAN, VNI: 0x123456, Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2")}
	r := hal.Rule{ID: 1, Actions: []hal.Action{hal.EncapWith(e), hal.Output(1)}}
	b, err := encodeRule(&r)
	if err != nil {
		t.Fatal(err)
	}
	if b.EncapLen != 50 || b.Flags&actEncap == 0 || b.EncapSum > 0xffff {
		t.Fatalf("%+v", b)
	}
	h := b.EncapHdr[:50]
	if h[16] != 0 || h[17] != 0 || h[24] != 0 || h[25] != 0 || h[34] != 0 || h[35] != 0 || h[38] != 0 || h[39] != 0 {
		t.Fatalf("per-packet fields not zero: %x", h)
	}
	if h[42] != 0x08 || h[46] != 0x12 || h[47] != 0x34 || h[48] != 0x56 {
		t.Fatalf("VXLAN header %x", h[42:50])
	}
}

// TestEncodeEncapIPv6 completes the IPv6 templates the way encap6 in
// bpf/lib/actions.h does (flow label, payload length, UDP source port, length
// and checksum from EncapSum and the inner frame's sum) and expects
// hal/wire's bytes: the arithmetic the program relies on, checked without
// loading it.
func TestEncodeEncapIPv6(t *testing.T) {
	src, dst := netip.MustParseAddr("2001:db8:1::1"), netip.MustParseAddr("2001:db8:1::2")
	inners := [][]byte{
		wire.Build(wire.FrameSpec{Src: netip.MustParseAddr("198.19.0.1"), Dst: netip.MustParseAddr("198.19.0.2"), Proto: hal.ProtoUDP, SrcPort: 1, DstPort: 2}),
		wire.Build(wire.FrameSpec{Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2"), Proto: hal.ProtoTCP, SrcPort: 3, DstPort: 4, Payload: make([]byte, 1001)}),
	}
	for _, e := range []hal.Encap{
		{Kind: hal.EncapVXLAN, VNI: 0x123456, Src: src, Dst: dst, TTL: 3},
		{Kind: hal.EncapGeneve, VNI: 0xabcdef, Src: src, Dst: dst, DstPort: 7000},
		{Kind: hal.EncapNVGRE, VNI: 0x654321, Src: src, Dst: dst},
		{Kind: hal.EncapNVGRE, VNI: 0x654321, Src: src, Dst: dst, FlowID: 9},
	} {
		var b bpfRule
		if err := encodeEncap(&b, &e); err != nil {
			t.Fatal(err)
		}
		n := int(b.EncapLen)
		if want := wire.Headroom(&e); n != want || b.EncapSum > 0xffff {
			t.Fatalf("%s: length %d (want %d), sum %#x", e.Kind, n, want, b.EncapSum)
		}
		for _, inner := range inners {
			var k hal.FlowKey
			var l wire.Layout
			if err := wire.Parse(inner, 0, &k, &l); err != nil {
				t.Fatal(err)
			}
			hash := wire.FlowHash(&k)
			got := append(append([]byte(nil), b.EncapHdr[:n]...), inner...)
			l4len := n - 54 + len(inner)
			binary.BigEndian.PutUint32(got[14:], 0x60000000|hash&0xfffff)
			binary.BigEndian.PutUint16(got[18:], uint16(l4len))
			if e.Kind == hal.EncapNVGRE {
				if b.Flags&actFixedFlowID == 0 {
					got[61] = uint8(hash)
				}
			} else {
				sport := uint32(0xC000 | hash>>18)
				binary.BigEndian.PutUint16(got[54:], uint16(sport))
				binary.BigEndian.PutUint16(got[58:], uint16(l4len))
				c := wire.Fold(b.EncapSum + sport + 2*uint32(l4len) + wire.Sum(inner, 0))
				if c == 0 {
					c = 0xffff
				}
				binary.BigEndian.PutUint16(got[60:], c)
			}
			if want := wire.BuildEncap(&e, inner); !bytes.Equal(got, want) {
				t.Fatalf("%s over IPv6:\n got %x\nwant %x", e.Kind, got, want)
			}
		}
	}
}

// nullBackend takes every write and keeps nothing: BenchmarkTableApply
// measures the table's own share of Apply.
type nullBackend struct{}

func (nullBackend) putEntries(keys []bpfKey, _ []bpfFlowVal) (int, error) { return len(keys), nil }
func (nullBackend) deleteEntry(*bpfKey) error                             { return nil }
func (nullBackend) putMasks(uint32, *bpfMaskSet) error                    { return nil }
func (nullBackend) resetCounter(uint32) error                             { return nil }

// BenchmarkTableApply is the Go side of xdp.rule_ops_per_s: the same batch
// as BenchmarkRuleOps (128k exact-match adds with one VXLAN encap, into an
// empty table), with the BPF writes left out.
func BenchmarkTableApply(b *testing.B) {
	const batch = 1 << 17
	src := netip.MustParseAddr("198.19.0.1")
	encap := hal.Encap{Kind: hal.EncapVXLAN, VNI: 7, Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2"),
		SrcMAC: hal.MAC{2, 0, 0, 0, 0, 1}, DstMAC: hal.MAC{2, 0, 0, 0, 0, 2}}
	ops := make([]hal.Op, batch)
	for i := range ops {
		k := hal.FlowKey{InPort: 1, EthType: hal.EtherTypeIPv4, Proto: hal.ProtoTCP, L4Src: uint16(i), L4Dst: uint16(i >> 16),
			IPSrc: hal.Addr16(src), IPDst: hal.Addr16(netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}))}
		ops[i] = hal.AddOp(hal.Rule{ID: hal.RuleID(i + 1), Match: hal.Exact(&k),
			Actions: []hal.Action{hal.EncapWith(encap), hal.Output(2)}})
	}
	res := make([]hal.OpResult, batch)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tab := newTable("test", batch, 16, batch+1, nil, nullBackend{})
		tab.apply(ops, res, func(r *hal.Rule) error { return tab.validate(r, false) })
		if err := hal.Summarize(res); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(batch*b.N), "ns/rule")
}

// TestMatchKeys: the masked key is hal's Normalize of the match, field for
// field, whatever bits the key holds outside its mask.
func TestMatchKeys(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	fill := func(b []byte) {
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
	}
	for i := 0; i < 1000; i++ {
		var m hal.Match
		fill(unsafe.Slice((*byte)(unsafe.Pointer(&m)), unsafe.Sizeof(m)))
		n := m
		n.Normalize()
		key, mask := matchKeys(&m)
		if key != keyByFields(&n.Key) || mask != keyByFields(&n.Mask) {
			t.Fatalf("match %+v: key %+v, want %+v", m, key, keyByFields(&n.Key))
		}
	}
}

// keyByFields is keyOf written out field by field.
func keyByFields(k *hal.FlowKey) bpfKey {
	return bpfKey{
		TunSrc: k.TunSrc, TunDst: k.TunDst, IPSrc: k.IPSrc, IPDst: k.IPDst,
		InPort: uint32(k.InPort), VNI: k.VNI, EthSrc: k.EthSrc, EthDst: k.EthDst,
		EthType: k.EthType, VLAN: k.VLAN, L4Src: k.L4Src, L4Dst: k.L4Dst,
		Proto: k.Proto, TunKind: uint8(k.TunKind),
	}
}

// TestSameActionsSeesEveryField: sameActions compares hal.Action and
// hal.Encap field by field; a field added to either must be added there.
func TestSameActionsSeesEveryField(t *testing.T) {
	if a, e := reflect.TypeFor[hal.Action]().NumField(), reflect.TypeFor[hal.Encap]().NumField(); a != 8 || e != 10 {
		t.Fatalf("hal.Action has %d fields and hal.Encap %d: update sameActions", a, e)
	}
	base := []hal.Action{hal.EncapWith(hal.Encap{Kind: hal.EncapVXLAN, VNI: 7, Src: netip.MustParseAddr("198.18.0.1"),
		Dst: netip.MustParseAddr("198.18.0.2")}), hal.Output(2)}
	if !sameActions(base, slices.Clone(base)) {
		t.Fatal("equal lists differ")
	}
	for _, change := range []func(a []hal.Action){
		func(a []hal.Action) { a[0].Encap.VNI++ },
		func(a []hal.Action) { a[0].Encap.TTL = 9 },
		func(a []hal.Action) { a[0].Encap.DstMAC[5] = 1 },
		func(a []hal.Action) { a[0].Encap.GeneveOptions = []byte{0, 1, 2, 3} },
		func(a []hal.Action) { a[1].OutPort = 3 },
		func(a []hal.Action) { a[1].Kind = hal.ActionDrop },
	} {
		c := slices.Clone(base)
		change(c)
		if sameActions(base, c) {
			t.Fatalf("changed list %+v is the same", c)
		}
	}
}

// TestSharedActionsStayApart: rules that share a kept action list still
// read back their own actions after one of them is modified.
func TestSharedActionsStayApart(t *testing.T) {
	fb := &fakeBackend{entries: map[bpfKey]bpfFlowVal{}}
	tab := newTable("test", 100, 16, 100, nil, fb)
	r1, r2 := prefixRule(1, 1, "198.19.1.0/24"), prefixRule(2, 1, "198.19.2.0/24")
	for i, r := range applyT(t, tab, hal.AddOp(r1), hal.AddOp(r2)) {
		if r.Err != nil {
			t.Fatalf("op %d: %v", i, r.Err)
		}
	}
	m := r1
	m.Actions = []hal.Action{hal.Drop(hal.ReasonPolicy)}
	if res := applyT(t, tab, hal.ModifyOp(m)); res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	if a := tab.rules.get(2).rule.Actions; len(a) != 1 || a[0].Kind != hal.ActionOutput || a[0].OutPort != 1 {
		t.Fatalf("rule 2 actions %+v", a)
	}
	if a := tab.rules.get(1).rule.Actions; len(a) != 1 || a[0].Kind != hal.ActionDrop {
		t.Fatalf("rule 1 actions %+v", a)
	}
}

// TestEncapCache: the last two encapsulations are found, a third replaces
// the older, and Geneve options are never cached.
func TestEncapCache(t *testing.T) {
	var c encapCache
	enc := func(vni uint32) hal.Encap {
		return hal.Encap{Kind: hal.EncapVXLAN, VNI: vni, Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2")}
	}
	for _, vni := range []uint32{1, 2} {
		e := enc(vni)
		c.put(&e, &bpfRule{EncapSum: vni})
	}
	for _, vni := range []uint32{1, 2} {
		e := enc(vni)
		if b, ok := c.get(&e); !ok || b.EncapSum != vni {
			t.Fatalf("vni %d: %v %+v", vni, ok, b)
		}
	}
	e3 := enc(3)
	c.put(&e3, &bpfRule{EncapSum: 3})
	e1, e2 := enc(1), enc(2)
	if _, ok := c.get(&e1); ok {
		t.Fatal("the oldest is still cached")
	}
	if b, ok := c.get(&e2); !ok || b.EncapSum != 2 {
		t.Fatal("the newer of the two is gone")
	}
	g := hal.Encap{Kind: hal.EncapGeneve, VNI: 3, Src: e3.Src, Dst: e3.Dst, GeneveOptions: []byte{0, 1, 2, 3}}
	c.put(&g, &bpfRule{})
	if _, ok := c.get(&g); ok {
		t.Fatal("an encap with options was cached")
	}
	if b, ok := c.get(&e3); !ok || b.EncapSum != 3 {
		t.Fatal("an encap with options displaced one")
	}
}

// TestTableRandomOps: batches of random adds, modifies and deletes over a
// few matches (so that rules share entries, in two generations), a few
// encapsulations and counting rules. After each batch the maps hold exactly
// what the table's rules encode, and the table holds exactly the rules a
// model of hal's semantics says landed.
func TestTableRandomOps(t *testing.T) {
	// full: the backend refuses new keys beyond 5 entries, as a full BPF
	// hash does, so that batch writes fail part way and are rolled back.
	// chunk: batches of 4 entries, so that writes are in flight on
	// another goroutine while the next ones are gathered.
	for _, full := range []int{0, 5} {
		for _, chunk := range []int{flushChunk, 4} {
			t.Run(fmt.Sprintf("full=%d,chunk=%d", full, chunk), func(t *testing.T) { testTableRandomOps(t, full, chunk) })
		}
	}
}

func testTableRandomOps(t *testing.T, full, chunk int) {
	rng := rand.New(rand.NewPCG(3, uint64(full)))
	fb := &fakeBackend{entries: map[bpfKey]bpfFlowVal{}, full: full}
	tab := newTable("test", 1000, 16, 1000, nil, fb)
	tab.chunk = chunk
	encaps := []hal.Encap{
		{Kind: hal.EncapVXLAN, VNI: 1, Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2")},
		{Kind: hal.EncapVXLAN, VNI: 1, Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.3")},
		{Kind: hal.EncapNVGRE, VNI: 2, Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.4")},
	}
	rule := func(id hal.RuleID) hal.Rule {
		r := prefixRule(id, uint16(rng.IntN(3)), fmt.Sprintf("198.19.%d.0/%d", rng.IntN(6), 16+8*rng.IntN(2)))
		r.Generation = hal.Generation(rng.IntN(2))
		switch rng.IntN(3) {
		case 0:
			r.Actions = []hal.Action{hal.EncapWith(encaps[rng.IntN(len(encaps))]), hal.Output(1)}
		case 1:
			r.Actions = []hal.Action{hal.Count(), hal.Drop(hal.ReasonPolicy)}
		}
		return r
	}
	model := map[hal.RuleID]bool{}
	for batch := 0; batch < 300; batch++ {
		var ops []hal.Op
		for i := rng.IntN(40); i >= 0; i-- {
			id := hal.RuleID(1 + rng.IntN(30))
			switch rng.IntN(3) {
			case 0:
				ops = append(ops, hal.AddOp(rule(id)))
			case 1:
				ops = append(ops, hal.ModifyOp(rule(id)))
			default:
				ops = append(ops, hal.DeleteOp(id))
			}
		}
		res := applyT(t, tab, ops...)
		for i, op := range ops {
			err, id := res[i].Err, op.Rule.ID
			switch {
			case op.Kind == hal.OpAdd && model[id]:
				if !errors.Is(err, hal.ErrExists) {
					t.Fatalf("batch %d op %d: add of an existing rule: %v", batch, i, err)
				}
			case op.Kind != hal.OpAdd && !model[id]:
				if !errors.Is(err, hal.ErrNotFound) {
					t.Fatalf("batch %d op %d: %v of a missing rule: %v", batch, i, op.Kind, err)
				}
			case err == nil && op.Kind == hal.OpDelete:
				delete(model, id)
			case err == nil:
				model[id] = true
			case !errors.Is(err, hal.ErrTableFull):
				t.Fatalf("batch %d op %d: %v", batch, i, err)
			}
		}
		if tab.rules.len() != len(model) {
			t.Fatalf("batch %d: %d rules, model %d", batch, tab.rules.len(), len(model))
		}
		for id := range model {
			rs := tab.rules.get(id)
			if rs == nil {
				t.Fatalf("batch %d: rule %d missing", batch, id)
			}
			if e := tab.entries.get(ptr(rs.bpfKey())); e != rs.entry {
				t.Fatalf("batch %d: rule %d: its entry is not indexed under its key", batch, id)
			}
		}
		if tab.entries.len() != len(fb.entries) {
			t.Fatalf("batch %d: %d entries indexed, %d written", batch, tab.entries.len(), len(fb.entries))
		}
		for k, e := range tab.entries.all() {
			if v, ok := fb.entries[k]; !ok || v != tab.value(e, nil, nil) {
				t.Fatalf("batch %d: entry %+v written %v, not as its rules encode", batch, k, ok)
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }

// failingBackend refuses every write while fail is set.
type failingBackend struct {
	fakeBackend
	fail bool
}

func (f *failingBackend) putEntries(keys []bpfKey, vals []bpfFlowVal) (int, error) {
	if f.fail {
		return 0, errors.New("refused")
	}
	return f.fakeBackend.putEntries(keys, vals)
}

// TestModifyFailureKeepsCounters: a modify in place that starts counting
// and whose write fails gives its new counter back.
func TestModifyFailureKeepsCounters(t *testing.T) {
	fb := &failingBackend{fakeBackend: fakeBackend{entries: map[bpfKey]bpfFlowVal{}}}
	tab := newTable("test", 100, 16, 3, nil, fb)
	r := prefixRule(1, 1, "198.19.1.0/24")
	if res := applyT(t, tab, hal.AddOp(r)); res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	counting := r
	counting.Actions = []hal.Action{hal.Count(), hal.Output(1)}
	fb.fail = true
	for i := 0; i < 3; i++ {
		var oe *hal.OpError
		if res := applyT(t, tab, hal.ModifyOp(counting)); !errors.As(res[0].Err, &oe) {
			t.Fatalf("modify %d with a failing write: %v", i, res[0].Err)
		}
	}
	fb.fail = false
	// Two counters exist (1 and 2); both must still be free.
	for _, id := range []hal.RuleID{2, 3} {
		c := prefixRule(id, 1, fmt.Sprintf("198.19.%d.0/24", id))
		c.Actions = counting.Actions
		if res := applyT(t, tab, hal.AddOp(c)); res[0].Err != nil {
			t.Fatalf("counting rule %d: %v", id, res[0].Err)
		}
	}
}

// TestKeptRuleSharesMask: the rules of one shape keep its mask once (their
// Mask points at the shape's copy), a rule of another shape or one whose
// mask differs from its shape's keeps its own, and every rule reads back
// exactly as given, through a modify in place and one that moves it.
func TestKeptRuleSharesMask(t *testing.T) {
	fb := &fakeBackend{entries: map[bpfKey]bpfFlowVal{}}
	tab := newTable("test", 100, 16, 100, nil, fb)
	given := map[hal.RuleID]hal.Rule{}
	var ops []hal.Op
	for i := range 5 {
		r := prefixRule(hal.RuleID(i+1), 1, fmt.Sprintf("198.19.%d.0/24", i))
		given[r.ID] = r
		ops = append(ops, hal.AddOp(r))
	}
	other := prefixRule(9, 1, "198.18.0.0/16")
	given[9] = other
	ops = append(ops, hal.AddOp(other))
	for i, r := range applyT(t, tab, ops...) {
		if r.Err != nil {
			t.Fatalf("op %d: %v", i, r.Err)
		}
	}
	check := func() {
		t.Helper()
		for id, want := range given {
			rs := tab.rules.get(id)
			if rs == nil {
				t.Fatalf("rule %d missing", id)
			}
			if got := rs.rule.clone(); !reflect.DeepEqual(got, want) {
				t.Fatalf("rule %d reads back as %v, was %v", id, got.String(), want.String())
			}
			if rs.rule.Mask != &rs.mask.hmask {
				t.Fatalf("rule %d keeps its own mask, not its shape's", id)
			}
		}
	}
	check()
	if tab.rules.get(1).mask == tab.rules.get(9).mask || tab.rules.get(1).rule.Mask != tab.rules.get(2).rule.Mask {
		t.Fatal("shapes not kept apart or not shared")
	}
	m := given[2]
	m.Priority, m.Cookie = 7, 0x42
	given[2] = m
	mv := given[3]
	mv.Match = hal.Match{}
	mv.Match.IPDst(netip.MustParsePrefix("198.18.5.0/24")).EthType(hal.EtherTypeIPv4)
	given[3] = mv
	for i, r := range applyT(t, tab, hal.ModifyOp(m), hal.ModifyOp(mv)) {
		if r.Err != nil {
			t.Fatalf("modify %d: %v", i, r.Err)
		}
	}
	check()
	// A mask unlike the shape's is kept on its own.
	r := given[1]
	r.Match.Mask.VLAN = 1
	if k := keep(&r, tab.rules.get(1).mask); k.Mask == &tab.rules.get(1).mask.hmask || *k.Mask != r.Match.Mask {
		t.Fatal("a different mask shares the shape's")
	}
}

// TestDroppedShapeNotReused: warm finds an add's mask shape ahead of the
// batch's operations; an earlier operation that drops the shape (deletes
// its last rule) must send the add to a live one (a new shape, or the one
// an add between them made), never the dropped state, which is no longer
// published.
func TestDroppedShapeNotReused(t *testing.T) {
	fb := &fakeBackend{entries: map[bpfKey]bpfFlowVal{}}
	tab := newTable("test", 100, 16, 100, nil, fb)
	// Two rules of one shape: the second finds the first's, which warm
	// then offers to the adds of the next batch.
	ids := []hal.RuleID{1, 2}
	ops := []hal.Op{hal.AddOp(prefixRule(1, 1, "198.19.1.0/24")), hal.AddOp(prefixRule(2, 1, "198.19.2.0/24"))}
	for round := range 3 {
		for i, r := range applyT(t, tab, ops...) {
			if r.Err != nil {
				t.Fatalf("round %d op %d: %v", round, i, r.Err)
			}
		}
		if tab.lastMask == nil {
			t.Fatalf("round %d: no shape for warm to offer", round)
		}
		live := map[*maskState]bool{}
		for _, ms := range tab.masks {
			live[ms] = true
		}
		for id, rs := range tab.rules.all() {
			if !live[rs.mask] {
				t.Fatalf("round %d: rule %d attached to a shape that is not in use", round, id)
			}
			if v, ok := fb.entries[rs.bpfKey()]; !ok || v.Slot[0].ID != uint64(id) {
				t.Fatalf("round %d: rule %d: no entry under its shape's ID", round, id)
			}
		}
		if ms := fb.masks[fb.bank]; ms.N != 1 || len(tab.masks) != 1 || tab.rules.len() != 2 {
			t.Fatalf("round %d: %d shapes published, %d kept, %d rules", round, ms.N, len(tab.masks), tab.rules.len())
		}
		// Next: delete both rules (the shape goes), add two of it again.
		ops = []hal.Op{hal.DeleteOp(ids[0]), hal.DeleteOp(ids[1])}
		for j := range ids {
			ids[j] += 2
			ops = append(ops, hal.AddOp(prefixRule(ids[j], 1, fmt.Sprintf("198.19.%d.0/24", ids[j]))))
		}
	}
}

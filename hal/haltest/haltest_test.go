package haltest_test

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/haltest"
)

// rec is a NIC with every optional interface that records the methods
// called on it.
type rec struct {
	mu    sync.Mutex
	calls []string
}

func (r *rec) called(m string) {
	r.mu.Lock()
	r.calls = append(r.calls, m)
	r.mu.Unlock()
}

func (r *rec) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls
	r.calls = nil
	return c
}

func (r *rec) Capabilities() hal.Capabilities {
	r.called("Capabilities")
	return hal.Capabilities{Driver: "rec"}
}
func (r *rec) Ports() []hal.Port        { r.called("Ports"); return nil }
func (r *rec) Validate(*hal.Rule) error { r.called("Validate"); return nil }
func (r *rec) Apply(context.Context, []hal.Op, []hal.OpResult) error {
	r.called("Apply")
	return nil
}
func (r *rec) Dump(context.Context, func(*hal.RuleInfo) error) error { r.called("Dump"); return nil }
func (r *rec) Activate(context.Context, hal.Scope, hal.Generation) error {
	r.called("Activate")
	return nil
}
func (r *rec) ActiveGeneration(hal.Scope) (hal.Generation, error) {
	r.called("ActiveGeneration")
	return 0, nil
}
func (r *rec) ReadExceptions(context.Context, []hal.Exception) (int, error) {
	r.called("ReadExceptions")
	return 0, nil
}
func (r *rec) Inject(context.Context, hal.PortID, [][]byte) error { r.called("Inject"); return nil }
func (r *rec) RuleCounters(context.Context, []hal.RuleID, []hal.Counters) error {
	r.called("RuleCounters")
	return nil
}
func (r *rec) PortCounters(context.Context, hal.PortID) (hal.PortCounters, error) {
	r.called("PortCounters")
	return hal.PortCounters{}, nil
}
func (r *rec) Stats(context.Context) (hal.Stats, error) { r.called("Stats"); return hal.Stats{}, nil }
func (r *rec) Close() error                             { r.called("Close"); return nil }
func (r *rec) ApplyAtomic(context.Context, []hal.Op, []hal.OpResult) error {
	r.called("ApplyAtomic")
	return nil
}
func (r *rec) SealPublicKey() [32]byte { r.called("SealPublicKey"); return [32]byte{1} }
func (r *rec) RegisterSealKey(context.Context, hal.PortID, uint8, [32]byte) error {
	r.called("RegisterSealKey")
	return nil
}
func (r *rec) RevokeSealKey(context.Context, hal.PortID, uint8) error {
	r.called("RevokeSealKey")
	return nil
}
func (r *rec) SetSealedRoutes(context.Context, hal.PortID, []hal.SealedRoute) error {
	r.called("SetSealedRoutes")
	return nil
}
func (r *rec) SetTunnelEndpoint(context.Context, hal.TunnelEndpoint) error {
	r.called("SetTunnelEndpoint")
	return nil
}
func (r *rec) ReadLearned(context.Context, []hal.LearnedAddress) (int, error) {
	r.called("ReadLearned")
	return 0, nil
}

// withOptional returns r as a NIC with the optional interfaces set in mask
// (bit 0 AtomicApplier, 1 SealedAddresses, 2 TunnelTerminator, 3
// AddressLearner) and no other.
func withOptional(r *rec, mask int) hal.NIC {
	type nic struct{ hal.NIC }
	switch mask {
	case 1:
		return struct {
			nic
			hal.AtomicApplier
		}{nic{r}, r}
	case 2:
		return struct {
			nic
			hal.SealedAddresses
		}{nic{r}, r}
	case 3:
		return struct {
			nic
			hal.AtomicApplier
			hal.SealedAddresses
		}{nic{r}, r, r}
	case 4:
		return struct {
			nic
			hal.TunnelTerminator
		}{nic{r}, r}
	case 5:
		return struct {
			nic
			hal.AtomicApplier
			hal.TunnelTerminator
		}{nic{r}, r, r}
	case 6:
		return struct {
			nic
			hal.SealedAddresses
			hal.TunnelTerminator
		}{nic{r}, r, r}
	case 7:
		return struct {
			nic
			hal.AtomicApplier
			hal.SealedAddresses
			hal.TunnelTerminator
		}{nic{r}, r, r, r}
	case 8:
		return struct {
			nic
			hal.AddressLearner
		}{nic{r}, r}
	case 9:
		return struct {
			nic
			hal.AtomicApplier
			hal.AddressLearner
		}{nic{r}, r, r}
	case 10:
		return struct {
			nic
			hal.SealedAddresses
			hal.AddressLearner
		}{nic{r}, r, r}
	case 11:
		return struct {
			nic
			hal.AtomicApplier
			hal.SealedAddresses
			hal.AddressLearner
		}{nic{r}, r, r, r}
	case 12:
		return struct {
			nic
			hal.TunnelTerminator
			hal.AddressLearner
		}{nic{r}, r, r}
	case 13:
		return struct {
			nic
			hal.AtomicApplier
			hal.TunnelTerminator
			hal.AddressLearner
		}{nic{r}, r, r, r}
	case 14:
		return struct {
			nic
			hal.SealedAddresses
			hal.TunnelTerminator
			hal.AddressLearner
		}{nic{r}, r, r, r}
	case 15:
		return r
	}
	return nic{r}
}

func optionalOf(n hal.NIC) int {
	mask := 0
	if _, ok := n.(hal.AtomicApplier); ok {
		mask |= 1
	}
	if _, ok := n.(hal.SealedAddresses); ok {
		mask |= 2
	}
	if _, ok := n.(hal.TunnelTerminator); ok {
		mask |= 4
	}
	if _, ok := n.(hal.AddressLearner); ok {
		mask |= 8
	}
	return mask
}

// callAll calls every method n has, optional ones included.
func callAll(n hal.NIC) {
	ctx := context.Background()
	n.Capabilities()
	n.Ports()
	n.Validate(&hal.Rule{})
	n.Apply(ctx, nil, nil)
	n.Dump(ctx, nil)
	n.Activate(ctx, 1, 1)
	n.ActiveGeneration(1)
	n.ReadExceptions(ctx, nil)
	n.Inject(ctx, 1, nil)
	n.RuleCounters(ctx, nil, nil)
	n.PortCounters(ctx, 1)
	n.Stats(ctx)
	if a, ok := n.(hal.AtomicApplier); ok {
		a.ApplyAtomic(ctx, nil, nil)
	}
	if s, ok := n.(hal.SealedAddresses); ok {
		s.SealPublicKey()
		s.RegisterSealKey(ctx, 1, 0, [32]byte{})
		s.RevokeSealKey(ctx, 1, 0)
		s.SetSealedRoutes(ctx, 1, nil)
	}
	if t, ok := n.(hal.TunnelTerminator); ok {
		t.SetTunnelEndpoint(ctx, hal.TunnelEndpoint{})
	}
	if l, ok := n.(hal.AddressLearner); ok {
		l.ReadLearned(ctx, nil)
	}
	n.Close()
}

var nicMethods = []string{"Capabilities", "Ports", "Validate", "Apply", "Dump", "Activate", "ActiveGeneration",
	"ReadExceptions", "Inject", "RuleCounters", "PortCounters", "Stats", "Close"}

func wantCalls(mask int) []string {
	want := slices.Clone(nicMethods)
	if mask&1 != 0 {
		want = append(want, "ApplyAtomic")
	}
	if mask&2 != 0 {
		want = append(want, "SealPublicKey", "RegisterSealKey", "RevokeSealKey", "SetSealedRoutes")
	}
	if mask&4 != 0 {
		want = append(want, "SetTunnelEndpoint")
	}
	if mask&8 != 0 {
		want = append(want, "ReadLearned")
	}
	slices.Sort(want)
	return want
}

// For each of the sixteen combinations of optional interfaces, Wrap of a
// decorator that overrides nothing has exactly the wrapped NIC's, and
// every call reaches the wrapped NIC once.
func TestWrapKeepsOptionalInterfaces(t *testing.T) {
	for mask := range 16 {
		r := &rec{}
		inner := withOptional(r, mask)
		if got := optionalOf(inner); got != mask {
			t.Fatalf("test fake %d has optional interfaces %d", mask, got)
		}
		w := haltest.Wrap(&haltest.Decorator{Inner: inner})
		if got := optionalOf(w); got != mask {
			t.Errorf("Wrap of a NIC with optional interfaces %04b has %04b", mask, got)
		}
		callAll(w)
		got := r.take()
		slices.Sort(got)
		if want := wantCalls(mask); !slices.Equal(got, want) {
			t.Errorf("%04b: the NIC saw %v, want %v", mask, got, want)
		}
		if u, ok := w.(interface{ Unwrap() hal.NIC }); !ok || u.Unwrap() != inner {
			t.Errorf("%04b: Unwrap does not return the wrapped NIC", mask)
		}
	}
}

// observer overrides Apply and every optional method: the wrapped NIC's
// calls go through it, and those the NIC lacks are hidden.
type observer struct {
	haltest.Decorator
	seen []string
}

func (o *observer) Apply(ctx context.Context, ops []hal.Op, res []hal.OpResult) error {
	o.seen = append(o.seen, "Apply")
	return o.Inner.Apply(ctx, ops, res)
}

func (o *observer) ApplyAtomic(ctx context.Context, ops []hal.Op, res []hal.OpResult) error {
	o.seen = append(o.seen, "ApplyAtomic")
	return o.Inner.(hal.AtomicApplier).ApplyAtomic(ctx, ops, res)
}

func (o *observer) SetTunnelEndpoint(ctx context.Context, ep hal.TunnelEndpoint) error {
	o.seen = append(o.seen, "SetTunnelEndpoint")
	return o.Inner.(hal.TunnelTerminator).SetTunnelEndpoint(ctx, ep)
}

func TestWrapUsesTheDecoratorsOverrides(t *testing.T) {
	for mask := range 16 {
		r := &rec{}
		o := &observer{Decorator: haltest.Decorator{Inner: withOptional(r, mask)}}
		w := haltest.Wrap(o)
		if got := optionalOf(w); got != mask {
			t.Errorf("%04b: a decorator implementing more than the NIC has %04b", mask, got)
		}
		callAll(w)
		want := []string{"Apply"}
		if mask&1 != 0 {
			want = append(want, "ApplyAtomic")
		}
		if mask&4 != 0 {
			want = append(want, "SetTunnelEndpoint")
		}
		if !slices.Equal(o.seen, want) {
			t.Errorf("%04b: the decorator saw %v, want %v", mask, o.seen, want)
		}
		got := r.take()
		slices.Sort(got)
		if want := wantCalls(mask); !slices.Equal(got, want) {
			t.Errorf("%04b: the NIC saw %v, want %v", mask, got, want)
		}
	}
}

// Decorators stack: each layer keeps what the one below has.
func TestWrapStacks(t *testing.T) {
	r := &rec{}
	inner := withOptional(r, 5)
	w := haltest.Wrap(&observer{Decorator: haltest.Decorator{Inner: haltest.Wrap(&haltest.Decorator{Inner: inner})}})
	if got := optionalOf(w); got != 5 {
		t.Fatalf("two layers over %04b have %04b", 5, got)
	}
}

// OptionalInterfaces is every interface hal declares that is not part of
// hal.NIC: an optional interface added to hal must be kept by Wrap (and
// FaultNIC) too.
func TestOptionalInterfacesAreHals(t *testing.T) {
	files, err := filepath.Glob("../*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	ifaces := map[string]*ast.InterfaceType{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(af, func(n ast.Node) bool {
			if ts, ok := n.(*ast.TypeSpec); ok && ts.Name.IsExported() {
				if it, ok := ts.Type.(*ast.InterfaceType); ok {
					ifaces[ts.Name.Name] = it
				}
			}
			return true
		})
	}
	nic, ok := ifaces["NIC"]
	if !ok {
		t.Fatalf("no NIC interface among hal's %d interfaces", len(ifaces))
	}
	// NIC and what it embeds are not optional.
	delete(ifaces, "NIC")
	for _, m := range nic.Methods.List {
		if len(m.Names) == 0 {
			if id, ok := m.Type.(*ast.Ident); ok {
				delete(ifaces, id.Name)
			}
		}
	}
	var optional []string
	for name := range ifaces {
		optional = append(optional, name)
	}
	slices.Sort(optional)
	if !slices.Equal(optional, haltest.OptionalInterfaces) {
		t.Fatalf("hal's optional interfaces are %v; haltest keeps %v", optional, haltest.OptionalInterfaces)
	}
}

// A Decorator's optional methods are not its own: it is no AtomicApplier
// by itself, so that a decorator used without Wrap claims nothing.
func TestDecoratorClaimsNothing(t *testing.T) {
	var n hal.NIC = &haltest.Decorator{Inner: &rec{}}
	if got := optionalOf(n); got != 0 {
		t.Fatalf("a bare Decorator has optional interfaces %04b", got)
	}
}

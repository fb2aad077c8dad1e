package ondemand_test

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nicpath/nicpath/directory"
	"github.com/nicpath/nicpath/directory/ondemand"
	"github.com/nicpath/nicpath/directory/ondemand/ondemandtest"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/store/storetest"
	"github.com/nicpath/nicpath/vswitch/vswitchtest"
)

// fake resolves from a state it can be given anew, counting lookups;
// blocked makes lookups wait for their deadline.
type fake struct {
	mu      sync.Mutex
	st      *policy.State
	bump    uint64
	blocked bool
	calls   atomic.Int64
}

func (f *fake) Resolve(ctx context.Context, vni uint32, ca netip.Addr) (directory.Record, error) {
	f.calls.Add(1)
	f.mu.Lock()
	st, bump, blocked := f.st, f.bump, f.blocked
	f.mu.Unlock()
	if blocked {
		<-ctx.Done()
		return directory.Record{}, ctx.Err()
	}
	r, err := directory.StateResolver{State: st}.Resolve(ctx, vni, ca)
	r.Version += bump
	return r, err
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func bed(t *testing.T, f *fake, cfg ondemand.Config) (*ondemandtest.Bed, *policy.State) {
	st := storetest.ThreeHosts(0)
	if f.st == nil {
		f.st = st
	}
	b, err := ondemandtest.New(context.Background(), st, func(string) directory.Resolver { return f }, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b, st
}

func landed(ds []vswitchtest.Delivery) string {
	var s []string
	for _, d := range ds {
		s = append(s, d.Host.Name+"/"+d.VM)
	}
	return strings.Join(s, ",")
}

// The first packet to a remote VM waits for the lookup, then lands; the
// receiver resolves the sender the same way; later packets need no lookup.
func TestFirstPacketResolved(t *testing.T) {
	ctx := context.Background()
	f := &fake{}
	b, st := bed(t, f, ondemand.Config{})
	if _, ok := mustLocal(t, st, "host-c").Lookup(5001, netip.MustParseAddr("10.0.0.10")); ok {
		t.Fatal("host-c's own state holds the mover's mapping")
	}
	for i := range 3 {
		ds, err := b.Send(ctx, "host-c", "streamer", ondemandtest.Frame(st, "streamer", "mover", 1000, "hello"))
		if err != nil {
			t.Fatal(err)
		}
		if landed(ds) != "host-a/mover" {
			t.Fatalf("packet %d landed %q, want host-a/mover", i, landed(ds))
		}
	}
	// One lookup on host-c (the mover), one on host-a (the streamer).
	if n := f.calls.Load(); n != 2 {
		t.Fatalf("%d lookups, want 2", n)
	}
	s := b.Layers["host-c"].Stats()
	if s.Held != 1 || s.Released != 1 || s.DroppedQueueFull+s.DroppedTimeout != 0 {
		t.Fatalf("host-c stats %+v", s)
	}
	if e := b.Layers["host-c"].Explain(5001, netip.MustParseAddr("10.0.0.10")); !strings.Contains(e, "VM mover on host-a") {
		t.Fatalf("explain: %s", e)
	}
}

func mustLocal(t *testing.T, st *policy.State, host string) *policy.State {
	l, err := ondemand.Local(st, host)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// A lookup that times out drops the packets it held, counts them and says
// why; nothing lands anywhere.
func TestTimeoutDropsNeverMisdelivers(t *testing.T) {
	ctx := context.Background()
	f := &fake{blocked: true}
	b, st := bed(t, f, ondemand.Config{Cache: directory.CacheConfig{Timeout: 30 * time.Millisecond}})
	ds, err := b.Send(ctx, "host-c", "streamer", ondemandtest.Frame(st, "streamer", "mover", 1000, "lost"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 0 {
		t.Fatalf("a packet whose lookup timed out landed: %s", landed(ds))
	}
	s := b.Layers["host-c"].Stats()
	if s.DroppedTimeout != 1 || s.Cache.Timeouts != 1 {
		t.Fatalf("stats %+v", s)
	}
	if e := b.Layers["host-c"].Explain(5001, netip.MustParseAddr("10.0.0.10")); !strings.Contains(e, ondemand.ReasonTimeout) {
		t.Fatalf("explain: %s", e)
	}
	// The directory answers again: the next packet is looked up anew.
	f.mu.Lock()
	f.blocked = false
	f.mu.Unlock()
	ds, err = b.Send(ctx, "host-c", "streamer", ondemandtest.Frame(st, "streamer", "mover", 1000, "found"))
	if err != nil || landed(ds) != "host-a/mover" {
		t.Fatalf("after the directory recovered: %q %v", landed(ds), err)
	}
}

// A full queue drops and counts; the packets it held land once resolved.
func TestQueueFull(t *testing.T) {
	ctx := context.Background()
	f := &fake{}
	b, st := bed(t, f, ondemand.Config{QueueLen: 2})
	h := b.Hosts["host-c"]
	for i := range 5 {
		if _, err := h.Far[h.Ports["streamer"]].Send([][]byte{ondemandtest.Frame(st, "streamer", "mover", uint16(1000+i), "burst")}); err != nil {
			t.Fatal(err)
		}
	}
	// Hold everything first: the lookup may not finish in between.
	l := b.Layers["host-c"]
	if err := h.Pump(); err != nil {
		t.Fatal(err)
	}
	s := l.Stats()
	if s.Held != 2 || s.DroppedQueueFull != 3 {
		t.Fatalf("stats %+v, want 2 held and 3 dropped", s)
	}
	if e := l.Explain(5001, netip.MustParseAddr("10.0.0.10")); !strings.Contains(e, ondemand.ReasonQueueFull) {
		t.Fatalf("explain: %s", e)
	}
	if err := l.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	ds, err := b.U.Settle(h)
	if err != nil {
		t.Fatal(err)
	}
	// host-a resolves the sender in turn.
	for b.Layers["host-a"].Pending() {
		b.Layers["host-a"].Settle(ctx)
		more, err := b.U.Settle(b.Hosts["host-a"])
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, more...)
	}
	if landed(ds) != "host-a/mover,host-a/mover" {
		t.Fatalf("landed %q, want the two held packets on host-a", landed(ds))
	}
}

// An address nobody published is walked and dropped by the switch as an
// unknown destination, and not looked up again within the negative TTL.
func TestNotFound(t *testing.T) {
	ctx := context.Background()
	f := &fake{}
	b, st := bed(t, f, ondemand.Config{})
	streamer, _ := st.VM("streamer")
	for range 2 {
		ds, err := b.Send(ctx, "host-c", "streamer", ondemandtest.FrameTo(streamer, netip.MustParseAddr("10.9.9.9"), hal.MustMAC("02:00:00:09:09:09"), 1000, "nobody"))
		if err != nil || len(ds) != 0 {
			t.Fatalf("landed %q (%v)", landed(ds), err)
		}
	}
	if f.calls.Load() != 1 || b.Layers["host-c"].Stats().NotFound != 1 {
		t.Fatalf("%d lookups, stats %+v", f.calls.Load(), b.Layers["host-c"].Stats())
	}
	if e := b.Layers["host-c"].Explain(5001, netip.MustParseAddr("10.9.9.9")); !strings.Contains(e, "no record") {
		t.Fatalf("explain: %s", e)
	}
}

// A record whose version changed when its TTL expired moves the flows
// installed from it: the mover, now on host-b, receives there.
func TestRevalidateMovesFlows(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: time.Unix(1000, 0)}
	f := &fake{}
	b, st := bed(t, f, ondemand.Config{Cache: directory.CacheConfig{TTL: time.Minute, Clock: clk.Now}})
	frame := ondemandtest.Frame(st, "streamer", "mover", 1000, "x")
	if ds, err := b.Send(ctx, "host-c", "streamer", frame); err != nil || landed(ds) != "host-a/mover" {
		t.Fatalf("%q %v", landed(ds), err)
	}
	bld := st.Builder()
	moved, err := movedTo(bld, "mover", "host-b")
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.st, f.bump = moved, 8
	f.mu.Unlock()
	// The store moves the VM (no shadow: a cold move). Within the TTL
	// host-c's flow still goes to host-a, which no longer has the VM and
	// drops it: nothing is misdelivered.
	if err := b.Update(ctx, moved); err != nil {
		t.Fatal(err)
	}
	if err := b.Layers["host-c"].Revalidate(ctx); err != nil {
		t.Fatal(err)
	}
	if ds, _ := b.Send(ctx, "host-c", "streamer", frame); len(ds) != 0 {
		t.Fatalf("before the TTL: %q", landed(ds))
	}
	clk.add(2 * time.Minute)
	if err := b.Layers["host-c"].Revalidate(ctx); err != nil {
		t.Fatal(err)
	}
	if b.Layers["host-c"].Stats().Revalidated != 1 {
		t.Fatalf("stats %+v", b.Layers["host-c"].Stats())
	}
	ds, err := b.Send(ctx, "host-c", "streamer", frame)
	if err != nil || landed(ds) != "host-b/mover" {
		t.Fatalf("after revalidation: %q %v, want host-b/mover", landed(ds), err)
	}
}

func movedTo(b *policy.Builder, vm, host string) (*policy.State, error) {
	st, err := b.Build()
	if err != nil {
		return nil, err
	}
	nb := policy.NewBuilder()
	for _, h := range st.Hosts() {
		nb.AddHost(h)
	}
	for _, t := range st.Tenants() {
		nb.AddTenant(t)
	}
	for _, v := range st.VNETs() {
		nb.AddVNET(v)
	}
	for _, v := range st.VMs() {
		if v.Name == vm {
			v.Host = host
			v.Generation = 2
		}
		nb.AddVM(v)
	}
	return nb.Build()
}

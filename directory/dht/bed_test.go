package dht

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nicpath/nicpath/directory"
	"github.com/nicpath/nicpath/directory/ondemand"
	"github.com/nicpath/nicpath/directory/ondemand/ondemandtest"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/store"
	"github.com/nicpath/nicpath/store/migrate"
	"github.com/nicpath/nicpath/store/storetest"
	"github.com/nicpath/nicpath/vswitch/vswitchtest"
)

// hostNode is the DHT node each simulated host resolves through.
var hostNode = map[string]int{"host-a": 1, "host-b": 2, "host-c": 3}

// world is 20 DHT nodes, the store, the VM manager publishing to the DHT
// through node 0, and three vswitch hosts resolving on demand, each
// following the store.
type world struct {
	tn  *testNet
	st  *policy.State
	s   *store.KVStore
	m   *migrate.Manager
	bed *ondemandtest.Bed
}

func newWorld(t testing.TB, extra int, cache directory.CacheConfig, mut func(int, *Config)) *world {
	// Bounded generously: under the race detector on a loaded machine a
	// DHT put (a lookup, then twenty stores) takes seconds.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	w := &world{tn: startNet(t, 20, mut), st: storetest.ThreeHosts(extra)}
	w.tn.waitTables(5)
	w.s = store.NewKV(store.NewMemory(), "")
	w.m = migrate.New(w.s, nil)
	w.m.SetDirectory(w.tn.nodes[0], managerKey)
	if _, err := w.m.Publish(ctx, w.st); err != nil {
		t.Fatal(err)
	}
	var err error
	w.bed, err = ondemandtest.New(ctx, w.st, func(h string) directory.Resolver { return w.tn.nodes[hostNode[h]] },
		ondemand.Config{Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.bed.Close)
	// Every host follows the store through its layer.
	fctx, fcancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 3)
	for _, h := range storetest.Hosts {
		f := store.NewFollower(store.FollowerConfig{Store: w.s, Host: h.Name, Target: w.bed.Layers[h.Name],
			Heartbeat: 50 * time.Millisecond, Retry: 10 * time.Millisecond})
		go func() { f.Run(fctx); done <- struct{}{} }()
	}
	t.Cleanup(func() {
		fcancel()
		for range 3 {
			<-done
		}
	})
	return w
}

// tally checks every landing of a stream: a frame lands on the VM it was
// addressed to (by MAC and inner address), once.
type tally struct {
	sent, landed, misdelivered, lost int
	where                            map[string]int
}

func (ta *tally) check(t *testing.T, ds []vswitchtest.Delivery, to policy.VM) {
	ta.sent++
	if ta.where == nil {
		ta.where = map[string]int{}
	}
	if len(ds) == 0 {
		ta.lost++
		return
	}
	for i, d := range ds {
		var k hal.FlowKey
		var l wire.Layout
		err := wire.Parse(d.Frame, 0, &k, &l)
		if i > 0 || err != nil || d.VM != to.Name || k.EthDst != hal.MAC(to.MAC) || hal.AddrFrom16(k.IPDst) != to.CAs[0] {
			ta.misdelivered++
			t.Errorf("frame for %s landed on %s/%s (%d of %d)", to.Name, d.Host.Name, d.VM, i+1, len(ds))
			continue
		}
		ta.landed++
		ta.where[d.Host.Name]++
	}
}

// Three hosts resolve every destination through the DHT while the mover
// migrates from host-a to host-c under the VM manager: the shadow's record
// and the store's shadow, one activation, then the new location. Streams
// from host-b and host-c to the mover never land anywhere but on the
// mover, and end on host-c.
func TestMigrationOverDHT(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	w := newWorld(t, 6, directory.CacheConfig{TTL: 300 * time.Millisecond, Timeout: 5 * time.Second}, nil)
	mover, _ := w.st.VM("mover")
	var migrated atomic.Bool
	errc := make(chan error, 1)
	go func() {
		_, err := w.m.Migrate(ctx, "mover", "host-c", migrate.Options{InstallTimeout: 60 * time.Second, ActivateTimeout: 60 * time.Second})
		migrated.Store(true)
		errc <- err
	}()
	var ta tally
	after := 0
	for i := 0; after < 20; i++ {
		if ctx.Err() != nil {
			t.Fatal("the migration did not finish")
		}
		for _, from := range []struct{ host, vm string }{{"host-b", "bystander"}, {"host-c", "streamer"}} {
			ds, err := w.bed.Send(ctx, from.host, from.vm, ondemandtest.Frame(w.st, from.vm, "mover", uint16(1000+i%50), "stream"))
			if err != nil {
				t.Fatal(err)
			}
			ta.check(t, ds, mover)
		}
		if i%10 == 0 {
			for _, l := range w.bed.Layers {
				if err := l.Revalidate(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
		if migrated.Load() {
			after++
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// After the migration and a revalidation, everything lands on host-c.
	time.Sleep(350 * time.Millisecond)
	for _, l := range w.bed.Layers {
		l.Revalidate(ctx)
	}
	var last tally
	for i := range 5 {
		ds, err := w.bed.Send(ctx, "host-b", "bystander", ondemandtest.Frame(w.st, "bystander", "mover", uint16(3000+i), "after"))
		if err != nil {
			t.Fatal(err)
		}
		last.check(t, ds, mover)
	}
	t.Logf("sent %d, landed %d (%v), lost %d, misdelivered %d; after: %v", ta.sent, ta.landed, ta.where, ta.lost, ta.misdelivered, last.where)
	if ta.misdelivered != 0 || last.misdelivered != 0 {
		t.Fatalf("%d misdelivered", ta.misdelivered+last.misdelivered)
	}
	if last.where["host-c"] != 5 {
		t.Fatalf("after the migration frames landed %v, want all on host-c", last.where)
	}
	for n, l := range w.bed.Layers {
		if s := l.Stats(); s.DroppedTimeout+s.DroppedError != 0 {
			t.Errorf("%s: %+v", n, s)
		}
	}
}

// A stream to many destinations, each resolved on demand with a short TTL,
// while a third of the DHT's nodes (not the hosts' own) leave mid-stream:
// every lookup still succeeds and every frame lands on its VM.
func TestAThirdOfTheNodesLeaveMidStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	w := newWorld(t, 12, directory.CacheConfig{TTL: 50 * time.Millisecond, NegativeTTL: 50 * time.Millisecond, Timeout: 5 * time.Second}, func(_ int, c *Config) { departing(c) })
	var dsts []policy.VM
	for i := range 12 {
		v, _ := w.st.VM(fmt.Sprintf("vm-%d", i))
		if v.Host != "host-b" {
			dsts = append(dsts, v)
		}
	}
	var ta tally
	for i := range 120 {
		if i == 40 {
			for _, k := range []int{0, 4, 5, 7, 9, 11, 13} { // 7 of 20, the publisher among them
				w.tn.stop(k)
			}
		}
		to := dsts[i%len(dsts)]
		ds, err := w.bed.Send(ctx, "host-b", "bystander", ondemandtest.FrameTo(mustVM(w.st, "bystander"), to.CAs[0], hal.MAC(to.MAC), uint16(1000+i), "mid"))
		if err != nil {
			t.Fatal(err)
		}
		ta.check(t, ds, to)
		if i%8 == 0 {
			time.Sleep(60 * time.Millisecond) // records expire: looked up again
			for _, l := range w.bed.Layers {
				if err := l.Revalidate(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	s := w.bed.Layers["host-b"].Stats()
	t.Logf("sent %d, landed %d (%v), lost %d; host-b: %d lookups, %d revalidated", ta.sent, ta.landed, ta.where, ta.lost, s.Cache.Lookups, s.Revalidated)
	if ta.misdelivered != 0 || ta.lost != 0 || ta.landed != ta.sent {
		t.Fatalf("sent %d, landed %d, lost %d, misdelivered %d", ta.sent, ta.landed, ta.lost, ta.misdelivered)
	}
	for n, l := range w.bed.Layers {
		if s := l.Stats(); s.DroppedTimeout+s.DroppedError != 0 || s.Cache.Timeouts+s.Cache.Errors != 0 {
			t.Errorf("%s: %+v", n, s)
		}
	}
	if s.Cache.Lookups <= uint64(len(dsts)) {
		t.Fatalf("host-b looked up %d times: records were not looked up again after the nodes left", s.Cache.Lookups)
	}
}

func mustVM(st *policy.State, name string) policy.VM {
	v, _ := st.VM(name)
	return v
}

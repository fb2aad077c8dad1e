// Package storetest is the shared suite every store.KV implementation
// passes (the in-memory one and etcd), and small helpers for tests of the
// stores and their followers.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/store"
)

// Backend is one KV under test with its fault switches. Compact forgets the
// history up to a revision; nil skips the compaction cases.
type Backend struct {
	KV      store.KV
	Compact func(rev int64) error
}

// RunKV runs the suite against fresh backends made by open.
func RunKV(t *testing.T, open func(t *testing.T) Backend) {
	t.Run("TxnAndGet", func(t *testing.T) { testTxnGet(t, open(t)) })
	t.Run("WatchWholeRevisions", func(t *testing.T) { testWatch(t, open(t)) })
	t.Run("WatchAfterCompaction", func(t *testing.T) {
		b := open(t)
		if b.Compact == nil {
			t.Skip("backend has no compaction")
		}
		testCompaction(t, b)
	})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func testTxnGet(t *testing.T, b Backend) {
	c := ctx(t)
	r1, err := b.KV.Txn(c, []store.Op{{Key: "/t/a", Value: []byte("1")}, {Key: "/t/b", Value: []byte("2")}, {Key: "/u/x", Value: []byte("3")}})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := b.KV.Txn(c, []store.Op{{Key: "/t/a", Delete: true}, {Key: "/t/c", Value: []byte("4")}})
	if err != nil {
		t.Fatal(err)
	}
	if r2 <= r1 {
		t.Fatalf("revisions do not increase: %d then %d", r1, r2)
	}
	kvs, rev, err := b.KV.Get(c, "/t/")
	if err != nil {
		t.Fatal(err)
	}
	if rev < r2 {
		t.Fatalf("Get at revision %d, before the last write %d", rev, r2)
	}
	got := ""
	for _, kv := range kvs {
		got += fmt.Sprintf("%s=%s@%d ", kv.Key, kv.Value, kv.ModRevision-r1)
	}
	if want := "/t/b=2@0 /t/c=4@" + fmt.Sprint(r2-r1) + " "; got != want {
		t.Fatalf("Get = %q, want %q", got, want)
	}
}

func testWatch(t *testing.T, b Backend) {
	c := ctx(t)
	r0, err := b.KV.Txn(c, []store.Op{{Key: "/w/zero", Value: []byte("0")}})
	if err != nil {
		t.Fatal(err)
	}
	wc, cancel := context.WithCancel(c)
	defer cancel()
	ch := b.KV.Watch(wc, "/w/", r0+1)
	var revs []int64
	for i := range 20 {
		ops := []store.Op{{Key: fmt.Sprintf("/w/%02d/a", i), Value: []byte("a")}, {Key: fmt.Sprintf("/w/%02d/b", i), Value: []byte("b")}}
		if i > 0 {
			ops = append(ops, store.Op{Key: fmt.Sprintf("/w/%02d/a", i-1), Delete: true})
		}
		r, err := b.KV.Txn(c, ops)
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, r)
		if _, err := b.KV.Txn(c, []store.Op{{Key: "/other/x", Value: []byte("x")}}); err != nil {
			t.Fatal(err)
		}
	}
	// Every revision arrives whole, in order, and nothing outside the prefix.
	perRev := map[int64]int{}
	var order []int64
	for len(order) < len(revs) || perRev[revs[len(revs)-1]] < 3 {
		select {
		case resp, ok := <-ch:
			if !ok {
				t.Fatal("watch closed early")
			}
			if resp.Err != nil {
				t.Fatal(resp.Err)
			}
			for _, ev := range resp.Events {
				if len(order) == 0 || order[len(order)-1] != ev.Revision {
					if len(order) > 0 && ev.Revision < order[len(order)-1] {
						t.Fatalf("revision %d after %d", ev.Revision, order[len(order)-1])
					}
					if perRev[ev.Revision] != 0 {
						t.Fatalf("revision %d split across responses", ev.Revision)
					}
					order = append(order, ev.Revision)
				}
				perRev[ev.Revision]++
				if ev.Key == "/other/x" {
					t.Fatal("event outside the watched prefix")
				}
			}
		case <-c.Done():
			t.Fatalf("watch got %d of %d revisions", len(order), len(revs))
		}
	}
	for i, r := range revs {
		want := 3
		if i == 0 {
			want = 2
		}
		if order[i] != r || perRev[r] != want {
			t.Fatalf("revision %d: got %d events at position of %d, want %d", r, perRev[r], order[i], want)
		}
	}
}

func testCompaction(t *testing.T, b Backend) {
	c := ctx(t)
	var last int64
	for i := range 5 {
		r, err := b.KV.Txn(c, []store.Op{{Key: "/c/k", Value: fmt.Appendf(nil, "%d", i)}})
		if err != nil {
			t.Fatal(err)
		}
		last = r
	}
	if err := b.Compact(last); err != nil {
		t.Fatal(err)
	}
	ch := b.KV.Watch(c, "/c/", last-2)
	select {
	case resp := <-ch:
		if !errors.Is(resp.Err, store.ErrCompacted) {
			t.Fatalf("watch from a compacted revision: %+v, want ErrCompacted", resp)
		}
	case <-c.Done():
		t.Fatal("no answer from a watch of a compacted revision")
	}
}

// ThreeHosts returns a state with hosts host-a, host-b and host-c
// (198.18.0.1–3), one tenant "t" with VNET "net" (VNI 5001, 10.0.0.0/16),
// and the VMs: "mover" on host-a (10.0.0.10), "streamer" on host-c
// (10.0.0.30), "bystander" on host-b (10.0.0.20), plus extra VMs vm-N
// (10.0.N/256.N%256+1) spread over the hosts.
func ThreeHosts(extra int) *policy.State {
	st, err := ThreeHostsBuilder(extra).Build()
	if err != nil {
		panic(err)
	}
	return st
}

// Hosts are the hosts of ThreeHosts.
var Hosts = []policy.Host{
	{Name: "host-a", PA: netip.MustParseAddr("198.18.0.1")},
	{Name: "host-b", PA: netip.MustParseAddr("198.18.0.2")},
	{Name: "host-c", PA: netip.MustParseAddr("198.18.0.3")},
}

// ThreeHostsBuilder is ThreeHosts before Build.
func ThreeHostsBuilder(extra int) *policy.Builder {
	b := policy.NewBuilder()
	for _, h := range Hosts {
		b.AddHost(h)
	}
	b.AddTenant(policy.Tenant{Name: "t"})
	b.AddVNET(policy.VNET{Tenant: "t", Name: "net", VNI: 5001, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	vm := func(name string, n int, host string) policy.VM {
		return policy.VM{Name: name, Tenant: "t", VNET: "net", Host: host,
			MAC: policy.MAC{2, 0, 0, byte(n >> 16), byte(n >> 8), byte(n)},
			CAs: []netip.Addr{netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)})}}
	}
	b.AddVM(vm("mover", 10, "host-a"))
	b.AddVM(vm("bystander", 20, "host-b"))
	b.AddVM(vm("streamer", 30, "host-c"))
	for i := range extra {
		n := 1<<16 + i // 10.1.0.0 and up: clear of the named VMs
		b.AddVM(vm(fmt.Sprintf("vm-%d", i), n, Hosts[i%3].Name))
	}
	return b
}

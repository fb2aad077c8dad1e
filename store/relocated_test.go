package store_test

import (
	"testing"

	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/store"
)

// A relocated subnet is stored as itself, not as the VMs its pool compiles
// into: a host following the store gets the same subnet and mappings.
func TestPublishLoadRelocated(t *testing.T) {
	st, err := policy.LoadFile("../examples/policies/relocated.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kv := store.NewMemory()
	s := store.NewKV(kv, "")
	c := tctx(t)
	if _, err := s.Publish(c, st); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Load(c)
	if err != nil {
		t.Fatal(err)
	}
	want, got := st.Relocated(), snap.State.Relocated()
	if len(got) != 1 || got[0] != want[0] {
		t.Fatalf("relocated %+v, want %+v", got, want)
	}
	if len(snap.State.VMs()) != len(st.VMs()) || !snap.State.IsRelocatedVM(policy.RelocatedVMName("branch", want[0].PoolFirst)) {
		t.Fatalf("%d VMs, want %d", len(snap.State.VMs()), len(st.VMs()))
	}
	m, ok := snap.State.Lookup(1001, want[0].PoolLast)
	if a, _ := snap.State.Host("anchor"); !ok || m.PA != a.PA {
		t.Fatalf("the pool's last address: %+v %v", m, ok)
	}
}

package migrate_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/store"
	"github.com/nicpath/nicpath/store/migrate"
	"github.com/nicpath/nicpath/store/storetest"
)

func setup(t *testing.T) (*store.KVStore, *migrate.Manager, context.Context) {
	s := store.NewKV(store.NewMemory(), "")
	m := migrate.New(s, nil)
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	if _, err := m.Publish(c, storetest.ThreeHosts(0)); err != nil {
		t.Fatal(err)
	}
	return s, m, c
}

// reporter plays a host that applies every state at once and reports it.
func reporter(t *testing.T, s *store.KVStore, host string) {
	f := store.NewFollower(store.FollowerConfig{Store: s, Host: host, Target: nopTarget{},
		Heartbeat: 50 * time.Millisecond, Retry: 10 * time.Millisecond})
	c, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(c); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

type nopTarget struct{}

func (nopTarget) Update(context.Context, *policy.State) error { return nil }

func TestMigrateRefusals(t *testing.T) {
	_, m, c := setup(t)
	for _, tc := range []struct{ vm, to, want string }{
		{"nobody", "host-b", "no VM"},
		{"mover", "host-z", "no host"},
		{"mover", "host-a", "already runs"},
	} {
		if _, err := m.Migrate(c, tc.vm, tc.to, migrate.Options{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Migrate(%s, %s) = %v, want %q", tc.vm, tc.to, err, tc.want)
		}
	}
}

// TestShadowNotInstalledIsAbandoned: when a host never reports the shadow,
// the migration fails, the shadow record is removed and nothing was
// activated.
func TestShadowNotInstalledIsAbandoned(t *testing.T) {
	s, m, c := setup(t)
	reporter(t, s, "host-a")
	reporter(t, s, "host-b") // host-c never reports
	activated := false
	_, err := m.Migrate(c, "mover", "host-b", migrate.Options{InstallTimeout: 200 * time.Millisecond,
		BeforeActivate: func() { activated = true }})
	if err == nil || !strings.Contains(err.Error(), "host-c") {
		t.Fatalf("Migrate = %v, want a failure naming host-c", err)
	}
	snap, err := s.Load(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := snap.State.Shadow("mover"); ok || activated {
		t.Fatalf("shadow left (%v) or activated (%v) after an abandoned migration", ok, activated)
	}
}

// TestMigrateSteps: with every host reporting, the store goes through the
// three changes and ends with the VM at its new location, generation 2.
func TestMigrateSteps(t *testing.T) {
	s, m, c := setup(t)
	for _, h := range storetest.Hosts {
		reporter(t, s, h.Name)
	}
	var before store.Snapshot
	mig, err := m.Migrate(c, "mover", "host-c", migrate.Options{BeforeActivate: func() {
		before, _ = s.Load(c)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !(mig.ShadowRev < mig.ActivationRev && mig.ActivationRev < mig.FinishRev) || mig.Generation != 2 || len(mig.Lagging) != 0 {
		t.Fatalf("migration %+v", mig)
	}
	if sh, ok := before.State.Shadow("mover"); !ok || sh.Host != "host-c" {
		t.Fatal("no shadow before the activation")
	}
	if h, _, _, _ := before.State.Location("mover"); h != "host-a" {
		t.Fatal("the VM moved before the activation")
	}
	snap, err := s.Load(c)
	if err != nil {
		t.Fatal(err)
	}
	vm, _ := snap.State.VM("mover")
	if vm.Host != "host-c" || vm.Generation != 2 || len(snap.State.Shadows()) != 0 || len(snap.State.Activations()) != 0 {
		t.Fatalf("final state: %+v shadows %v activations %v", vm, snap.State.Shadows(), snap.State.Activations())
	}
	if _, err := m.Migrate(c, "mover", "host-a", migrate.Options{}); err != nil {
		t.Fatalf("migrating back: %v", err)
	}
}

package migrate_test

import (
	"context"
	"crypto/ed25519"
	"sync"
	"testing"
	"time"

	"github.com/nicpath/nicpath/directory"
	"github.com/nicpath/nicpath/store"
	"github.com/nicpath/nicpath/store/migrate"
	"github.com/nicpath/nicpath/store/storetest"
)

// logDir is a directory.Publisher that keeps every record published.
type logDir struct {
	mu   sync.Mutex
	recs []directory.Record
}

func (l *logDir) Publish(_ context.Context, rs []directory.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, rs...)
	return nil
}

func (l *logDir) of(vm string) []directory.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []directory.Record
	for _, r := range l.recs {
		if r.VM == vm {
			out = append(out, r)
		}
	}
	return out
}

// With a directory, the manager publishes every VM's signed records, then
// at each step of a migration a record of a higher version: the shadow
// (before the shadow is in the store), then the new location (before it
// becomes the VM's own); an abandoned migration publishes the old location
// again above the shadow's version.
func TestDirectoryRecords(t *testing.T) {
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	ver := directory.Verifier{Trusted: []ed25519.PublicKey{key.Public().(ed25519.PublicKey)}}
	s := store.NewKV(store.NewMemory(), "")
	m := migrate.New(s, nil)
	d := &logDir{}
	m.SetDirectory(d, key)
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st := storetest.ThreeHosts(0)
	if _, err := m.Publish(c, st); err != nil {
		t.Fatal(err)
	}
	for _, v := range st.VMs() {
		rs := d.of(v.Name)
		if len(rs) != len(v.CAs) {
			t.Fatalf("%s: %d records for %d addresses", v.Name, len(rs), len(v.CAs))
		}
		for _, r := range rs {
			b, err := r.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ver.Verify(r.Key(), b); err != nil {
				t.Fatalf("%s: %v", r.Key(), err)
			}
			if r.Loc.Host != v.Host || r.Shadow.Host != "" {
				t.Fatalf("%s: record %+v", v.Name, r)
			}
		}
	}
	for _, h := range storetest.Hosts {
		reporter(t, s, h.Name)
	}
	n0 := len(d.of("mover"))
	var atActivation int
	if _, err := m.Migrate(c, "mover", "host-c", migrate.Options{BeforeActivate: func() { atActivation = len(d.of("mover")) }}); err != nil {
		t.Fatal(err)
	}
	rs := d.of("mover")[n0-1:]
	if atActivation != n0+1 || len(rs) != 3 {
		t.Fatalf("records before activation %d, after %d (from %d)", atActivation, len(rs), n0)
	}
	first, shadow, final := rs[0], rs[1], rs[2]
	if !(first.Version < shadow.Version && shadow.Version < final.Version) {
		t.Fatalf("versions %d, %d, %d do not rise", first.Version, shadow.Version, final.Version)
	}
	if shadow.Loc.Host != "host-a" || shadow.Shadow.Host != "host-c" || shadow.Shadow.Generation != 2 {
		t.Fatalf("shadow record %+v", shadow)
	}
	if final.Loc.Host != "host-c" || final.Loc.Generation != 2 || final.Shadow.Host != "" {
		t.Fatalf("final record %+v", final)
	}

	// An abandoned migration: host-c stops reporting.
	s2 := store.NewKV(store.NewMemory(), "")
	m2 := migrate.New(s2, nil)
	d2 := &logDir{}
	m2.SetDirectory(d2, key)
	if _, err := m2.Publish(c, storetest.ThreeHosts(0)); err != nil {
		t.Fatal(err)
	}
	reporter(t, s2, "host-a")
	if _, err := m2.Migrate(c, "mover", "host-b", migrate.Options{InstallTimeout: 200 * time.Millisecond}); err == nil {
		t.Fatal("migration with silent hosts succeeded")
	}
	rs = d2.of("mover")
	last, sh := rs[len(rs)-1], rs[len(rs)-2]
	if last.Version <= sh.Version || last.Loc.Host != "host-a" || last.Shadow.Host != "" {
		t.Fatalf("after abandoning: shadow %+v then %+v", sh, last)
	}
}

//go:build linux

package multihost

import (
	"testing"

	"github.com/nicpath/nicpath/store"
)

// The namespace bed over the in-process store: the vswitchds open it by
// name, as they would open etcd.
func init() {
	store.Register("nsbed-mem", func(string) (store.Store, error) { return store.NewKV(noClose{nsMem}, ""), nil })
}

var nsMem = store.NewMemory()

type noClose struct{ store.KV }

func (noClose) Close() error { return nil }

// TestNamespaceMigration: the multi-host test on namespaces (root only).
func TestNamespaceMigration(t *testing.T) {
	RunNSMigration(t, NSTest{Spec: "nsbed-mem://", Store: store.NewKV(noClose{nsMem}, ""), Outage: func(down bool) { nsMem.SetAvailable(!down) }})
}

// BenchmarkNSMigration is BenchmarkMigration on namespaces, over the
// in-process store (root only; the etcd module runs it over etcd).
func BenchmarkNSMigration(b *testing.B) {
	RunNSMigrationBenchmark(b, NSTest{Spec: "nsbed-mem://", Store: store.NewKV(noClose{nsMem}, "")})
}

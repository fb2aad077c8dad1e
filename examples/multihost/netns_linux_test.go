//go:build linux

package multihost

import (
	"encoding/binary"
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

// FuzzStreamSeqOf: the namespace bed's frame reader never panics, and a
// sequence number it reads comes from a UDP packet to the stream's port
// that carries the stream's magic.
func FuzzStreamSeqOf(f *testing.F) {
	ok := make([]byte, 14+20+8+12)
	binary.BigEndian.PutUint16(ok[12:], 0x0800)
	ok[14], ok[14+9] = 0x45, 17
	binary.BigEndian.PutUint16(ok[14+20+2:], streamPort)
	binary.BigEndian.PutUint32(ok[14+20+8:], streamMagic)
	binary.BigEndian.PutUint64(ok[14+20+12-4:], 0) // keeps the length minimal
	f.Add(ok)
	f.Add(ok[:40])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, fr []byte) {
		if _, good := streamSeqOf(fr); good {
			ihl := int(fr[14]&0x0f) * 4
			u := fr[14+ihl:]
			if fr[14+9] != 17 || binary.BigEndian.Uint16(u[2:4]) != streamPort || binary.BigEndian.Uint32(u[8:12]) != streamMagic {
				t.Fatalf("read a sequence number from a frame that is not the stream's: %x", fr)
			}
		}
	})
}

//go:build linux

package multihost

import (
	"encoding/binary"
	"strings"
	"sync"
	"testing"

	"github.com/nicpath/nicpath/store"
)

// The namespace bed over in-process stores: the vswitchds open one by
// name (nsbed-mem://NAME), as they would open etcd.
func init() {
	store.Register("nsbed-mem", func(spec string) (store.Store, error) {
		return store.NewKV(noClose{nsMemory(strings.TrimPrefix(spec, "nsbed-mem://"))}, ""), nil
	})
}

var nsMems = struct {
	sync.Mutex
	m map[string]*store.Memory
}{m: map[string]*store.Memory{}}

// nsMemory is the in-process store of that name, made on first use.
func nsMemory(name string) *store.Memory {
	nsMems.Lock()
	defer nsMems.Unlock()
	m := nsMems.m[name]
	if m == nil {
		m = store.NewMemory()
		nsMems.m[name] = m
	}
	return m
}

type noClose struct{ store.KV }

func (noClose) Close() error { return nil }

// nsVariants are the driver sets the namespace bed runs on: every host on
// softnic, every host on XDP, and a mix (the mover migrates from an XDP
// host to a softnic host and back, the stream comes from an XDP host).
var nsVariants = []struct {
	name    string
	drivers map[string]string
}{
	{"softnic", nil},
	{"xdp", allXDP},
	{"mixed", map[string]string{"host-a": "xdp", "host-c": "xdp"}},
}

var allXDP = map[string]string{"host-a": "xdp", "host-b": "xdp", "host-c": "xdp"}

// TestNamespaceMigration: the multi-host test on namespaces (root only),
// on every driver set, each over a store of its own.
func TestNamespaceMigration(t *testing.T) {
	if ok, why := CanRunNS(); !ok {
		t.Skip(why)
	}
	for _, v := range nsVariants {
		t.Run(v.name, func(t *testing.T) {
			mem := nsMemory(t.Name())
			RunNSMigration(t, NSTest{Spec: "nsbed-mem://" + t.Name(), Store: store.NewKV(noClose{mem}, ""),
				Outage: func(down bool) { mem.SetAvailable(!down) }, Drivers: v.drivers})
		})
	}
}

// BenchmarkNSMigration is BenchmarkMigration on namespaces, over the
// in-process store (root only; the etcd module runs it over etcd).
func BenchmarkNSMigration(b *testing.B) {
	mem := nsMemory(b.Name())
	RunNSMigrationBenchmark(b, NSTest{Spec: "nsbed-mem://" + b.Name(), Store: store.NewKV(noClose{mem}, "")})
}

// BenchmarkNSMigrationXDP is BenchmarkNSMigration with every host on the
// XDP driver.
func BenchmarkNSMigrationXDP(b *testing.B) {
	mem := nsMemory(b.Name())
	RunNSMigrationBenchmark(b, NSTest{Spec: "nsbed-mem://" + b.Name(), Store: store.NewKV(noClose{mem}, ""), Drivers: allXDP})
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

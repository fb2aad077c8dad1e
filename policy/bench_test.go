package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// benchMappings is the number of mappings the big benchmarks load:
// NICPATH_BENCH_MAPPINGS, default 1M so that -benchtime=1x stays a few
// seconds. DASH's per-card scale is 8M: NICPATH_BENCH_MAPPINGS=8000000.
func benchMappings(b *testing.B) int {
	if v := os.Getenv("NICPATH_BENCH_MAPPINGS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("NICPATH_BENCH_MAPPINGS=%q is not a positive count", v)
		}
		return n
	}
	return 1 << 20
}

// mappingsPerTenant keeps each tenant's CAs inside 10.0.0.0/8, and every
// tenant uses that same range, as overlapping tenants do.
const mappingsPerTenant = 1 << 20

// bigBuilder returns a Builder with n single-CA VMs spread over 64 hosts
// and n/1M tenants of one VNET each.
func bigBuilder(n int) *Builder {
	b := NewBuilder()
	const hosts = 64
	for h := range hosts {
		b.AddHost(Host{Name: "h" + strconv.Itoa(h), PA: netip.AddrFrom4([4]byte{198, 18, 1, byte(h + 1)})})
	}
	hostNames := make([]string, hosts)
	for h := range hostNames {
		hostNames[h] = "h" + strconv.Itoa(h)
	}
	b.vms = make([]VM, 0, n)
	for t := 0; t*mappingsPerTenant < n; t++ {
		tn := "t" + strconv.Itoa(t)
		b.AddTenant(Tenant{Name: tn})
		b.AddVNET(VNET{Tenant: tn, Name: "v", VNI: uint32(100 + t), Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
		for i := 0; i < mappingsPerTenant && t*mappingsPerTenant+i < n; i++ {
			ca := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
			b.AddVM(VM{Name: tn + "-" + strconv.Itoa(i), Tenant: tn, VNET: "v", Host: hostNames[i%hosts],
				MAC: MAC{2, byte(t), 0, byte(i >> 16), byte(i >> 8), byte(i)}, CAs: []netip.Addr{ca}})
		}
	}
	return b
}

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	// CA→PA tables in huge-page mappings (hugemem.go) are memory the
	// policy holds as much as its heap.
	return m.HeapAlloc + uint64(hugeInUse.Load())
}

// BenchmarkLoadMappings builds a State with benchMappings mappings through
// the Go API (all checks included) and reports mappings per second (wall
// and CPU time) and the memory of the result, all measured from
// runtime.MemStats.HeapAlloc after a GC: what Build adds, everything live
// afterwards, and the compiled CA→PA table alone.
func BenchmarkLoadMappings(b *testing.B) {
	n := benchMappings(b)
	bld := bigBuilder(n)
	b.ReportAllocs()
	b.ResetTimer()
	var s *State
	var stateBytes, liveBytes uint64
	var cpu time.Duration
	for range b.N {
		s = nil
		before := heapAlloc()
		b.StartTimer()
		c0 := cpuTime()
		var err error
		s, err = bld.Build()
		cpu += cpuTime() - c0
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		liveBytes = heapAlloc()
		stateBytes = liveBytes - before
	}
	if s.MappingCount() != n {
		b.Fatalf("%d mappings, want %d", s.MappingCount(), n)
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "mappings/s")
	if cpu > 0 {
		// CPU time includes the garbage collector's background work.
		b.ReportMetric(float64(n)*float64(b.N)/cpu.Seconds(), "mappings/cpu_s")
	}
	// What Build adds: the VM records themselves are shared with the
	// Builder, so they are not in it...
	b.ReportMetric(float64(stateBytes)/float64(n), "state_bytes/mapping")
	// ... but they are in everything live after the load (Builder and
	// State together, the whole cost of holding the policy).
	b.ReportMetric(float64(liveBytes)/float64(n), "live_bytes/mapping")
	b.ReportMetric(float64(n), "mappings")

	// The table alone, compiled from the same entries.
	var entries []mapEntry
	for _, e := range s.table.entries {
		if e.used {
			entries = append(entries, e)
		}
	}
	before := heapAlloc()
	t := newMappingTable(len(entries))
	for _, e := range entries {
		t.insert(e)
	}
	tableBytes := heapAlloc() - before
	runtime.KeepAlive(entries)
	runtime.KeepAlive(t)
	runtime.KeepAlive(s)
	b.ReportMetric(float64(tableBytes)/float64(n), "table_bytes/mapping")
}

// BenchmarkCompileTable measures compiling the CA→PA table alone.
func BenchmarkCompileTable(b *testing.B) {
	n := benchMappings(b)
	entries := make([]mapEntry, n)
	for i := range entries {
		entries[i] = makeEntry(uint32(100+i/mappingsPerTenant), netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), i%64, i, MAC{2, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		t := newMappingTable(n)
		for _, e := range entries {
			t.insert(e)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "mappings/s")
}

// BenchmarkLookup measures CA→PA lookups of existing mappings in a state
// with benchMappings mappings, in random order (so caches do not flatter
// it): the raw table and State.Lookup (which also resolves names and the
// VM's current location).
func BenchmarkLookup(b *testing.B) {
	n := benchMappings(b)
	s, err := bigBuilder(n).Build()
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	keys := make([]MappingKey, 1<<16)
	vms := s.VMs()
	for i := range keys {
		vm := &vms[r.IntN(len(vms))]
		vn, _ := s.VNET(vm.Tenant, vm.VNET)
		keys[i] = MappingKey{vn.VNI, vm.CAs[0]}
	}
	b.Run(fmt.Sprintf("table/%d", n), func(b *testing.B) {
		b.ReportAllocs()
		c0 := cpuTime()
		for i := range b.N {
			k := keys[i&(len(keys)-1)]
			if _, ok := s.table.lookup(k.VNI, k.CA); !ok {
				b.Fatal("miss")
			}
		}
		reportCPU(b, cpuTime()-c0)
	})
	// The same keys in a Go map to the entry index: a baseline measured on
	// the same machine in the same run, so the figure above can be judged
	// even where the machine is slow or shared.
	b.Run(fmt.Sprintf("gomap-baseline/%d", n), func(b *testing.B) {
		type key struct {
			vni uint32
			ca  [16]byte
		}
		m := make(map[key]uint32, n)
		for i, e := range s.table.entries {
			if e.used {
				m[key{e.vni, e.ca}] = uint32(i)
			}
		}
		raw := make([]key, len(keys))
		for i, k := range keys {
			raw[i] = key{k.VNI, k.CA.As16()}
		}
		b.ReportAllocs()
		b.ResetTimer()
		c0 := cpuTime()
		for i := range b.N {
			if _, ok := m[raw[i&(len(raw)-1)]]; !ok {
				b.Fatal("miss")
			}
		}
		reportCPU(b, cpuTime()-c0)
	})
	b.Run(fmt.Sprintf("state/%d", n), func(b *testing.B) {
		b.ReportAllocs()
		c0 := cpuTime()
		for i := range b.N {
			k := keys[i&(len(keys)-1)]
			if _, ok := s.Lookup(k.VNI, k.CA); !ok {
				b.Fatal("miss")
			}
		}
		reportCPU(b, cpuTime()-c0)
	})
}

// reportCPU adds CPU nanoseconds per operation next to the wall-clock ns/op.
func reportCPU(b *testing.B, cpu time.Duration) {
	if cpu > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu_ns/op")
	}
}

// BenchmarkEvaluate measures the reference evaluator (it is written for
// clarity; this is to know its cost when used as an oracle, not a target).
func BenchmarkEvaluate(b *testing.B) {
	s := mustLoadExample(b)
	vm, _ := s.VM("blue-web-1")
	p := Packet{SrcMAC: vm.MAC, EtherType: EtherTypeIPv4, Src: vm.CAs[0], Dst: netip.MustParseAddr("10.0.1.10"),
		Protocol: ProtoTCP, SrcPort: 40000, DstPort: 5432, TTL: 64}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if v := s.Evaluate("host-a", FromVM("blue-web-1"), p); v.Action != Encap {
			b.Fatal(v)
		}
	}
}

// TestLookupDoesNotAllocate guards the zero-allocation lookup the vswitch
// may use on its slow path.
func TestLookupDoesNotAllocate(t *testing.T) {
	s := mustLoadExample(t)
	ca := netip.MustParseAddr("10.0.0.10")
	if n := testing.AllocsPerRun(1000, func() {
		if _, ok := s.Lookup(1001, ca); !ok {
			t.Fatal("miss")
		}
	}); n != 0 {
		t.Errorf("Lookup allocates %v times", n)
	}
}

package policy_test

import (
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/policy/policytest"
)

// writeLarge writes a policytest.WriteLarge document of n mappings to a
// file in dir.
func writeLarge(tb testing.TB, dir string, n, change int) string {
	tb.Helper()
	path := filepath.Join(dir, "large.yaml")
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	if err := policytest.WriteLarge(f, n, change); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return path
}

// heapPeak samples the bytes of heap objects (live and not yet swept: the
// heap as the process holds it, garbage included) every interval through
// runtime/metrics, which reads without stopping the world, and keeps the
// largest value seen. Sampling can miss a peak shorter than the interval;
// the value when it stops is included too.
type heapPeak struct {
	stopc chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	peak  uint64
}

const heapObjects = "/memory/classes/heap/objects:bytes"

func readHeapObjects() uint64 {
	s := []metrics.Sample{{Name: heapObjects}}
	metrics.Read(s)
	// CA→PA tables in huge-page mappings count as the heap would.
	return s[0].Value.Uint64() + policy.HugeInUse()
}

func startHeapPeak(interval time.Duration) *heapPeak {
	p := &heapPeak{stopc: make(chan struct{}), peak: readHeapObjects()}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		s := []metrics.Sample{{Name: heapObjects}}
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-p.stopc:
				return
			case <-t.C:
			}
			metrics.Read(s)
			p.mu.Lock()
			p.peak = max(p.peak, s[0].Value.Uint64()+policy.HugeInUse())
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *heapPeak) stop() uint64 {
	close(p.stopc)
	p.wg.Wait()
	return max(p.peak, readHeapObjects())
}

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc + policy.HugeInUse()
}

// BenchmarkLoadFile1M loads a policy file with 1M mappings (2^20; NICPATH_
// BENCH_MAPPINGS overrides the count, which the metric "mappings" gives)
// written by policytest.WriteLarge to a temporary directory, through
// LoadFile, all checks included, and reports:
//
//   - s/load: wall time of one LoadFile, and cpu_s/load its CPU time (on
//     a shared machine the wall time measures the neighbours too);
//   - peak_bytes/mapping: the largest heap during the load, less the heap
//     before it, per mapping. The heap is runtime/metrics'
//     /memory/classes/heap/objects:bytes (live objects and garbage not
//     yet collected: what the process holds for its objects), sampled
//     every millisecond; not TotalAlloc, which counts everything ever
//     allocated;
//   - live_bytes/mapping: the heap after the load and a GC, less the heap
//     before it (the State alone), per mapping.
func BenchmarkLoadFile1M(b *testing.B) {
	n := policy.BenchMappings(b)
	path := writeLarge(b, b.TempDir(), n, 0)
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	var peak, live uint64
	var cpu time.Duration
	var s *policy.State
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		s = nil
		before := liveHeap()
		b.StartTimer()
		p := startHeapPeak(time.Millisecond)
		c0 := policy.CPUTime()
		var err error
		s, err = policy.LoadFile(path)
		cpu += policy.CPUTime() - c0
		top := p.stop()
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		peak = max(peak, top-min(top, before))
		live = liveHeap() - before
	}
	if s.MappingCount() != n {
		b.Fatalf("%d mappings, want %d", s.MappingCount(), n)
	}
	runtime.KeepAlive(s)
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/load")
	// CPU time includes the garbage collector's background work (and the
	// sampler's, a read every millisecond).
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu_s/load")
	b.ReportMetric(float64(peak)/float64(n), "peak_bytes/mapping")
	b.ReportMetric(float64(live)/float64(n), "live_bytes/mapping")
	b.ReportMetric(float64(fi.Size())/float64(n), "file_bytes/mapping")
	b.ReportMetric(float64(n), "mappings")
}

package policy

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"testing"
	"time"
)

// writeBigPolicy writes a policy document with n single-CA VMs (so n
// mappings) in the shape of bigBuilder: 64 hosts, one tenant with one VNET
// 10.0.0.0/8 per 1M mappings, every tenant using the same addresses. The
// VMs are written as an operator's tool would, one field a line.
func writeBigPolicy(tb testing.TB, path string, n int) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	const hosts = 64
	w.WriteString("hosts:\n")
	for h := range hosts {
		fmt.Fprintf(w, "  - name: h%d\n    pa: 198.18.1.%d\n", h, h+1)
	}
	w.WriteString("tenants:\n")
	var buf []byte
	for t := 0; t*mappingsPerTenant < n; t++ {
		fmt.Fprintf(w, "  - name: t%d\n    vnets:\n      - name: v\n        vni: %d\n        subnets: [10.0.0.0/8]\n        vms:\n", t, 100+t)
		for i := 0; i < mappingsPerTenant && t*mappingsPerTenant+i < n; i++ {
			buf = append(buf[:0], "          - name: t"...)
			buf = strconv.AppendInt(buf, int64(t), 10)
			buf = append(buf, '-')
			buf = strconv.AppendInt(buf, int64(i), 10)
			buf = append(buf, "\n            mac: "...)
			buf = append(buf, MAC{2, byte(t), 0, byte(i >> 16), byte(i >> 8), byte(i)}.String()...)
			buf = append(buf, "\n            ca: 10."...)
			buf = strconv.AppendInt(buf, int64(byte(i>>16)), 10)
			buf = append(buf, '.')
			buf = strconv.AppendInt(buf, int64(byte(i>>8)), 10)
			buf = append(buf, '.')
			buf = strconv.AppendInt(buf, int64(byte(i)), 10)
			buf = append(buf, "\n            host: h"...)
			buf = strconv.AppendInt(buf, int64(i%hosts), 10)
			buf = append(buf, '\n')
			w.Write(buf)
		}
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
}

// heapPeak samples the bytes of heap objects (live and not yet swept: the
// heap as the process holds it, garbage included) every interval through
// runtime/metrics, which reads without stopping the world, and keeps the
// largest value seen. Sampling can miss a peak shorter than the interval;
// the end value (read by stop) is included too.
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
	return s[0].Value.Uint64()
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
			p.peak = max(p.peak, s[0].Value.Uint64())
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

// BenchmarkLoadFile1M loads a generated policy file with 1M mappings
// (NICPATH_BENCH_MAPPINGS overrides the count; the metric "mappings" says
// which was used) through LoadFile, all checks included, and reports:
//
//   - s/load: wall time of one LoadFile, and cpu_s/load its CPU time (on
//     a shared machine the wall time measures the neighbours too);
//   - peak_bytes/mapping: the largest heap (runtime/metrics
//     /memory/classes/heap/objects:bytes, sampled every millisecond: live
//     objects and garbage not yet collected, what the process holds from
//     the OS) during the load, less the heap before it, per mapping;
//   - live_bytes/mapping: the heap after the load and a GC, less the heap
//     before it (the State alone), per mapping.
//
// The file is written to a temporary directory once, outside the timing.
func BenchmarkLoadFile1M(b *testing.B) {
	n := benchMappings(b)
	path := filepath.Join(b.TempDir(), "big.yaml")
	writeBigPolicy(b, path, n)
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	var peak, live uint64
	var cpu time.Duration
	var s *State
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		s = nil
		before := heapAlloc()
		b.StartTimer()
		p := startHeapPeak(time.Millisecond)
		c0 := cpuTime()
		var err error
		s, err = LoadFile(path)
		cpu += cpuTime() - c0
		top := p.stop()
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		peak = max(peak, top-min(top, before))
		live = heapAlloc() - before
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

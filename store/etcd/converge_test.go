package etcd_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/store"
	"github.com/nicpath/nicpath/store/etcd/etcdtest"
	"github.com/nicpath/nicpath/store/storetest"
	"github.com/nicpath/nicpath/vswitch"
)

// convergeMappings is how many mappings BenchmarkConverge stores:
// NICPATH_CONVERGE_MAPPINGS, default 20000 so that -benchtime=1x stays a few
// seconds; the figure for the issue is taken with 1000000.
func convergeMappings(b *testing.B) int {
	n := 20000
	if v := os.Getenv("NICPATH_CONVERGE_MAPPINGS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 3 {
			b.Fatalf("NICPATH_CONVERGE_MAPPINGS=%q", v)
		}
	}
	return n
}

// BenchmarkConverge measures how long a host takes to converge on the
// desired state from etcd: a fresh client reads every key (paged, at one
// revision) and builds the state (load_s; fetch_s is the paged read alone,
// measured separately), and a vswitch on a software NIC
// starts on it (apply_s, vswitch.New with the state, as a vswitchd starts);
// converge_s is the sum. converge_cpu_s is the CPU time the process spent
// meanwhile (client and the embedded server together): on a busy machine it
// says more than the wall clock. One VM per mapping: n keys.
func BenchmarkConverge(b *testing.B) {
	n := convergeMappings(b)
	srv := etcdtest.Start(b, 1024)
	writer := store.NewKV(dial(b, srv), "")
	writer.TxnOps = 1024
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	st := storetest.ThreeHosts(n - 3)
	t0 := time.Now()
	if _, err := writer.Publish(ctx, st); err != nil {
		b.Fatal(err)
	}
	b.Logf("published %d mappings in %v", st.MappingCount(), time.Since(t0))
	var fetch, load, apply, cpu time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		// The paged read alone, to tell etcd's share from decoding and
		// building (not part of converge_s).
		t0 := time.Now()
		kv := dial(b, srv)
		if _, _, err := kv.Get(ctx, store.DefaultPrefix+"state/"); err != nil {
			b.Fatal(err)
		}
		fetch += time.Since(t0)
		kv.Close()
		t1, c1 := time.Now(), cpuTime()
		s := store.NewKV(dial(b, srv), "")
		snap, err := s.Load(ctx)
		if err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		nic, err := softnic.New(softnic.Config{Device: "converge", Ports: []softnic.PortConfig{
			{Name: "mover", Kind: hal.PortVPort}, {Name: "uplink", Kind: hal.PortUplink, MTU: 1600}}})
		if err != nil {
			b.Fatal(err)
		}
		sw, err := vswitch.New(vswitch.Config{NIC: nic, Host: "host-a", State: snap.State, Ports: map[string]hal.PortID{"mover": 1}, Uplink: 2})
		if err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		cpu += cpuTime() - c1
		load += t2.Sub(t1)
		apply += t3.Sub(t2)
		if snap.State.MappingCount() != n {
			b.Fatalf("converged on %d mappings, want %d", snap.State.MappingCount(), n)
		}
		sw.Close()
		nic.Close()
		s.Close()
	}
	b.StopTimer()
	b.ReportMetric(float64(n), "mappings")
	b.ReportMetric(fetch.Seconds()/float64(b.N), "fetch_s")
	b.ReportMetric(load.Seconds()/float64(b.N), "load_s")
	b.ReportMetric(apply.Seconds()/float64(b.N), "apply_s")
	b.ReportMetric((load+apply).Seconds()/float64(b.N), "converge_s")
	b.ReportMetric(cpu.Seconds()/float64(b.N), "converge_cpu_s")
}

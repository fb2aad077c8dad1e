package agent

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nicpath/nicpath/control"
	"github.com/nicpath/nicpath/policy/policytest"
)

// helperEnv, when set to a configuration file, makes this test binary a
// vswitchd running it (BenchmarkDaemon1M measures the daemon's own
// process).
const helperEnv = "NICPATH_HELPER_VSWITCHD"

func TestMain(m *testing.M) {
	if cfg := os.Getenv(helperEnv); cfg != "" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		code := Main(ctx, []string{"-config", cfg}, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// benchMappings is the size of the large policy: NICPATH_BENCH_MAPPINGS,
// default 1M (2^20), as in the policy package's benchmarks.
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

func writeLargePolicy(b *testing.B, path string, n, change int) {
	b.Helper()
	tmp := path + ".new"
	f, err := os.Create(tmp)
	if err != nil {
		b.Fatal(err)
	}
	if err := policytest.WriteLarge(f, n, change); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		b.Fatal(err)
	}
}

// procMemory returns a process's resident memory now and at its peak
// (VmRSS and VmHWM of /proc/PID/status), in bytes.
func procMemory(b *testing.B, pid int) (rss, hwm uint64) {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		v, _ := strconv.ParseUint(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v << 10
		case "VmHWM:":
			hwm = v << 10
		}
	}
	if rss == 0 || hwm == 0 {
		b.Fatalf("no VmRSS or VmHWM in /proc/%d/status", pid)
	}
	return rss, hwm
}

// procCPU returns the CPU time a process has used (utime and stime of
// /proc/PID/stat, in clock ticks of 10ms).
func procCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name, in parentheses, may hold spaces: count from after it.
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	if len(f) < 13 {
		b.Fatalf("/proc/%d/stat: %q", pid, data)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %q", pid, data)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// BenchmarkDaemon1M runs a vswitchd process (this test binary run again as
// the daemon, with the softnic driver unbound) on a policy file of 1M
// mappings (2^20; NICPATH_BENCH_MAPPINGS overrides the count, which the
// metric "mappings" gives) written by policytest.WriteLarge, then reloads
// a changed file (every thousandth VM on another host), and reports:
//
//   - start_s: from starting the process to its first answer on the
//     control socket (it loads the policy first);
//   - reload_s: the reload command, from sending it to the answer (the
//     file read, checked, compared with the running state and applied),
//     and reload_cpu_s the daemon's CPU time meanwhile (on a shared
//     machine the wall time measures the neighbours too; start_cpu_s
//     likewise);
//   - rss_bytes/mapping: the daemon's resident memory (VmRSS) once it
//     answers after starting, per mapping; rss_after_reload_bytes/mapping
//     the same after the reload, and peak_rss_bytes/mapping the most it
//     was resident (VmHWM) over both.
func BenchmarkDaemon1M(b *testing.B) {
	n := benchMappings(b)
	dir := b.TempDir()
	pol := filepath.Join(dir, "policy.yaml")
	writeLargePolicy(b, pol, n, 0)
	sock := filepath.Join(dir, "ctl.sock")
	cfgPath := filepath.Join(dir, "vswitchd.yaml")
	cfg := "host: h0\ndriver: softnic\nbinding: none\npolicy: policy.yaml\nuplink: up0\ncontrol: " + sock +
		"\nlog_level: warn\nwatch_interval: 1h\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	var start, reload, startCPU, reloadCPU time.Duration
	var rss, rssReload, hwm uint64
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		writeLargePolicy(b, pol, n, 0)
		var logs bytes.Buffer
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+cfgPath)
		cmd.Stdout, cmd.Stderr = &logs, &logs
		b.StartTimer()
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		c := &control.Client{Path: sock, Timeout: 5 * time.Minute}
		for deadline := t0.Add(5 * time.Minute); ; time.Sleep(10 * time.Millisecond) {
			if c.Call(context.Background(), "show", nil, nil) == nil {
				break
			}
			if time.Now().After(deadline) || cmd.ProcessState != nil {
				cmd.Process.Kill()
				cmd.Wait()
				b.Fatalf("the daemon never answered:\n%s", logs.String())
			}
		}
		start += time.Since(t0)
		b.StopTimer()
		cpu0 := procCPU(b, cmd.Process.Pid)
		startCPU += cpu0
		rss, _ = procMemory(b, cmd.Process.Pid)
		writeLargePolicy(b, pol, n, 1+i)
		b.StartTimer()
		t1 := time.Now()
		var rl control.Reloaded
		err := c.Call(context.Background(), "reload", nil, &rl)
		reload += time.Since(t1)
		b.StopTimer()
		reloadCPU += procCPU(b, cmd.Process.Pid) - cpu0
		if err != nil || !rl.Changed {
			b.Fatalf("reload: %+v %v\n%s", rl, err, logs.String())
		}
		rssReload, hwm = procMemory(b, cmd.Process.Pid)
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			b.Fatalf("the daemon: %v\n%s", err, logs.String())
		}
	}
	b.ReportMetric(start.Seconds()/float64(b.N), "start_s")
	b.ReportMetric(reload.Seconds()/float64(b.N), "reload_s")
	b.ReportMetric(startCPU.Seconds()/float64(b.N), "start_cpu_s")
	b.ReportMetric(reloadCPU.Seconds()/float64(b.N), "reload_cpu_s")
	b.ReportMetric(float64(rss)/float64(n), "rss_bytes/mapping")
	b.ReportMetric(float64(rssReload)/float64(n), "rss_after_reload_bytes/mapping")
	b.ReportMetric(float64(hwm)/float64(n), "peak_rss_bytes/mapping")
	b.ReportMetric(float64(n), "mappings")
}

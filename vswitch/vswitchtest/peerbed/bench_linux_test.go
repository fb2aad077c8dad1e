//go:build linux

package peerbed

import (
	"context"
	"testing"
	"time"
)

// benchChunk is what one turn of a benchmark's stream sends.
const benchChunk = 8 << 20

// openStream builds a bed of cfg and opens one TCP stream from vm-a to
// vm-b on it, warmed with one chunk (its first packets take the slow path,
// and TCP's window opens).
func openStream(b *testing.B, cfg Config) (*Bed, *TCPStream) {
	b.Helper()
	bed := newBed(b, cfg)
	vms := bed.VMs()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := OpenTCP(ctx, vms[0], vms[1])
	if err == nil {
		_, err = st.Send(ctx, benchChunk)
	}
	if err != nil {
		b.Fatalf("%s ↔ %s: %v\nwhat the hosts counted:\n%s", cfg.A, cfg.B, err, bed.Report(ctx))
	}
	b.Cleanup(st.abort)
	return bed, st
}

// sendChunk sends one chunk on st and adds it to total.
func sendChunk(b *testing.B, bed *Bed, st *TCPStream, total *TCPResult) {
	b.Helper()
	// The bound: 50 Mbit/s, the slowest the figures mean to report.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second+time.Duration(benchChunk*8/50e6*float64(time.Second)))
	defer cancel()
	r, err := st.Send(ctx, benchChunk)
	if err != nil {
		b.Fatalf("%v\nwhat the hosts counted:\n%s", err, bed.Report(ctx))
	}
	total.Bytes += r.Bytes
	total.Elapsed += r.Elapsed
}

// noCsumErrors fails b if a VM of bed counted a checksum error.
func noCsumErrors(b *testing.B, bed *Bed) {
	b.Helper()
	for _, vm := range bed.VMs() {
		c, err := SNMP(vm)
		if err != nil {
			b.Fatal(err)
		}
		for _, k := range CsumErrors {
			if c[k] != 0 {
				b.Fatalf("%s's kernel counted %d %s", vm.Name, c[k], k)
			}
		}
	}
}

// BenchmarkTCPStreamTwoNicpathHosts is veth.tcp_bulk_gbps.<driver> and
// veth.tcp_vs_kernel_vxlan.<driver>: one TCP stream from a VM on one host
// to a VM on another, both hosts running nicpath on the same driver, every
// interface with the kernel's default offloads (the VMs' kernels checksum
// and segment as they do by default: TSO, GSO, partial checksums); and in
// the same run one stream between two plain Linux hosts (the kernel's VXLAN
// device and a bridge on each) on the same topology. Both beds stand side
// by side and the two streams take turns, 8 MiB at a time (b.N turns each),
// so that both see the same machine. It reports both in Gbit/s (gbps,
// kernel_gbps) and nicpath's over the kernel's (vs_kernel_vxlan); the
// benchmark's own time is nicpath's turns only.
func BenchmarkTCPStreamTwoNicpathHosts(b *testing.B) {
	for _, drv := range []string{"softnic", "xdp"} {
		b.Run(drv, func(b *testing.B) {
			b.StopTimer()
			nicBed, nicSt := openStream(b, Config{A: drv, B: drv})
			// The same VMs' settings: the kernel's path gets GRO where the
			// XDP path needs it.
			kernBed, kernSt := openStream(b, Config{A: Linux, B: Linux, NAPI: drv == "xdp"})
			b.SetBytes(benchChunk)
			b.ResetTimer()
			var nic, kern TCPResult
			for range b.N {
				b.StartTimer()
				sendChunk(b, nicBed, nicSt, &nic)
				b.StopTimer()
				sendChunk(b, kernBed, kernSt, &kern)
			}
			noCsumErrors(b, nicBed)
			noCsumErrors(b, kernBed)
			b.ReportMetric(nic.Gbps(), "gbps")
			b.ReportMetric(kern.Gbps(), "kernel_gbps")
			if kern.Gbps() > 0 {
				b.ReportMetric(nic.Gbps()/kern.Gbps(), "vs_kernel_vxlan")
			}
		})
	}
}

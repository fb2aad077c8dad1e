//go:build linux

package xdp

import (
	"context"
	"net/netip"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// progTestRun is union bpf_attr for BPF_PROG_TEST_RUN. cilium/ebpf's Run
// does not report the duration together with flags, and the live-frames
// flag is what makes repeated runs see the original frame each time (the
// kernel resets the frame's pointers between runs), so the benchmark calls
// the syscall itself.
type progTestRun struct {
	ProgFD, Retval, DataSizeIn, DataSizeOut uint32
	DataIn, DataOut                         uint64
	Repeat, Duration                        uint32
	CtxSizeIn, CtxSizeOut                   uint32
	CtxIn, CtxOut                           uint64
	Flags, CPU, BatchSize, _                uint32
}

// liveRun runs the program over frame repeat times in live-frame mode and
// returns the kernel's average duration per run in nanoseconds.
func liveRun(fd int, frame []byte, repeat uint32) (uint32, error) {
	attr := progTestRun{ProgFD: uint32(fd), DataSizeIn: uint32(len(frame)),
		DataIn: uint64(uintptr(unsafe.Pointer(&frame[0]))), Repeat: repeat, Flags: unix.BPF_F_TEST_XDP_LIVE_FRAMES}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if errno != 0 {
		return 0, errno
	}
	return attr.Duration, nil
}

// BenchmarkHitEncap is xdp.hit_encap_ns: a 64-byte inner frame hits an
// exact-match rule among 10k and is VXLAN-encapsulated and redirected, in
// BPF_PROG_TEST_RUN with the kernel's own per-run duration, net of the
// test-run harness measured in the same run. The redirect targets a port
// without a device (the loopback entry), so no driver transmits.
//
// The harness's work per run depends on the verdict: after a program that
// returns XDP_REDIRECT it runs the redirect (xdp_do_redirect_frame, the
// devmap's bulk queue, here a refused enqueue and the frame's return to
// the page pool), which stands where a driver's transmit would, and which
// no program instruction pays for. So the harness is measured with a
// program that only redirects to the same port (redirect_ns/pkt), and the
// one helper call that program makes, which the figure's program makes
// too, is added back: measured as the difference between a program that
// calls bpf_redirect_map 9 times and the one that calls it once, over 8
// (helper_ns/pkt). ns/pkt is thus the program's own instructions and
// helper calls. Beside it: raw_ns/pkt (the whole run), harness_ns/pkt (a
// program that only drops) and with_redirect_ns/pkt, the figure as it was
// measured before (net of the dropping harness only, the redirect's
// handling included).
func BenchmarkHitEncap(b *testing.B) {
	requireRoot(b)
	n, err := Open(context.Background(), Config{Ports: []PortConfig{{Kind: hal.PortVPort}, {Kind: hal.PortUplink}}})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	const rules = 10000
	ops := make([]hal.Op, 0, rules)
	var hit []byte
	for i := 0; i < rules; i++ {
		s := wire.FrameSpec{SrcMAC: macVM1, DstMAC: macVM2, Src: ca1, Dst: ca2, Proto: hal.ProtoUDP,
			SrcPort: uint16(10000 + i), DstPort: 53, Payload: make([]byte, 64-42)}
		f := wire.Build(s)
		var k hal.FlowKey
		var l wire.Layout
		wire.Parse(f, 1, &k, &l)
		ops = append(ops, hal.AddOp(hal.Rule{ID: hal.RuleID(i + 1), Match: hal.Exact(&k),
			Actions: []hal.Action{hal.EncapWith(vxlanTo), hal.Output(2)}}))
		if i == rules/2 {
			hit = f
		}
	}
	res := make([]hal.OpResult, len(ops))
	if err := n.Apply(context.Background(), ops, res); err != nil {
		b.Fatal(err)
	}
	if r, err := n.Run(1, hit); err != nil || r.Verdict != VerdictOutput || len(r.Frame) != len(hit)+50 {
		b.Fatalf("the benchmark frame does not hit and encapsulate: %+v %v", r, err)
	}
	drop, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()}})
	if err != nil {
		b.Fatal(err)
	}
	defer drop.Close()
	// redirector returns a program that calls bpf_redirect_map calls
	// times, to port 2 as the rule does, and returns the last result.
	redirector := func(calls int) *ebpf.Program {
		var ins asm.Instructions
		for i := 0; i < calls; i++ {
			ins = append(ins,
				asm.LoadMapPtr(asm.R1, n.maps["tx_ports"].FD()),
				asm.Mov.Imm(asm.R2, 2),
				asm.Mov.Imm(asm.R3, 1), // XDP_DROP when the port has no entry
				asm.FnRedirectMap.Call())
		}
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "MIT", Instructions: append(ins, asm.Return())})
		if err != nil {
			b.Fatal(err)
		}
		return p
	}
	redir, redir9 := redirector(1), redirector(9)
	defer redir.Close()
	defer redir9.Close()
	progs := []*ebpf.Program{n.ports[1].prog, drop, redir, redir9}
	const repeat = 1 << 20
	var sums [4]uint64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j, p := range progs {
			d, err := liveRun(p.FD(), hit, repeat)
			if err != nil {
				b.Fatal(err)
			}
			sums[j] += uint64(d)
		}
	}
	var avg [4]float64
	for j := range sums {
		avg[j] = float64(sums[j]) / float64(b.N)
	}
	raw, harness, redirect := avg[0], avg[1], avg[2]
	helper := (avg[3] - avg[2]) / 8
	b.ReportMetric(raw-redirect+helper, "ns/pkt")
	b.ReportMetric(raw, "raw_ns/pkt")
	b.ReportMetric(harness, "harness_ns/pkt")
	b.ReportMetric(redirect-harness, "redirect_ns/pkt")
	b.ReportMetric(helper, "helper_ns/pkt")
	b.ReportMetric(raw-harness, "with_redirect_ns/pkt")
}

// BenchmarkRuleOps is xdp.rule_ops_per_s: adds of exact-match rules through
// Apply into an empty table (exact IPv4 rules: written into table4 through
// its mmap, without a system call per rule). map_ops/s and map_cpu_ns/op
// are the same entries written by the backend alone into a fresh NIC.
func BenchmarkRuleOps(b *testing.B) {
	requireRoot(b)
	const batch = 1 << 17
	ops := make([]hal.Op, batch)
	for i := range ops {
		k := hal.FlowKey{InPort: 1, EthType: hal.EtherTypeIPv4, Proto: hal.ProtoTCP, L4Src: uint16(i), L4Dst: uint16(i >> 16),
			IPSrc: hal.Addr16(ca1), IPDst: hal.Addr16(netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}))}
		ops[i] = hal.AddOp(hal.Rule{ID: hal.RuleID(i + 1), Match: hal.Exact(&k),
			Actions: []hal.Action{hal.EncapWith(vxlanTo), hal.Output(2)}})
	}
	res := make([]hal.OpResult, batch)
	var timed, mapTimed, cpu, mapCPU float64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		n, err := Open(context.Background(), Config{MaxRules: batch, Ports: []PortConfig{{}, {}}})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start, cstart := nowNS(), cpuNS()
		err = n.Apply(context.Background(), ops, res)
		timed += float64(nowNS() - start)
		cpu += float64(cpuNS() - cstart)
		b.StopTimer()
		if err != nil {
			n.Close()
			b.Fatal(err)
		}
		// The same entries written by Map.BatchUpdate alone, into a
		// fresh NIC's map: the kernel's share of the figure.
		keys := make([]bpfKey, 0, batch)
		vals := make([]bpfFlowVal, 0, batch)
		for k, e := range n.tab.entries.all() {
			for _, s := range e.slots {
				if s != nil {
					k = s.mapKey() // flows4's entries where Apply put them
					break
				}
			}
			keys, vals = append(keys, k), append(vals, n.tab.value(e, nil, nil))
		}
		n.Close()
		n2, err := Open(context.Background(), Config{MaxRules: batch, Ports: []PortConfig{{}, {}}})
		if err != nil {
			b.Fatal(err)
		}
		start, cstart = nowNS(), cpuNS()
		_, err = n2.tab.be.putEntries(keys, vals)
		mapTimed += float64(nowNS() - start)
		mapCPU += float64(cpuNS() - cstart)
		n2.Close()
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(batch*b.N)/(timed/1e9), "ops/s")
	b.ReportMetric(float64(batch*b.N)/(mapTimed/1e9), "map_ops/s")
	// CPU time (user and system, every thread of the process: the
	// kernel's share and the garbage collector's count) per operation:
	// on a shared machine the wall-clock rates above mostly measure the
	// wait for a CPU, this does not.
	b.ReportMetric(cpu/float64(batch*b.N), "cpu_ns/op")
	b.ReportMetric(mapCPU/float64(batch*b.N), "map_cpu_ns/op")
}

// cpuNS is the CPU time the process has used, user and system.
func cpuNS() int64 {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func nowNS() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// BenchmarkActivate is shadow.activate_1m_us.xdp: switching the live
// generation of a scope whose rules fill the flow table, half of them in
// the generation being switched on: 10k, 100k and 1M entries, each holding
// a live rule and its shadow. Activate is one array write, so the figure
// must not grow with the rule count. Every table is installed through
// Apply, as the vswitch installs it (for 1M that takes a while and about a
// gigabyte: the driver's bookkeeping of two million rules); a frame checks
// that the switch takes.
func BenchmarkActivate(b *testing.B) {
	requireRoot(b)
	for _, size := range []struct {
		name    string
		entries int
	}{{"10k", 10_000}, {"100k", 100_000}, {"1M", 1_000_000}} {
		b.Run(size.name, func(b *testing.B) {
			n, err := Open(context.Background(), Config{MaxRules: size.entries, Ports: []PortConfig{{}, {}}})
			if err != nil {
				b.Fatal(err)
			}
			defer n.Close()
			ctx := context.Background()
			rule := func(i int, gen hal.Generation) hal.Rule {
				k := hal.FlowKey{InPort: 1, EthType: hal.EtherTypeIPv4, Proto: hal.ProtoUDP, L4Src: 7, L4Dst: 7,
					IPSrc: hal.Addr16(ca1), IPDst: hal.Addr16(netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)})),
					EthSrc: hal.MAC{2, 0, 0, 0, 0, byte(i >> 16)}}
				return hal.Rule{ID: hal.RuleID(2*i + 1 + int(gen)), Match: hal.Exact(&k), Scope: 1, Generation: gen,
					Actions: []hal.Action{hal.Output(hal.PortID(1 + gen))}}
			}
			const chunk = 1 << 16
			ops := make([]hal.Op, 0, chunk)
			res := make([]hal.OpResult, chunk)
			for i := 0; i < size.entries; i++ {
				ops = append(ops, hal.AddOp(rule(i, 0)), hal.AddOp(rule(i, 1)))
				if len(ops) >= chunk || i == size.entries-1 {
					if err := n.Apply(ctx, ops, res); err != nil {
						b.Fatal(err)
					}
					ops = ops[:0]
				}
			}
			if c, _ := n.maps["flows"].Info(); c == nil {
				b.Fatal("no flow map")
			}
			probe := wire.Build(wire.FrameSpec{Src: ca1, Dst: netip.AddrFrom4([4]byte{198, 19, 0, 9}), Proto: hal.ProtoUDP,
				SrcPort: 7, DstPort: 7, SrcMAC: hal.MAC{2, 0, 0, 0, 0, 0}})
			// Each iteration switches back and forth perIter times,
			// so that even -benchtime=1x averages over scheduling noise.
			const perIter = 1000
			b.ResetTimer()
			start := nowNS()
			for i := 0; i < b.N*perIter; i++ {
				if err := n.Activate(ctx, 1, hal.Generation(1-i&1)); err != nil {
					b.Fatal(err)
				}
			}
			el := nowNS() - start
			b.StopTimer()
			b.ReportMetric(float64(el)/1e3/float64(b.N*perIter), "us/activate")
			gen, _ := n.ActiveGeneration(1)
			if r, err := n.Run(1, probe); err != nil || r.Verdict != VerdictOutput || r.Port != hal.PortID(1+gen) {
				b.Fatalf("after activating generation %d the probe went %+v (%v)", gen, r, err)
			}
		})
	}
}

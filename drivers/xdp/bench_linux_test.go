//go:build linux

package xdp

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// progTestRun is union bpf_attr for BPF_PROG_TEST_RUN: cilium/ebpf's Run
// hides the per-run duration the kernel measures, which the benchmark
// reports.
type progTestRun struct {
	ProgFD, Retval, DataSizeIn, DataSizeOut uint32
	DataIn, DataOut                         uint64
	Repeat, Duration                        uint32
	CtxSizeIn, CtxSizeOut                   uint32
	CtxIn, CtxOut                           uint64
	Flags, CPU, BatchSize, _                uint32
}

// testRun runs the program over frame repeat times, back to back on one
// CPU, in the kernel's plain test-run loop, and returns the kernel's
// average duration per run in nanoseconds and the last verdict. Not live
// frames (BPF_F_TEST_XDP_LIVE_FRAMES, Linux 5.18 and later): a kernel may
// refuse that mode whatever the program: a 6.18 kernel under lockdown
// (integrity) did, with EPERM even for a bare return XDP_DROP; the plain
// loop runs on every kernel that can test-run XDP.
func testRun(fd int, frame []byte, repeat uint32) (ns, verdict uint32, err error) {
	attr := progTestRun{ProgFD: uint32(fd), DataSizeIn: uint32(len(frame)),
		DataIn: uint64(uintptr(unsafe.Pointer(&frame[0]))), Repeat: repeat}
	// The kernel ends a test run early with EINTR when a signal is pending
	// for the thread, and Go's runtime signals its threads (to preempt, to
	// profile); a long run (1M repetitions) rarely finished under load. So
	// the thread blocks signals for the call: one arriving meanwhile stays
	// pending and is handled when the mask is restored.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var all, old unix.Sigset_t
	for i := range all.Val {
		all.Val[i] = ^uint64(0)
	}
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &all, &old); err != nil {
		return 0, 0, err
	}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if err := unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil); err != nil {
		return 0, 0, err
	}
	if errno != 0 {
		return 0, 0, errno
	}
	return attr.Duration, attr.Retval, nil
}

// hitEncapRules is the rule count of BenchmarkHitEncap: the table a
// busy host offloads (DESIGN.md's softnic figure uses the same 1M).
const hitEncapRules = 1 << 20

// hitEncapHosts is how many remote hosts the flows go to: each host is
// one encapsulation template (one interned program in progs4).
const hitEncapHosts = 1024

// BenchmarkHitEncap is xdp.hit_encap_ns: 64-byte inner UDP frames from a
// VM hit exact-match rules among 1M (each a distinct connection,
// encapsulating in VXLAN toward one of 1024 hosts and output to the
// uplink) and are encapsulated and redirected, in BPF_PROG_TEST_RUN with
// the kernel's own per-run duration. The frames visit the flows in a
// fixed pseudo-random order: hotset cycles over 4096 flows (a working set
// that stays in the CPU's caches), uniform over 1M draws from all the
// rules (every packet a random flow: the rule's slot and the frame's
// table lines are a cache miss).
//
// The kernel's test run repeats the program on one buffer, so a small
// harness program runs first on each repetition: it undoes the previous
// run's encapsulation (bpf_xdp_adjust_head back to the 64-byte frame),
// writes the next flow's addresses, ports and checksums into the frame
// (from an array map), and tail-calls the program measured. The same
// harness tail-calling a program that only returns XDP_DROP is timed in
// the same run, alternating with it; ns/pkt is the difference: the
// program's own instructions, map lookups and helper calls
// (bpf_redirect_map included), none of the test run's loop, the
// harness's work or the tail call. In this (non-live) mode the kernel does
// nothing with a redirect verdict, so no redirect handling is in either.
// raw_ns/pkt and harness_ns/pkt are the two timings. The port counters
// check afterwards that every run left through the uplink.
func BenchmarkHitEncap(b *testing.B) {
	requireRoot(b)
	n, err := Open(context.Background(), Config{MaxRules: hitEncapRules,
		Ports: []PortConfig{{Kind: hal.PortVPort}, {Kind: hal.PortUplink}}})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	frames := installHitEncapRules(b, n)
	hb, err := newHitHarness(n)
	if err != nil {
		b.Fatal(err)
	}
	defer hb.close()
	rng := rand.New(rand.NewPCG(1, 2))
	hot := make([][]byte, 4096)
	for i := range hot {
		hot[i] = frames(rng.IntN(hitEncapRules))
	}
	uniform := make([][]byte, 1<<20)
	for i := range uniform {
		uniform[i] = frames(rng.IntN(hitEncapRules))
	}
	for _, c := range []struct {
		name  string
		flows [][]byte
	}{{"cached", hot[:1]}, {"hotset", hot}, {"uniform", uniform}} {
		b.Run(c.name, func(b *testing.B) {
			if err := hb.load(c.flows); err != nil {
				b.Fatal(err)
			}
			// Each iteration runs every flow of the sequence once through
			// each of the two, at least 64k runs.
			repeat := uint32(max(len(c.flows), 1<<16))
			var raw, harness float64
			interrupted := 0
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for j, p := range []*ebpf.Program{n.ports[1].prog, hb.drop} {
					if err := hb.target(p); err != nil {
						b.Fatal(err)
					}
					d, err := hb.run(n, c.flows[0], repeat, j == 0, &interrupted)
					if err != nil {
						b.Fatal(err)
					}
					if j == 0 {
						raw += float64(d)
					} else {
						harness += float64(d)
					}
				}
			}
			b.StopTimer()
			raw /= float64(b.N)
			harness /= float64(b.N)
			b.ReportMetric(raw-harness, "ns/pkt")
			b.ReportMetric(raw, "raw_ns/pkt")
			b.ReportMetric(harness, "harness_ns/pkt")
			b.ReportMetric(float64(interrupted), "interrupted_runs")
		})
	}
}

// run times one BPF_PROG_TEST_RUN of the harness (repeat runs over
// frame) and returns the kernel's mean duration per run. A signal arriving
// at the test-run loop ends it early with EINTR and no duration; testRun
// blocks signals for the call, so this should not happen, but a run that
// is interrupted all the same is counted in *interrupted and made again, up
// to 100 times. When hit is set the program
// tail-called is the datapath: the verdict must be XDP_REDIRECT and the
// uplink's counters must have grown by exactly repeat frames of 64+50
// bytes over that run (every repetition hit and encapsulated); otherwise
// the verdict must be XDP_DROP.
func (hb *hitHarness) run(n *NIC, frame []byte, repeat uint32, hit bool, interrupted *int) (uint32, error) {
	want := uint32(xdpDrop)
	if hit {
		want = xdpRedirect
	}
	for attempt := 0; ; attempt++ {
		var before hal.PortCounters
		if hit {
			var err error
			if before, err = n.PortCounters(context.Background(), 2); err != nil {
				return 0, err
			}
		}
		d, verdict, err := testRun(hb.prog.FD(), frame, repeat)
		if errors.Is(err, unix.EINTR) && attempt < 100 {
			*interrupted++
			continue
		}
		if err != nil {
			return 0, err
		}
		if verdict != want {
			return 0, fmt.Errorf("verdict %d, want %d", verdict, want)
		}
		if hit {
			after, err := n.PortCounters(context.Background(), 2)
			if err != nil {
				return 0, err
			}
			if got := after.Tx.Packets - before.Tx.Packets; got != uint64(repeat) {
				return 0, fmt.Errorf("the uplink sent %d frames in %d runs: not every run hit and encapsulated", got, repeat)
			}
			if got, want := after.Tx.Bytes-before.Tx.Bytes, uint64(repeat)*(64+50); got != want {
				return 0, fmt.Errorf("the uplink sent %d bytes, want %d", got, want)
			}
		}
		return d, nil
	}
}

const (
	xdpDrop     = 1
	xdpRedirect = 4
)

// installHitEncapRules adds BenchmarkHitEncap's rules through Apply and
// returns the frame of rule i: one connection each (UDP, 256 source
// addresses, 4096 destinations, ports varying), all from port 1.
func installHitEncapRules(b *testing.B, n *NIC) func(i int) []byte {
	frame := func(i int) []byte {
		src := netip.AddrFrom4([4]byte{198, 19, 0, byte(i)})
		dst := netip.AddrFrom4([4]byte{198, 19, 1 + byte(i>>8&0x7f), byte(i >> 15)})
		return wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macVM2, Src: src, Dst: dst, Proto: hal.ProtoUDP,
			SrcPort: uint16(1024 + i%50000), DstPort: uint16(53 + i/50000), Payload: make([]byte, 64-42)})
	}
	const chunk = 1 << 16
	ops := make([]hal.Op, 0, chunk)
	res := make([]hal.OpResult, chunk)
	for i := 0; i < hitEncapRules; i++ {
		var k hal.FlowKey
		var l wire.Layout
		wire.Parse(frame(i), 1, &k, &l)
		host := i % hitEncapHosts
		enc := hal.Encap{Kind: hal.EncapVXLAN, VNI: testVN, Src: pa1, SrcMAC: macPA1, DstMAC: macPA2,
			Dst: netip.AddrFrom4([4]byte{198, 18, 1 + byte(host>>8), byte(host)})}
		ops = append(ops, hal.AddOp(hal.Rule{ID: hal.RuleID(i + 1), Match: hal.Exact(&k),
			Actions: []hal.Action{hal.EncapWith(enc), hal.Output(2)}}))
		if len(ops) == chunk || i == hitEncapRules-1 {
			if err := n.Apply(context.Background(), ops, res[:len(ops)]); err != nil {
				b.Fatal(err)
			}
			ops = ops[:0]
		}
	}
	return frame
}

// hitHarness is BenchmarkHitEncap's harness program and its maps: flows
// holds, per position of the sequence, bytes 24..48 of the frame (IPv4
// checksum, addresses, ports, UDP length and checksum, the payload's
// first bytes), pos the next position, and tail the program called.
type hitHarness struct {
	prog, drop       *ebpf.Program
	flows, pos, tail *ebpf.Map
}

const hitFieldsOff, hitFieldsLen = 24, 24

func newHitHarness(n *NIC) (*hitHarness, error) {
	h := &hitHarness{}
	var err error
	defer func() {
		if err != nil {
			h.close()
		}
	}()
	if h.flows, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: hitFieldsLen, MaxEntries: 1 << 20}); err != nil {
		return nil, err
	}
	if h.pos, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1}); err != nil {
		return nil, err
	}
	if h.tail, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 1}); err != nil {
		return nil, err
	}
	if h.drop, err = ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "MIT",
		AttachType: ebpf.AttachXDP, Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpDrop), asm.Return()}}); err != nil {
		return nil, err
	}
	return h, nil
}

// load writes the flow sequence (a power of two long) and builds the
// harness program for it.
func (h *hitHarness) load(frames [][]byte) error {
	if len(frames)&(len(frames)-1) != 0 {
		return fmt.Errorf("%d flows: not a power of two", len(frames))
	}
	keys := make([]uint32, len(frames))
	vals := make([][hitFieldsLen]byte, len(frames))
	for i, f := range frames {
		keys[i] = uint32(i)
		copy(vals[i][:], f[hitFieldsOff:])
	}
	if _, err := h.flows.BatchUpdate(keys, vals, nil); err != nil {
		return err
	}
	if err := h.pos.Put(uint32(0), uint64(0)); err != nil {
		return err
	}
	if h.prog != nil {
		h.prog.Close()
	}
	const (
		ctx, pos, fp = asm.R6, asm.R7, asm.R10
		frameLen     = 64
	)
	ins := asm.Instructions{
		asm.Mov.Reg(ctx, asm.R1),
		// Undo the previous run's head adjustment: called whatever
		// the delta (0 after the dropping program), so that both
		// timings pay for the call.
		asm.LoadMem(asm.R2, ctx, 4, asm.Word), // data_end
		asm.LoadMem(asm.R3, ctx, 0, asm.Word), // data
		asm.Sub.Reg(asm.R2, asm.R3),
		asm.Sub.Imm(asm.R2, frameLen),
		asm.Mov.Reg(asm.R1, ctx),
		asm.FnXdpAdjustHead.Call(),
		// the next flow of the sequence
		asm.StoreImm(fp, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, h.pos.FD()),
		asm.Mov.Reg(asm.R2, fp),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(pos, asm.R0, 0, asm.DWord),
		asm.Mov.Reg(asm.R1, pos),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.And.Imm(pos, int32(len(frames)-1)),
		asm.StoreMem(fp, -8, pos, asm.Word),
		asm.LoadMapPtr(asm.R1, h.flows.FD()),
		asm.Mov.Reg(asm.R2, fp),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R2, ctx, 0, asm.Word), // data
		asm.LoadMem(asm.R3, ctx, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, hitFieldsOff+hitFieldsLen),
		asm.JGT.Reg(asm.R4, asm.R3, "out"),
	}
	for off := int16(0); off < hitFieldsLen; off += 8 {
		ins = append(ins,
			asm.LoadMem(asm.R5, asm.R0, off, asm.DWord),
			asm.StoreMem(asm.R2, hitFieldsOff+off, asm.R5, asm.DWord))
	}
	ins = append(ins,
		asm.Mov.Reg(asm.R1, ctx),
		asm.LoadMapPtr(asm.R2, h.tail.FD()),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnTailCall.Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), // XDP_ABORTED: the tail call or a lookup failed
		asm.Return(),
	)
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, AttachType: ebpf.AttachXDP, License: "MIT", Instructions: ins})
	if err != nil {
		return err
	}
	h.prog = p
	return nil
}

// target makes the harness tail-call p.
func (h *hitHarness) target(p *ebpf.Program) error {
	return h.tail.Put(uint32(0), p)
}

func (h *hitHarness) close() {
	for _, p := range []*ebpf.Program{h.prog, h.drop} {
		if p != nil {
			p.Close()
		}
	}
	for _, m := range []*ebpf.Map{h.flows, h.pos, h.tail} {
		if m != nil {
			m.Close()
		}
	}
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

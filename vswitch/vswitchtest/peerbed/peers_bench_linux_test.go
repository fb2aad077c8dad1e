//go:build linux

package peerbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/drivers/xdp"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/internal/afpacket"
	"github.com/nicpath/nicpath/internal/nsexec"
)

// The peer benchmarks put nicpath beside Open vSwitch's userspace datapath,
// what a user would run instead, measured in the same run on the same
// topology: three beds of two hosts stand side by side (both hosts nicpath
// on softnic over AF_PACKET, both on xdp, both OVS), every bed with NAPI on
// the VMs' and the uplinks' veths, and each turn of a benchmark measures
// each bed in turn for the same time, so that the three see the same
// machine. They report each bed's figure and nicpath's over OVS's. An OVS
// that cannot start skips the benchmark with the reason: its figures are
// absent, never replaced by a number.

// peerKinds are the beds a side-by-side benchmark measures, OVS last: it
// is what the others are divided by.
var peerKinds = []string{"softnic", "xdp", OVS}

// peerBeds builds the beds of peerKinds, OVS first (if it cannot start
// there is nothing to compare with, and the benchmark skips at once).
func peerBeds(b *testing.B) map[string]*Bed {
	b.Helper()
	if ok, why := CanRun(); !ok {
		b.Skip(why)
	}
	if err := OVSAvailable(); err != nil {
		b.Skipf("Open vSwitch absent: %v", err)
	}
	beds := map[string]*Bed{}
	for _, k := range []string{OVS, "softnic", "xdp"} {
		bed, err := tryBed(b, Config{A: k, B: k, NAPI: true})
		if err != nil {
			if k == OVS {
				b.Skipf("Open vSwitch absent: it did not start: %v", err)
			}
			b.Fatalf("%s: %v", k, err)
		}
		beds[k] = bed
	}
	return beds
}

// fatalReport fails b with a message and what bed's hosts counted.
func fatalReport(b *testing.B, bed *Bed, format string, args ...any) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b.Fatalf("%s\nwhat the hosts counted:\n%s", fmt.Sprintf(format, args...), bed.Report(ctx))
}

// tryBed is newBed returning the error instead of failing.
func tryBed(b *testing.B, cfg Config) (*Bed, error) {
	cfg.Dir = b.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bed, err := New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	b.Cleanup(func() {
		if err := bed.Close(); err != nil {
			b.Errorf("closing the %s bed: %v", cfg.A, err)
		}
	})
	return bed, nil
}

// reportVsOVS reports each bed's rate as <kind>_<unit>, and nicpath's over
// OVS's as <kind>_vs_ovs: the median of the rounds' ratios when rounds
// (each bed's rate in one round) are given, with their lowest and highest
// as <kind>_vs_ovs_min and _max; the ratio of the rates otherwise.
func reportVsOVS(b *testing.B, unit string, rate map[string]float64, rounds []map[string]float64) {
	for _, k := range peerKinds {
		b.ReportMetric(rate[k], k+"_"+unit)
	}
	for _, k := range peerKinds[:len(peerKinds)-1] {
		if len(rounds) == 0 {
			if rate[OVS] > 0 {
				b.ReportMetric(rate[k]/rate[OVS], k+"_vs_ovs")
			}
			continue
		}
		var ratios []float64
		for _, r := range rounds {
			if r[OVS] > 0 {
				ratios = append(ratios, r[k]/r[OVS])
			}
		}
		if len(ratios) == 0 {
			continue
		}
		slices.Sort(ratios)
		b.ReportMetric(median(ratios), k+"_vs_ovs")
		b.ReportMetric(ratios[0], k+"_vs_ovs_min")
		b.ReportMetric(ratios[len(ratios)-1], k+"_vs_ovs_max")
	}
}

// median is the middle of sorted values (the mean of the two middle ones
// for an even count).
func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// crrWorkers is how many transactions the CPS client keeps in flight in
// a turn: the slow paths see several first packets at a time, as they do
// from many VMs. It does not saturate every bed: on a quiet machine the
// softnic bed kept about 1.2 of the 2 cores busy (peer.busy_cores.softnic),
// bound by its latency per transaction, not by CPU. More in flight is not
// neutral either: with 32, OVS's CPU per connection fell from 383 to 247
// µs (it batches more), nicpath's from 185 to 150, and the softnic ratio
// went from 1.70 to 1.39 (measured on one quiet machine).
const crrWorkers = 8

// crrTurn is how long each bed gets in one turn of BenchmarkPeerCPS: short,
// so that a round's three turns see one machine load (a few hundred
// connections a turn here).
const crrTurn = 150 * time.Millisecond

// crrTimeout bounds one transaction: a connection whose SYN or answer was
// lost counts as failed rather than waiting for TCP's retransmission.
const crrTimeout = time.Second

// BenchmarkPeerCPS is peer.cps_vs_ovs.<driver>: new TCP connections per
// second end to end, from vm-a on host-a to vm-b on host-b, and the answer
// back: the client keeps crrWorkers transactions in flight, each of which
// connects, sends one byte, reads the one-byte answer and the server's
// close, and closes (netperf's TCP_CRR). The client and the server are
// processes of their own in the VMs' namespaces (see crrEnv), on every
// bed, so the load takes nothing from nicpath's in-process vswitchds that
// it does not take from OVS's daemons; each is one epoll loop over
// non-blocking sockets on one goroutine, making no system call the
// transaction does not need, so that the load's own CPU, the same on every
// bed, stays small beside the datapaths' (see crrServerMain).
// What a new connection costs each datapath depends on the policy: on the
// bed's (no ACL) nicpath's port-wildcard rules and OVS's megaflows both
// forward a connection between known endpoints without their slow path
// (<kind>_exceptions/conn says how many packets per connection nicpath's
// vswitches handled: 0 after the first). Each round gives every bed one
// turn of crrTurn, starting with a different bed each round. It reports
// connections per second on each bed over the whole run (<kind>_cps), the
// CPU time its turns took per connection (<kind>_cpu_us/conn: see
// crrLoad.cpu; it moves with the machine's load less than the rates do,
// but it does: a quarter to a half more on a busy machine than on a
// quiet one, measured here), the part of it the load's own processes
// took (<kind>_load_cpu_us/conn: the client's and the server's system
// calls and the softirq work that ran in them, which on xdp is nearly
// all of the datapath's), how many of the machine's CPUs were busy
// during its turns, whoever's work it was (<kind>_busy_cores: all of
// them says the bed competed for CPU with other work, and then its
// connections per second follow its CPU per connection; fewer says its
// connections waited on something else), those that failed
// (<kind>_failed: no connection, or no answer within crrTimeout), and
// nicpath's rate over OVS's (<driver>_vs_ovs) as the
// median of the rounds' ratios (with the lowest and highest as
// <driver>_vs_ovs_min and _max): a round's beds ran within a second of
// each other, so a ratio is measured on one machine load, and the median
// keeps a burst of someone else's load from moving the figure.
func BenchmarkPeerCPS(b *testing.B) {
	b.StopTimer()
	beds := peerBeds(b)
	loads := map[string]*crrLoad{}
	for k, bed := range beds {
		l, err := startCRRLoad(b, bed)
		if err != nil {
			fatalReport(b, bed, "%s: %v", k, err)
		}
		loads[k] = l
	}
	done, failed := map[string]int64{}, map[string]int64{}
	elapsed, cpu := map[string]time.Duration{}, map[string]time.Duration{}
	loadCPU, busy := map[string]time.Duration{}, map[string]time.Duration{}
	exc0 := map[string]uint64{}
	for k, bed := range beds {
		exc0[k] = slowPathPackets(bed)
	}
	var rounds []map[string]float64
	// The benchmark's own time is a turn of every side: it stays near half
	// a second a round, so that the default -benchtime runs few rounds.
	b.StartTimer()
	for i := range b.N {
		round := map[string]float64{}
		for j := range peerKinds {
			k := peerKinds[(i+j)%len(peerKinds)]
			c0, l0, m0, err := loads[k].cpu(beds[k])
			if err != nil {
				b.Fatalf("%s: %v", k, err)
			}
			n, f, e, err := loads[k].turn(crrTurn)
			if err != nil {
				b.Fatalf("%s: %v", k, err)
			}
			c1, l1, m1, err := loads[k].cpu(beds[k])
			if err != nil {
				b.Fatalf("%s: %v", k, err)
			}
			cpu[k] += c1 - c0
			loadCPU[k] += l1 - l0
			busy[k] += m1 - m0
			done[k] += n
			failed[k] += f
			elapsed[k] += e
			round[k] = float64(n) / e.Seconds()
		}
		rounds = append(rounds, round)
	}
	rate := map[string]float64{}
	for _, k := range peerKinds {
		if done[k] == 0 {
			fatalReport(b, beds[k], "%s: no transaction completed (%d failed)", k, failed[k])
		}
		rate[k] = float64(done[k]) / elapsed[k].Seconds()
		b.ReportMetric(float64(failed[k]), k+"_failed")
		b.ReportMetric(float64(cpu[k].Microseconds())/float64(done[k]), k+"_cpu_us/conn")
		b.ReportMetric(float64(loadCPU[k].Microseconds())/float64(done[k]), k+"_load_cpu_us/conn")
		b.ReportMetric(busy[k].Seconds()/elapsed[k].Seconds(), k+"_busy_cores")
		if k != OVS {
			// How many packets per connection the two vswitches' slow
			// paths handled.
			b.ReportMetric(float64(slowPathPackets(beds[k])-exc0[k])/float64(done[k]), k+"_exceptions/conn")
		}
		noCsumErrors(b, beds[k])
	}
	reportVsOVS(b, "cps", rate, rounds)
}

// slowPathPackets is the number of exception packets the bed's vswitches
// handled (0 for a bed without one).
func slowPathPackets(bed *Bed) uint64 {
	var n uint64
	for _, h := range bed.Hosts() {
		if h != nil && h.Daemon != nil {
			n += h.Daemon.Switch().Stats().Packets
		}
	}
	return n
}

// ppsTurn is how long each bed's generator runs in one turn of
// BenchmarkPeerPPS, and ppsRamp the part of it before counting starts (the
// queues fill, the rate settles).
const (
	ppsTurn = 250 * time.Millisecond
	ppsRamp = 50 * time.Millisecond
)

// ppsPort is the UDP port the generator sends to.
const ppsPort = 9

// ppsFrame is the generator's frame: 64 bytes (without FCS) of
// Ethernet/IPv4/UDP from vm-a to vm-b, with both checksums, the smallest
// frame the datapath figures are stated for. On the underlay it is 114
// bytes with its VXLAN encapsulation.
func ppsFrame(from, to VM) []byte {
	return wire.Build(wire.FrameSpec{SrcMAC: from.MAC, DstMAC: to.MAC, Src: from.CA, Dst: to.CA, Proto: hal.ProtoUDP,
		SrcPort: 40000, DstPort: ppsPort, Payload: make([]byte, 64-wire.EthHeaderLen-wire.IPv4HeaderLen-wire.UDPHeaderLen)})
}

// ppsBatch is how many frames one sendmmsg carries: afpacket's bound.
const ppsBatch = 64

// generator sends ppsFrame from vm-a's eth0 as fast as it can: an
// AF_PACKET socket with PACKET_QDISC_BYPASS (the frames go straight to
// the veth's transmit, as a packet generator's do) and sendmmsg batches.
type generator struct {
	sock   *afpacket.Socket
	frames [][]byte
}

func newGenerator(b *testing.B, from, to VM) *generator {
	g := &generator{}
	err := nsexec.Do(from.NS, func() error {
		var err error
		g.sock, err = afpacket.Open("eth0", afpacket.Options{SendOnly: true})
		if err != nil {
			return err
		}
		return unix.SetsockoptInt(g.sock.FD(), unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1)
	})
	if err != nil {
		b.Fatalf("generator on %s: %v", from.Name, err)
	}
	b.Cleanup(func() { g.sock.Close() })
	f := ppsFrame(from, to)
	if len(f) != 64 {
		b.Fatalf("the generator's frame is %d bytes, want 64", len(f))
	}
	for range ppsBatch {
		g.frames = append(g.frames, f)
	}
	return g
}

// run sends until stop is closed and returns how many frames the kernel
// took. A full veth ring (ENOBUFS) is the receiver's backpressure, not an
// error: the generator goes on.
func (g *generator) run(stop <-chan struct{}) (sent int64, err error) {
	for {
		select {
		case <-stop:
			return sent, nil
		default:
		}
		n, err := g.sock.SendBatch(g.frames)
		sent += int64(n)
		if err != nil && !errors.Is(err, unix.ENOBUFS) && !errors.Is(err, unix.EAGAIN) {
			return sent, err
		}
	}
}

// udpArrived is how many UDP datagrams vm's kernel took: those read from
// their socket and those it dropped because the socket was full (the
// benchmark's receiver never reads: every datagram of the flood ends in
// UdpRcvbufErrors once its small buffer is full).
func udpArrived(vm VM) (uint64, error) {
	c, err := SNMP(vm)
	if err != nil {
		return 0, err
	}
	return c["UdpInDatagrams"] + c["UdpRcvbufErrors"], nil
}

// sink opens the receiver's socket in vm on ppsPort with the smallest
// buffer the kernel allows, and never reads it.
func sink(b *testing.B, vm VM) {
	var fd int
	err := nsexec.Do(vm.NS, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 0); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrInet4{Port: ppsPort, Addr: vm.CA.As4()})
	})
	if err != nil {
		b.Fatalf("receiver on %s: %v", vm.Name, err)
	}
	b.Cleanup(func() { unix.Close(fd) })
}

// ppsTurnOn runs g for ppsTurn and returns the datagrams vm-b's kernel took
// from ppsRamp to the end, and that time.
func ppsTurnOn(g *generator, to VM) (arrived uint64, elapsed time.Duration, err error) {
	stop := make(chan struct{})
	gerr := make(chan error, 1)
	go func() {
		_, err := g.run(stop)
		gerr <- err
	}()
	time.Sleep(ppsRamp)
	c0, err0 := udpArrived(to)
	t0 := time.Now()
	time.Sleep(ppsTurn - ppsRamp)
	c1, err1 := udpArrived(to)
	elapsed = time.Since(t0)
	close(stop)
	if err := errors.Join(err0, err1, <-gerr); err != nil {
		return 0, 0, err
	}
	return c1 - c0, elapsed, nil
}

// warm sends frames until vm-b's kernel has taken some: the flow is set up
// on both hosts (the first packet through each slow path) before anything
// is counted.
func warm(g *generator, bed *Bed) error {
	to := bed.VMs()[1]
	c0, err := udpArrived(to)
	if err != nil {
		return err
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if _, err := g.sock.SendBatch(g.frames[:1]); err != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond)
		c, err := udpArrived(to)
		if err != nil {
			return err
		}
		if c >= c0+3 {
			return nil
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return fmt.Errorf("no datagram of the generator's reached %s in 10s\nwhat the hosts counted:\n%s", to.Name, bed.Report(ctx))
}

// BenchmarkPeerPPS is peer.pps_vs_ovs.<driver>: 64-byte frames forwarded
// per second from vm-a to vm-b through VXLAN (encapsulated on host-a,
// decapsulated on host-b), one flow, counted by vm-b's kernel. A packet
// generator in vm-a (an AF_PACKET socket with PACKET_QDISC_BYPASS and
// sendmmsg batches of ppsBatch) floods each bed in turn for ppsTurn; the
// rate counts what arrived from ppsRamp to the end of the turn; each round
// gives every bed one turn, starting with a different bed each round. It
// reports each bed's frames per second over the whole run (<kind>_pps)
// and nicpath's over OVS's (<driver>_vs_ovs) as the median of the rounds'
// ratios, with the lowest and highest (see BenchmarkPeerCPS for why), and
// fails if a VM counted a checksum error.
func BenchmarkPeerPPS(b *testing.B) {
	b.StopTimer()
	beds := peerBeds(b)
	gens := map[string]*generator{}
	for k, bed := range beds {
		vms := bed.VMs()
		sink(b, vms[1])
		gens[k] = newGenerator(b, vms[0], vms[1])
		if err := warm(gens[k], bed); err != nil {
			b.Fatalf("%s: %v", k, err)
		}
	}
	arrived := map[string]uint64{}
	elapsed := map[string]time.Duration{}
	// The benchmark's own time is a turn of every side: it stays near a
	// second a turn, so that the default -benchtime runs few turns.
	var rounds []map[string]float64
	b.StartTimer()
	for i := range b.N {
		round := map[string]float64{}
		for j := range peerKinds {
			k := peerKinds[(i+j)%len(peerKinds)]
			n, e, err := ppsTurnOn(gens[k], beds[k].VMs()[1])
			if err != nil {
				b.Fatalf("%s: %v", k, err)
			}
			arrived[k] += n
			elapsed[k] += e
			round[k] = float64(n) / e.Seconds()
		}
		rounds = append(rounds, round)
	}
	rate := map[string]float64{}
	for _, k := range peerKinds {
		if arrived[k] == 0 {
			fatalReport(b, beds[k], "%s: nothing arrived", k)
		}
		rate[k] = float64(arrived[k]) / elapsed[k].Seconds()
		noCsumErrors(b, beds[k])
	}
	reportVsOVS(b, "pps", rate, rounds)
}

// ruleCount is how many rules one turn of BenchmarkPeerRuleInstall
// installs on each side: enough that ovs-ofctl's start and its connection
// are a small part of its time.
const ruleCount = 20000

// ruleCookie marks the benchmark's flows on OVS, so that they are deleted
// between turns without touching the bed's own.
const ruleCookie = 0x5eed

// installRules are ruleCount unified flows of connections from vm-a to
// vm-b (exact 5-tuples, UDP source ports 10000 and up): on nicpath
// hal.Exact of the key → VXLAN toward host-b's PA, count, out of the
// uplink; on OVS the same match on br-int → the VNI and host-b's PA as
// tunnel metadata, out of the VXLAN port (OVS counts every flow).
func installRules(vmPort, uplink hal.PortID) ([]hal.Op, []string) {
	e := hal.Encap{Kind: hal.EncapVXLAN, VNI: VNI, Src: paA, Dst: paB, SrcMAC: upMACA, DstMAC: upMACB}
	ops := make([]hal.Op, ruleCount)
	flows := make([]string, ruleCount)
	for i := range ruleCount {
		k := hal.FlowKey{InPort: vmPort, EthSrc: macA, EthDst: macB, EthType: hal.EtherTypeIPv4, Proto: hal.ProtoUDP,
			IPSrc: hal.Addr16(caA), IPDst: hal.Addr16(caB), L4Src: uint16(10000 + i), L4Dst: ppsPort}
		ops[i] = hal.AddOp(hal.Rule{ID: hal.RuleID(i + 1), Priority: 0x8000, Match: hal.Exact(&k),
			Actions: []hal.Action{hal.EncapWith(e), hal.Count(), hal.Output(uplink)}})
		flows[i] = fmt.Sprintf("cookie=%#x,priority=%d,in_port=%d,dl_src=%s,dl_dst=%s,vlan_tci=0x0000,udp,nw_src=%s,nw_dst=%s,tp_src=%d,tp_dst=%d,"+
			"actions=set_field:%d->tun_id,set_field:%s->tun_dst,output:%d",
			ruleCookie, 0x8000, ovsPortVM, macA, macB, caA, caB, 10000+i, ppsPort, VNI, paB, ovsPortTunnel)
	}
	return ops, flows
}

// applyAll applies ops in batches the NIC takes and checks every result.
func applyAll(ctx context.Context, n hal.NIC, ops []hal.Op, res []hal.OpResult) error {
	step := n.Capabilities().MaxBatch
	if step <= 0 {
		step = len(ops)
	}
	for i := 0; i < len(ops); i += step {
		j := min(i+step, len(ops))
		if err := n.Apply(ctx, ops[i:j], res[i:j]); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkPeerRuleInstall is peer.rule_install_vs_ovs.<driver>: rules
// installed per second. Each turn installs the same ruleCount rules (see
// installRules) with nicpath's Apply on a softnic and on an xdp NIC (in
// the NIC's batches, every result checked), and with `ovs-ofctl add-flows`
// of a file holding them on a running OVS host's br-int (the command's
// whole run: it returns once the switch confirmed them with a barrier);
// then deletes them, untimed. It reports rules per second on each
// (<kind>_rules_per_s) and nicpath's over OVS's (<driver>_vs_ovs).
func BenchmarkPeerRuleInstall(b *testing.B) {
	b.StopTimer()
	if ok, why := CanRun(); !ok {
		b.Skip(why)
	}
	if err := OVSAvailable(); err != nil {
		b.Skipf("Open vSwitch absent: %v", err)
	}
	bed, err := tryBed(b, Config{A: OVS, B: OVS})
	if err != nil {
		b.Skipf("Open vSwitch absent: it did not start: %v", err)
	}
	o := bed.Hosts()[0].OVS
	ctx := context.Background()
	soft, err := softnic.New(softnic.Config{MaxRules: ruleCount, Ports: []softnic.PortConfig{
		{Name: "vp0", Kind: hal.PortVPort, MAC: macA}, {Name: "up0", Kind: hal.PortUplink, MAC: upMACA}}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { soft.Close() })
	xn, err := xdp.Open(ctx, xdp.Config{MaxRules: ruleCount, Ports: []xdp.PortConfig{{ID: portVM, Kind: hal.PortVPort}, {ID: portUplink, Kind: hal.PortUplink}}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { xn.Close() })
	nics := map[string]hal.NIC{"softnic": soft, "xdp": xn}
	ops, flows := installRules(portVM, portUplink)
	dels := make([]hal.Op, len(ops))
	for i := range ops {
		dels[i] = hal.DeleteOp(ops[i].Rule.ID)
	}
	res := make([]hal.OpResult, len(ops))
	file := o.Dir + "/install.flows"
	if err := writeFlows(file, flows); err != nil {
		b.Fatal(err)
	}
	elapsed := map[string]time.Duration{}
	// The benchmark's own time is a turn of every side: it stays near a
	// second a turn, so that the default -benchtime runs few turns.
	b.StartTimer()
	for range b.N {
		for _, k := range peerKinds {
			start := time.Now()
			if k == OVS {
				_, err = o.Ofctl(ctx, "add-flows", "br-int", file)
			} else {
				err = applyAll(ctx, nics[k], ops, res)
			}
			elapsed[k] += time.Since(start)
			if err != nil {
				b.Fatalf("%s: installing %d rules: %v", k, ruleCount, err)
			}
			if k == OVS {
				err = checkOVSRules(ctx, o, ruleCount)
				if err == nil {
					_, err = o.Ofctl(ctx, "del-flows", "br-int", fmt.Sprintf("cookie=%#x/-1", ruleCookie))
				}
			} else {
				err = applyAll(ctx, nics[k], dels, res)
			}
			if err != nil {
				b.Fatalf("%s: %v", k, err)
			}
		}
	}
	rate := map[string]float64{}
	for _, k := range peerKinds {
		rate[k] = float64(ruleCount*b.N) / elapsed[k].Seconds()
	}
	reportVsOVS(b, "rules_per_s", rate, nil)
}

func writeFlows(file string, flows []string) error {
	return os.WriteFile(file, []byte(strings.Join(flows, "\n")+"\n"), 0o644)
}

// checkOVSRules checks that br-int holds want flows of the benchmark's
// cookie: add-flows installed all of them.
func checkOVSRules(ctx context.Context, o *OVSDaemons, want int) error {
	out, err := o.Ofctl(ctx, "dump-aggregate", "br-int", fmt.Sprintf("cookie=%#x/-1", ruleCookie))
	if err != nil {
		return err
	}
	if !strings.Contains(out, fmt.Sprintf("flow_count=%d", want)) {
		return fmt.Errorf("after add-flows of %d flows, br-int holds %s", want, strings.TrimSpace(out))
	}
	return nil
}

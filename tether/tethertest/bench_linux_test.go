//go:build linux

package tethertest

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nicpath/nicpath/internal/nsexec"
)

func benchBed(b *testing.B) (*Bed, NodeLease) {
	b.Helper()
	if ok, why := CanRun(); !ok {
		b.Skip(why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The package's default timers: the figure is what a deployment gets.
	bed, err := New(ctx, Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bed.Close() })
	waitFor(b, "tunnel up", 30*time.Second, func() bool { return bed.Anchor.Status()[0].Established })
	nl, err := bed.DHCP(ctx, "n1")
	if err != nil {
		b.Fatal(err)
	}
	return bed, nl
}

func (bed *Bed) udpIn(b *testing.B, ns string, laddr *net.UDPAddr) *net.UDPConn {
	var c *net.UDPConn
	if err := nsexec.Do(bed.NSPath(ns), func() (err error) {
		c, err = net.ListenUDP("udp4", laddr)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkRebindRecovery measures tether.rebind_recovery_ms: a VM in the
// data center streams UDP to a node at the remote site (the anchor-to-tether
// direction, the one a rebinding cuts) every 5 ms; the NAT's mappings are
// flushed (its fully-random masquerade gives the next datagram a new
// external port); the figure is the time from the flush to the first
// datagram sent after it that reaches the node, with the default probe
// interval (DefaultProbe), at random moments of the probe cycle: the mean
// is about half a probe interval, the worst case one interval and a round
// trip. Each iteration is one rebinding.
func BenchmarkRebindRecovery(b *testing.B) {
	bed, nl := benchBed(b)
	rx := bed.udpIn(b, "n1", &net.UDPAddr{Port: 9100})
	defer rx.Close()
	tx := bed.udpIn(b, "vm-a", nil)
	defer tx.Close()
	to := netip.AddrPortFrom(nl.Addr.Addr(), 9100)

	var seq atomic.Uint64
	var sentAt sync.Map // seq → time sent
	got := make(chan uint64, 1024)
	go func() {
		buf := make([]byte, 64)
		for {
			n, _, err := rx.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if n >= 8 {
				select {
				case got <- binary.BigEndian.Uint64(buf):
				default:
				}
			}
		}
	}()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		var msg [8]byte
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				s := seq.Add(1)
				sentAt.Store(s, time.Now())
				binary.BigEndian.PutUint64(msg[:], s)
				tx.WriteToUDPAddrPort(msg[:], to)
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	// The stream flows before the first rebinding.
	waitStream := func(after uint64, d time.Duration) (uint64, time.Time, bool) {
		deadline := time.After(d)
		for {
			select {
			case s := <-got:
				if s > after {
					return s, time.Now(), true
				}
			case <-deadline:
				return 0, time.Time{}, false
			}
		}
	}
	if _, _, ok := waitStream(0, 10*time.Second); !ok {
		b.Fatal("the stream does not reach the node")
	}
	var total time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		before, _ := bed.Anchor.Endpoint("branch-1")
		if err := bed.FlushNAT(); err != nil {
			b.Fatal(err)
		}
		// From the moment the mappings are gone: what was sent before
		// may still be in flight.
		t0 := time.Now()
		mark := seq.Load()
		_, at, ok := waitStream(mark, 20*time.Second)
		if !ok {
			b.Fatalf("no datagram after the rebinding; anchor %+v", bed.Anchor.Status())
		}
		if ep, _ := bed.Anchor.Endpoint("branch-1"); ep == before {
			b.Fatalf("the endpoint did not move (%v): no rebinding happened", ep)
		}
		total += at.Sub(t0)
		// The next rebinding comes at a random moment of the tether's probe
		// cycle: right after a recovery would always hit it just after a
		// probe, the worst case.
		time.Sleep(200*time.Millisecond + rand.N(2*time.Second))
		for len(got) > 0 {
			<-got
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "recovery_ms")
}

// BenchmarkThroughputRatio measures tether.throughput_ratio: UDP (1,400-byte
// payloads) from the remote site to the anchor's namespace through the same
// NAT, a second each way of carrying it in alternating quarter seconds,
// same run: through the tunnel (a
// node's socket, the tether's port, the tunnel; counted as the anchor
// receives the frames, whose destination the tenant does not route, so
// the anchor drops them after its walk) and through a plain kernel VXLAN device pair between
// the tether's and the anchor's namespaces (a socket in the tether's
// namespace to a socket in the anchor's). The ratio is tunnel / VXLAN of
// the payload bytes received per second.
func BenchmarkThroughputRatio(b *testing.B) {
	bed, nl := benchBed(b)
	_ = nl
	const payload = 1400
	// The plain VXLAN pair, on its own port (the anchor's overlay socket
	// holds 4789 on its PA).
	cmds := [][]string{
		{"-n", "tether", "link", "add", "vxb", "address", "02:42:00:00:00:01", "type", "vxlan", "id", "4242", "remote", AnchorPublic.String(), "local", tetherWAN.String(), "dstport", "4790", "dev", "wan0"},
		{"-n", "tether", "addr", "replace", "192.0.2.1/30", "dev", "vxb"},
		{"-n", "tether", "link", "set", "vxb", "up"},
		{"-n", "anchor", "link", "add", "vxb", "address", "02:42:00:00:00:02", "type", "vxlan", "id", "4242", "remote", NATPublic.String(), "local", AnchorPublic.String(), "dstport", "4790", "dev", "wan0"},
		{"-n", "anchor", "addr", "replace", "192.0.2.2/30", "dev", "vxb"},
		{"-n", "anchor", "link", "set", "vxb", "up"},
		// The NAT lets the anchor's answers through only to the mapped
		// port, and a VXLAN device sends to its fixed port: no ARP back.
		{"-n", "tether", "neigh", "replace", "192.0.2.2", "lladdr", "02:42:00:00:00:02", "dev", "vxb", "nud", "permanent"},
	}
	if err := bed.ipAll(cmds); err != nil {
		b.Fatal(err)
	}
	blast := func(c *net.UDPConn, to netip.AddrPort, d time.Duration) {
		msg := make([]byte, payload)
		end := time.Now().Add(d)
		for i := 0; time.Now().Before(end); i++ {
			c.WriteToUDPAddrPort(msg, to)
		}
	}
	// The two ways take turns, a quarter second each, four turns each per
	// iteration: the machine's load changes by the second, and both ways
	// see the same load this way.
	const turn, turns = 250 * time.Millisecond, 4
	rx := bed.udpIn(b, "anchor", &net.UDPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 9200})
	var vxBytes atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, _, err := rx.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			vxBytes.Add(int64(n))
		}
	}()
	defer func() { rx.Close(); <-done }()
	vxTx := bed.udpIn(b, "tether", nil)
	defer vxTx.Close()
	tunTx := bed.udpIn(b, "n1", nil)
	defer tunTx.Close()
	var kernelBytes, tunnelBytes float64
	var kernelTime, tunnelTime time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for t := 0; t < turns; t++ {
			// Plain VXLAN.
			b0 := vxBytes.Load()
			start := time.Now()
			blast(vxTx, netip.MustParseAddrPort("192.0.2.2:9200"), turn)
			time.Sleep(20 * time.Millisecond) // what is in flight lands
			kernelBytes += float64(vxBytes.Load() - b0)
			kernelTime += time.Since(start)

			// Through the tunnel: a node sends toward an address its
			// tenant has no route for, so that, like the VXLAN
			// datagrams, the traffic ends in the anchor's namespace
			// (the anchor opens, walks and drops each frame) and the
			// data center's hosts take no CPU from the two ends; the
			// anchor counts the frames it receives from the tether.
			st0 := bed.Anchor.Status()[0]
			start = time.Now()
			blast(tunTx, netip.MustParseAddrPort("203.0.113.200:9201"), turn)
			time.Sleep(20 * time.Millisecond)
			st1 := bed.Anchor.Status()[0]
			tunnelBytes += float64((st1.RxFrames - st0.RxFrames) * payload)
			tunnelTime += time.Since(start)
		}
	}
	kernel := kernelBytes / kernelTime.Seconds()
	tunnel := tunnelBytes / tunnelTime.Seconds()
	b.StopTimer()
	b.ReportMetric(tunnel/1e6, "tunnel_MBps")
	b.ReportMetric(kernel/1e6, "vxlan_MBps")
	b.ReportMetric(tunnel/kernel, "ratio")
}

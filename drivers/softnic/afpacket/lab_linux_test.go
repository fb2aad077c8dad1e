//go:build linux

package afpacket

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	rawsock "github.com/nicpath/nicpath/internal/afpacket"
	"github.com/nicpath/nicpath/internal/nsexec"
)

// lab is a set of network namespaces for one test, named after the test
// binary's pid, deleted when the test ends.
type lab struct {
	t      testing.TB
	prefix string
}

func newLab(t testing.TB, tag string) *lab {
	t.Helper()
	skipUnlessRoot(t)
	if _, err := exec.LookPath("nstat"); err != nil {
		t.Skip("needs iproute2's nstat to read the VMs' checksum error counters")
	}
	return &lab{t: t, prefix: fmt.Sprintf("np%s%d", tag, os.Getpid())}
}

// ns creates namespace prefix-name (loopback up) and returns its name.
func (l *lab) ns(name string) string {
	l.t.Helper()
	n := l.prefix + "-" + name
	ip(l.t, "netns", "add", n)
	l.t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n).CombinedOutput(); err != nil {
			l.t.Errorf("ip netns del %s: %v\n%s", n, err, out)
		}
	})
	ip(l.t, "-n", n, "link", "set", "lo", "up")
	return n
}

// veth creates a veth pair, end a in namespace nsA and end b in nsB with
// MAC macB, both up, and the kernel's default offloads.
func (l *lab) veth(nsA, a, nsB, b string, macB hal.MAC) {
	l.t.Helper()
	ip(l.t, "-n", nsA, "link", "add", a, "type", "veth", "peer", "name", b, "netns", nsB)
	ip(l.t, "-n", nsB, "link", "set", b, "address", macB.String())
	ip(l.t, "-n", nsA, "link", "set", a, "up")
	ip(l.t, "-n", nsB, "link", "set", b, "up")
}

func nsPath(ns string) string { return "/run/netns/" + ns }

// csumErrors reads UdpInCsumErrors and TcpInCsumErrors in ns: what a VM's
// kernel counts for each TCP or UDP packet whose checksum is wrong (and
// drops).
func csumErrors(t testing.TB, ns string) map[string]uint64 {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "nstat", "-asz", "UdpInCsumErrors", "TcpInCsumErrors", "Udp6InCsumErrors").CombinedOutput()
	if err != nil {
		t.Fatalf("nstat in %s: %v\n%s", ns, err, out)
	}
	m := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && !strings.HasPrefix(f[0], "#") {
			v, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatalf("nstat line %q: %v", sc.Text(), err)
			}
			m[f[0]] = v
		}
	}
	if _, ok := m["TcpInCsumErrors"]; !ok {
		t.Fatalf("nstat in %s printed no TcpInCsumErrors:\n%s", ns, out)
	}
	return m
}

func noCsumErrors(t testing.TB, nss ...string) {
	t.Helper()
	for _, ns := range nss {
		for k, v := range csumErrors(t, ns) {
			if v != 0 {
				t.Errorf("%s: %s = %d", ns, k, v)
			}
		}
	}
}

// bind binds each port to the interface of the same name in ns; the
// bindings close when the test ends.
func bind(t testing.TB, ns string, nic *softnic.NIC, names ...string) []*Binding {
	t.Helper()
	var out []*Binding
	err := nsexec.Do(nsPath(ns), func() error {
		for _, name := range names {
			p, err := nic.PortByName(name)
			if err != nil {
				return err
			}
			b, err := Bind(p, name, Options{})
			if err != nil {
				return err
			}
			out = append(out, b)
		}
		return nil
	})
	for _, b := range out {
		t.Cleanup(func() { b.Close() })
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func apply(t testing.TB, nic *softnic.NIC, rules ...hal.Rule) {
	t.Helper()
	ops := make([]hal.Op, len(rules))
	for i, r := range rules {
		ops[i] = hal.AddOp(r)
	}
	if err := nic.Apply(context.Background(), ops, make([]hal.OpResult, len(ops))); err != nil {
		t.Fatal(err)
	}
}

// capture collects, from a raw socket on ifname in ns, copies of the
// frames arriving there (not those the namespace sends) that carry TCP or
// UDP to one of ports, up to limit, until stop is called.
type capture struct {
	mu     sync.Mutex
	frames [][]byte
	status []uint32
	done   chan struct{}
	wg     sync.WaitGroup
}

func startCapture(t testing.TB, ns, ifname string, limit int, ports ...uint16) *capture {
	t.Helper()
	var s *rawsock.Socket
	err := nsexec.Do(nsPath(ns), func() error {
		var err error
		s, err = rawsock.Open(ifname, rawsock.Options{SkipOutgoing: true, PollInterval: 20 * time.Millisecond, RecvBuffer: 32 << 20})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	c := &capture{done: make(chan struct{})}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer s.Close()
		buf := make([]byte, 1<<16)
		for {
			select {
			case <-c.done:
				return
			default:
			}
			f, st, err := s.RecvFlags(buf, 0)
			if err != nil {
				continue
			}
			var k hal.FlowKey
			var l wire.Layout
			if wire.Parse(f, 0, &k, &l) != nil || (k.Proto != hal.ProtoTCP && k.Proto != hal.ProtoUDP) {
				continue
			}
			for _, p := range ports {
				if k.L4Src == p || k.L4Dst == p {
					c.mu.Lock()
					c.frames = append(c.frames, append([]byte(nil), f...))
					c.status = append(c.status, st)
					full := len(c.frames) == limit
					c.mu.Unlock()
					if full {
						return // the socket closes: it costs nothing during the rest
					}
					break
				}
			}
		}
	}()
	t.Cleanup(c.stop)
	return c
}

func (c *capture) stop() {
	select {
	case <-c.done:
	default:
		close(c.done)
	}
	c.wg.Wait()
}

// checkFrames checks that every captured frame arrived with complete,
// valid checksums: the IPv4 header's (wire.Parse), the transport one of
// the (inner) packet, and a tunnelled frame's outer UDP checksum when it
// has one; and that none arrived marked partial. It returns the counts of
// TCP and UDP frames checked.
func (c *capture) checkFrames(t *testing.T, what string) (tcp, udp int) {
	t.Helper()
	c.stop()
	for i, f := range c.frames {
		if c.status[i]&unix.TP_STATUS_CSUMNOTREADY != 0 {
			t.Fatalf("%s: frame %d arrived with its checksum still to be done", what, i)
		}
		var k hal.FlowKey
		var l wire.Layout
		if err := wire.Parse(f, 0, &k, &l); err != nil {
			t.Fatalf("%s: frame %d: %v", what, i, err)
		}
		if !l4SumOK(f, l.L3, l.L4, l.End, l.EthType == hal.EtherTypeIPv6, k.Proto) {
			t.Fatalf("%s: frame %d (%s): bad transport checksum\n% x", what, i, k.String(), f)
		}
		if k.Proto == hal.ProtoTCP {
			tcp++
		} else {
			udp++
		}
		if l.Tunnel >= 0 && k.TunKind != hal.EncapNVGRE && binary.BigEndian.Uint16(f[l.OuterL4+6:]) != 0 {
			end := l.OuterL4 + int(binary.BigEndian.Uint16(f[l.OuterL4+4:]))
			if !l4SumOK(f, l.OuterL3, l.OuterL4, end, l.OuterEthType == hal.EtherTypeIPv6, hal.ProtoUDP) {
				t.Fatalf("%s: frame %d: bad outer UDP checksum", what, i)
			}
		}
	}
	return tcp, udp
}

func l4SumOK(f []byte, l3, l4, end int, v6 bool, proto uint8) bool {
	var src, dst []byte
	if v6 {
		src, dst = f[l3+8:l3+24], f[l3+24:l3+40]
	} else {
		src, dst = f[l3+12:l3+16], f[l3+16:l3+20]
	}
	return wire.Checksum(f[l4:end], wire.PseudoHeaderSum(src, dst, proto, end-l4)) == 0
}

// udpConn opens a UDP socket on addr in ns.
func udpConn(t testing.TB, ns, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := nsexec.Do(nsPath(ns), func() error {
		a, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return err
		}
		c, err = net.ListenUDP("udp", a)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// udpExchange sends datagrams of several sizes from one socket to the
// other, one UDP_SEGMENT super-frame among them (cut by the binding), and
// checks that each arrives whole.
func udpExchange(t testing.TB, from, to *net.UDPConn) {
	t.Helper()
	dst := to.LocalAddr().(*net.UDPAddr)
	sizes := []int{1, 100, 1000, 1300} // unfragmented within every MTU here
	for i, n := range sizes {
		p := bytes.Repeat([]byte{byte('a' + i)}, n)
		if _, err := from.WriteToUDP(p, dst); err != nil {
			t.Fatal(err)
		}
	}
	// One write of four datagrams of 1000 bytes, the last shorter: a
	// GSO_UDP_L4 super-frame on the VM's veth.
	rc, err := from.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, 1000) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	gso := make([]byte, 3500)
	for i := range gso {
		gso[i] = byte(i / 1000)
	}
	if _, err := from.WriteToUDP(gso, dst); err != nil {
		t.Fatal(err)
	}
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, 0) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	want := map[string]int{}
	for i, n := range sizes {
		want[string(bytes.Repeat([]byte{byte('a' + i)}, n))]++
	}
	for i := 0; i < len(gso); i += 1000 {
		want[string(gso[i:min(i+1000, len(gso))])]++
	}
	buf := make([]byte, 65536)
	to.SetReadDeadline(time.Now().Add(15 * time.Second)) // a loaded machine may deschedule the binding that long; a passing run waits no longer
	for got := 0; got < len(sizes)+4; got++ {
		n, _, err := to.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("%s -> %s: %d datagrams arrived, then %v (left: %d)", from.LocalAddr(), dst, got, err, len(want))
		}
		k := string(buf[:n])
		if want[k] == 0 {
			t.Fatalf("%s -> %s: unexpected datagram of %d bytes", from.LocalAddr(), dst, n)
		}
		if want[k]--; want[k] == 0 {
			delete(want, k)
		}
	}
}

// bulkTCP sends size bytes over TCP from a client in cliNS to a server on
// srvAddr in srvNS, checks every byte on arrival, and returns how long the
// transfer took (connection set up before the clock starts).
func bulkTCP(t testing.TB, srvNS, srvAddr, cliNS string, size int) time.Duration {
	t.Helper()
	var ln net.Listener
	if err := nsexec.Do(nsPath(srvNS), func() error {
		var err error
		ln, err = net.Listen("tcp", srvAddr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The stream repeats a random block of a prime length, so that data
	// put at a wrong offset (a multiple of an MSS, of a GSO size) differs
	// from what belongs there; dbl is the block twice, so that any window
	// of up to a block is one slice of it, compared at memcmp speed.
	const period = 65521
	dbl := make([]byte, 2*period)
	rand.New(rand.NewSource(int64(size))).Read(dbl[:period])
	copy(dbl[period:], dbl[:period])
	expect := func(p, n int) []byte { return dbl[p%period : p%period+n] }
	type result struct {
		n   int
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			res <- result{0, err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		buf := make([]byte, 1<<16)
		pos := 0
		for {
			n, err := c.Read(buf)
			for i := 0; i < n; {
				m := min(n-i, period)
				if !bytes.Equal(buf[i:i+m], expect(pos+i, m)) {
					res <- result{pos + i, fmt.Errorf("bytes %d to %d differ from what was sent", pos+i, pos+i+m)}
					return
				}
				i += m
			}
			pos += n
			if errors.Is(err, io.EOF) {
				res <- result{pos, nil}
				return
			}
			if err != nil {
				res <- result{pos, err}
				return
			}
		}
	}()
	var c net.Conn
	if err := nsexec.Do(nsPath(cliNS), func() error {
		var err error
		c, err = net.DialTimeout("tcp", srvAddr, 10*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	start := time.Now()
	for pos := 0; pos < size; {
		n := min(period, size-pos)
		if _, err := c.Write(expect(pos, n)); err != nil {
			t.Fatalf("write at %d: %v", pos, err)
		}
		pos += n
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	r := <-res
	took := time.Since(start)
	if r.err != nil || r.n != size {
		t.Fatalf("TCP %s: %d of %d bytes arrived: %v", srvAddr, r.n, size, r.err)
	}
	return took
}

func gbps(bytes int, d time.Duration) float64 { return float64(bytes) * 8 / d.Seconds() / 1e9 }

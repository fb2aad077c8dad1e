//go:build linux

package tethertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nicpath/nicpath/control"
	"github.com/nicpath/nicpath/internal/nsexec"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/securechan"
	"github.com/nicpath/nicpath/tether"
	"github.com/nicpath/nicpath/tether/lease"
)

func newBed(t *testing.T, probe time.Duration) *Bed {
	t.Helper()
	if ok, why := CanRun(); !ok {
		t.Skip(why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := New(ctx, Options{Dir: t.TempDir(), Probe: probe})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	return b
}

func (b *Bed) ping(t *testing.T, from string, to netip.Addr) {
	t.Helper()
	// A few tries: the first packets of a flow take the slow paths
	// (vswitch, anchor) and a rebinding takes up to a probe interval.
	var out string
	var err error
	for try := 0; try < 10; try++ {
		out, err = b.In(from, "ping", "-c", "2", "-i", "0.2", "-W", "1", to.String())
		if err == nil {
			return
		}
	}
	t.Fatalf("ping %s -> %s: %v\n%s\nanchor %+v overlay %+v", from, to, err, out, b.Anchor.Status(), b.Overlay.Stats())
}

// listen opens a socket in ns.
func (b *Bed) listenUDP(t *testing.T, ns string, port int) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := nsexec.Do(b.NSPath(ns), func() (err error) {
		c, err = net.ListenUDP("udp4", &net.UDPAddr{Port: port})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (b *Bed) listenTCP(t *testing.T, ns string, port int) net.Listener {
	t.Helper()
	var l net.Listener
	if err := nsexec.Do(b.NSPath(ns), func() (err error) {
		l, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func (b *Bed) dialTCP(ns string, to netip.AddrPort) (net.Conn, error) {
	var c net.Conn
	err := nsexec.Do(b.NSPath(ns), func() (err error) {
		c, err = net.DialTimeout("tcp4", to.String(), 3*time.Second)
		return err
	})
	return c, err
}

// udpEcho checks datagrams from ns to an echo server at to and back.
func (b *Bed) udpEcho(t *testing.T, from string, server *net.UDPConn, to netip.AddrPort) {
	t.Helper()
	if got := b.udpEchoes(from, server, to, 40); got < 10 {
		t.Fatalf("UDP %s -> %v: %d echoes", from, to, got)
	}
}

// udpEchoes sends up to tries datagrams from ns to an echo server (started
// on server once) and counts the echoes, stopping at 10.
func (b *Bed) udpEchoes(from string, server *net.UDPConn, to netip.AddrPort, tries int) int {
	if _, started := echoing.LoadOrStore(server, true); !started {
		go func() {
			buf := make([]byte, 2048)
			for {
				n, a, err := server.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				server.WriteToUDPAddrPort(buf[:n], a)
			}
		}()
	}
	var c *net.UDPConn
	if err := nsexec.Do(b.NSPath(from), func() (err error) {
		c, err = net.ListenUDP("udp4", nil)
		return err
	}); err != nil {
		return 0
	}
	defer c.Close()
	got := 0
	buf := make([]byte, 2048)
	// An echo that comes back after its read timed out (a loaded machine)
	// still counts when it arrives, and does not stand in the way of the
	// next datagram's.
	pending := map[string]bool{}
	for i := 0; i < tries && got < 10; i++ {
		msg := []byte(fmt.Sprintf("datagram %d from %s %s", i, from, strings.Repeat("x", 1000)))
		pending[string(msg)] = true
		c.WriteToUDPAddrPort(msg, to)
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		for {
			n, _, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				break
			}
			if pending[string(buf[:n])] {
				delete(pending, string(buf[:n]))
				got++
			}
			if bytes.Equal(buf[:n], msg) {
				break
			}
		}
	}
	return got
}

var echoing sync.Map // the servers udpEchoes started an echo loop on

// tcpEcho sends size bytes over TCP from ns to an echo server and checks
// every byte that comes back.
func (b *Bed) tcpEcho(t *testing.T, from string, l net.Listener, to netip.AddrPort, size int) {
	t.Helper()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	c, err := b.dialTCP(from, to)
	if err != nil {
		t.Fatalf("TCP %s -> %v: %v", from, to, err)
	}
	defer c.Close()
	data := make([]byte, size)
	rand.Read(data)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	go c.Write(data)
	back := make([]byte, size)
	if _, err := io.ReadFull(c, back); err != nil {
		t.Fatalf("TCP %s -> %v: %v", from, to, err)
	}
	if !bytes.Equal(back, data) {
		t.Fatalf("TCP %s -> %v: bytes differ", from, to)
	}
}

func TestRelocatedSubnet(t *testing.T) {
	b := newBed(t, 500*time.Millisecond)
	ctx := context.Background()
	waitFor(t, "tunnel up", 30*time.Second, func() bool { return b.Anchor.Status()[0].Established })

	var n1, n2 NodeLease
	t.Run("dhcp", func(t *testing.T) {
		var err error
		if n1, err = b.DHCP(ctx, "n1"); err != nil {
			t.Fatal(err)
		}
		if n2, err = b.DHCP(ctx, "n2"); err != nil {
			t.Fatal(err)
		}
		for _, n := range []NodeLease{n1, n2} {
			if n.Addr.Bits() != 24 || !RelocatedPrefix.Contains(n.Addr.Addr()) || n.Router != b.Sub.Gateway ||
				n.MTU != tether.InnerMTU(1500, false) || n.Expires != time.Hour {
				t.Fatalf("lease %+v", n)
			}
		}
		if n1.Addr == n2.Addr {
			t.Fatalf("both nodes got %v", n1.Addr)
		}
		_, _, br := b.Tether()
		ls := br.Leases()
		if len(ls) != 2 || ls[0].Port == ls[1].Port {
			t.Fatalf("leases %+v", ls)
		}
	})
	if t.Failed() {
		return
	}
	a1, a2 := n1.Addr.Addr(), n2.Addr.Addr()

	t.Run("ping", func(t *testing.T) {
		b.ping(t, "n1", VMA)
		b.ping(t, "vm-b", a1)
		b.ping(t, "vm-a", a2)
		b.ping(t, "n2", a1) // between the site's nodes, through the tether alone
	})
	t.Run("udp", func(t *testing.T) {
		b.udpEcho(t, "n1", b.listenUDP(t, "vm-a", 7000), netip.AddrPortFrom(VMA, 7000))
		b.udpEcho(t, "vm-b", b.listenUDP(t, "n2", 7001), netip.AddrPortFrom(a2, 7001))
	})
	t.Run("tcp", func(t *testing.T) {
		b.tcpEcho(t, "n1", b.listenTCP(t, "vm-a", 5001), netip.AddrPortFrom(VMA, 5001), 2<<20)
		b.tcpEcho(t, "vm-b", b.listenTCP(t, "n2", 5002), netip.AddrPortFrom(a2, 5002), 2<<20)
	})
	t.Run("acl", func(t *testing.T) {
		// The tenant's ACL denies the relocated subnet's telnet into the
		// VNET's VMs; a listener on the port proves only the ACL refuses.
		l := b.listenTCP(t, "vm-a", DeniedPort)
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		if c, err := b.dialTCP("n1", netip.AddrPortFrom(VMA, DeniedPort)); err == nil {
			c.Close()
			t.Fatal("the ACL's denied port connected from the relocated subnet")
		}
		b.tcpEcho(t, "vm-a", b.listenTCP(t, "n1", DeniedPort), netip.AddrPortFrom(a1, DeniedPort), 1<<10) // the other way is allowed
	})
	t.Run("anchor-acl", func(t *testing.T) {
		// An outbound ACL of the relocated addresses is theirs alone: no
		// data-center host walks it, only the anchor. A policy change
		// adds one, the anchor applies it, and removing it restores the
		// traffic.
		deny := policy.ACL{Tenant: "blue", ID: "branch-no-udp-7003", Priority: 5, Direction: policy.Out, Src: []netip.Prefix{RelocatedPrefix},
			Protocol: policy.ProtoUDP, DstPorts: []policy.PortRange{{Lo: 7003, Hi: 7003}}, Action: policy.Deny}
		st, err := b.BuildPolicy(deny)
		if err != nil {
			t.Fatal(err)
		}
		server := b.listenUDP(t, "vm-a", 7003)
		if err := b.AnchorNode.SetState(b.Config, st); err != nil {
			t.Fatal(err)
		}
		if n := b.udpEchoes("n1", server, netip.AddrPortFrom(VMA, 7003), 10); n != 0 {
			t.Fatalf("%d datagrams passed the anchor's deny", n)
		}
		if err := b.AnchorNode.SetState(b.Config, b.State); err != nil {
			t.Fatal(err)
		}
		b.udpEcho(t, "n1", server, netip.AddrPortFrom(VMA, 7003))
	})
	t.Run("mtu", func(t *testing.T) {
		// From the data center (MTU 1450) a packet too big for the
		// tunnel, without DF, is split by the anchor, as a router does,
		// and the node reassembles it (before any DF packet taught vm-a
		// the path's MTU: it would split the packet itself). The node's
		// answer comes back in fragments the data center's vswitch
		// handles (or not) on its own: the check is the node's
		// reassembly.
		before := b.reasmOKs(t, "n1")
		b.In("vm-a", "ping", "-c", "2", "-W", "1", "-M", "dont", "-s", "1422", a1.String())
		if b.Overlay.Stats().Fragmented.Load() == 0 {
			t.Fatal("the anchor did not fragment")
		}
		if after := b.reasmOKs(t, "n1"); after < before+2 {
			t.Fatalf("the node reassembled %d packets of the anchor's fragments, want 2", after-before)
		}
		// With DF it is answered by the anchor.
		out, _ := b.In("vm-a", "ping", "-c", "2", "-W", "1", "-M", "do", "-s", "1422", a1.String())
		if want := fmt.Sprintf("mtu = %d", n1.MTU); !strings.Contains(out, want) {
			t.Fatalf("vm-a's oversized ping: no %q in\n%s", want, out)
		}
		// A node whose MTU is wrong is answered by the tether.
		if _, err := b.In("n2", "ip", "link", "set", "eth0", "mtu", "1500"); err != nil {
			t.Fatal(err)
		}
		out, _ = b.In("n2", "ping", "-c", "2", "-W", "1", "-M", "do", "-s", "1450", VMA.String())
		b.In("n2", "ip", "link", "set", "eth0", "mtu", fmt.Sprint(n2.MTU))
		if want := fmt.Sprintf("mtu = %d", n2.MTU); !strings.Contains(out, want) {
			t.Fatalf("n2's oversized ping: no %q in\n%s", want, out)
		}
		_, site, _ := b.Tether()
		if site.Stats().TooBig.Load() == 0 || b.Overlay.Stats().TooBig.Load() == 0 {
			t.Fatal("too-big counters did not move")
		}
		b.ping(t, "n2", VMA)
	})
	t.Run("control", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		dir := t.TempDir()
		b.ServeControl(cctx, dir+"/anchor.sock", dir+"/tether.sock")
		var as, ts tether.Status
		var ls []lease.Lease
		waitFor(t, "control sockets", 5*time.Second, func() bool {
			return (&control.Client{Path: dir + "/anchor.sock"}).Call(ctx, "tether", nil, &as) == nil &&
				(&control.Client{Path: dir + "/tether.sock"}).Call(ctx, "tether", nil, &ts) == nil
		})
		if err := (&control.Client{Path: dir + "/tether.sock"}).Call(ctx, "leases", nil, &ls); err != nil {
			t.Fatal(err)
		}
		ep, _ := b.Anchor.Endpoint("branch-1")
		if as.Role != "anchor" || len(as.Peers) != 1 || as.Peers[0].Endpoint != ep || ep.Addr() != NATPublic || as.Pool != 10 {
			t.Fatalf("anchor status %+v (endpoint %v)", as, ep)
		}
		if ts.Role != "tether" || ts.Tether == nil || !ts.Tether.Established || ts.MTU != n1.MTU || ts.Counter["dhcp"] < 4 {
			t.Fatalf("tether status %+v", ts)
		}
		if len(ls) != 2 || ls[0].Addr != a1 || ls[1].Addr != a2 {
			t.Fatalf("leases %+v", ls)
		}
		if err := (&control.Client{Path: dir + "/anchor.sock"}).Call(ctx, "leases", nil, &ls); err == nil {
			t.Fatal("the anchor answered leases it does not keep")
		}
	})
	t.Run("forged", func(t *testing.T) {
		before := b.Anchor.Status()[0]
		sent := b.Sent()
		var forged [][]byte
		for _, d := range sent {
			forged = append(forged, d) // replayed as is
			f := bytes.Clone(d)
			f[len(f)-1] ^= 0x80
			forged = append(forged, f) // tampered
		}
		junk := make([]byte, 300)
		rand.Read(junk)
		forged = append(forged, junk)
		if err := b.Forge(forged); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "forgeries refused", 5*time.Second, func() bool {
			return b.Anchor.Refused(securechan.DropReplay) > 0 && b.Anchor.Refused(securechan.DropTampered) > 0
		})
		b.ping(t, "vm-a", a1)
		after := b.Anchor.Status()[0]
		if after.Endpoint != before.Endpoint || after.Rebinds != before.Rebinds || after.Handshakes != before.Handshakes {
			t.Fatalf("forged packets changed the session: before %+v after %+v", before, after)
		}
	})
	t.Run("nat-flush", func(t *testing.T) {
		before, _ := b.Anchor.Endpoint("branch-1")
		if before.Addr() != NATPublic {
			t.Fatalf("endpoint %v is not the NAT's", before)
		}
		if err := b.FlushNAT(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "endpoint follows the new mapping", 5*time.Second, func() bool {
			ep, _ := b.Anchor.Endpoint("branch-1")
			return ep != before
		})
		b.ping(t, "vm-a", a1)
		b.ping(t, "n2", VMB)
	})
	t.Run("nat-address", func(t *testing.T) {
		if err := b.ChangeNATAddress(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "endpoint follows the new address", 5*time.Second, func() bool {
			ep, _ := b.Anchor.Endpoint("branch-1")
			return ep.Addr() == NATPublic2
		})
		b.ping(t, "vm-b", a2)
		b.udpEcho(t, "n1", b.listenUDP(t, "vm-a", 7002), netip.AddrPortFrom(VMA, 7002))
	})
	t.Run("tether-restart", func(t *testing.T) {
		_, _, br := b.Tether()
		before := br.Leases()
		hs := b.Anchor.Status()[0].Handshakes
		if err := b.RestartTether(); err != nil {
			t.Fatal(err)
		}
		_, _, br = b.Tether()
		after := br.Leases()
		if leaseString(after) != leaseString(before) {
			t.Fatalf("leases before the restart %+v, after %+v", before, after)
		}
		waitFor(t, "new session", 10*time.Second, func() bool { return b.Anchor.Status()[0].Handshakes > hs })
		// The nodes keep their addresses and are reached at once; a renewal
		// gives each the same address.
		b.ping(t, "vm-a", a1)
		b.ping(t, "n2", VMB)
		r1, err := b.DHCP(ctx, "n1")
		if err != nil || r1.Addr != n1.Addr {
			t.Fatalf("renewal after restart: %+v %v (had %v)", r1, err, n1.Addr)
		}
	})
}

func waitFor(t testing.TB, what string, d time.Duration, f func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !f() {
		if time.Now().After(end) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func leaseString(ls []lease.Lease) string {
	var b strings.Builder
	for _, l := range ls {
		fmt.Fprintf(&b, "%s %s %s %s %s; ", l.Addr, l.MAC, l.Port, l.Granted.UTC().Format(time.RFC3339Nano), l.Expiry.UTC().Format(time.RFC3339Nano))
	}
	return b.String()
}

// reasmOKs reads how many IPv4 packets namespace ns reassembled.
func (b *Bed) reasmOKs(t *testing.T, ns string) int {
	t.Helper()
	out, err := b.In(ns, "cat", "/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != "Ip:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "ReasmOKs" && i < len(f) {
				var v int
				fmt.Sscan(f[i], &v)
				return v
			}
		}
	}
	t.Fatalf("no ReasmOKs in %s's /proc/net/snmp", ns)
	return 0
}

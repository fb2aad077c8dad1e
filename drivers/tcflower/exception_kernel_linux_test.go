//go:build linux

package tcflower

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
)

// readExc reads exceptions carrying the test magic until it has n or d
// passes.
func readExc(t *testing.T, n *NIC, want int, d time.Duration) []hal.Exception {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var got []hal.Exception
	for len(got) < want {
		batch := newBatch(4, 2048)
		k, err := n.ReadExceptions(ctx, batch)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			t.Fatalf("ReadExceptions: %v", err)
		}
		for _, x := range batch[:k] {
			if hasMagic(x.Frame()) {
				x.Buf = append([]byte(nil), x.Frame()...)
				got = append(got, x)
			}
		}
	}
	return got
}

func checkExc(t *testing.T, x hal.Exception, port hal.PortID, reason hal.Reason, rule hal.RuleID, frame []byte, what string) {
	t.Helper()
	if x.InPort != port || x.Reason != reason || x.Rule != rule || x.VNI != 0 || x.Truncated {
		t.Errorf("%s: in-port %d reason %v rule %d vni %d truncated %v; want %d, %v, %d, 0, false", what, x.InPort, x.Reason, x.Rule, x.VNI, x.Truncated, port, reason, rule)
	}
	if !bytes.Equal(x.Frame(), frame) {
		t.Errorf("%s: frame\n got % x\nwant % x", what, x.Frame(), frame)
	}
}

func fragmentOf(f []byte) []byte {
	g := append([]byte(nil), f...)
	ip := g[14:34]
	binary.BigEndian.PutUint16(ip[6:], 185) // offset 185×8, no more fragments
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	return g
}

// arpRequest asks for target from sender (MAC and address).
func arpRequest(mac hal.MAC, sender, target string) []byte {
	b := make([]byte, 60)
	copy(b[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(b[6:12], mac[:])
	binary.BigEndian.PutUint16(b[12:], hal.EtherTypeARP)
	a := b[14:]
	binary.BigEndian.PutUint16(a[0:], 1)
	binary.BigEndian.PutUint16(a[2:], hal.EtherTypeIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], 1)
	copy(a[8:14], mac[:])
	s, d := mustAddr4(sender), mustAddr4(target)
	copy(a[14:18], s[:])
	copy(a[24:28], d[:])
	return b
}

func TestKernelExceptionPath(t *testing.T) {
	requireKernel(t)
	tp := newTopology(t)
	n := tp.open(t, PlaceAny)
	c := n.Capabilities()
	if !c.ExceptionPath || !c.HasAction(hal.ActionToHost) {
		t.Fatalf("exception path %v, to_host %v; want both on a kernel with act_vlan and act_mirred\n%s", c.ExceptionPath, c.HasAction(hal.ActionToHost), c.String())
	}
	channel := fmt.Sprintf("tcfx%08x", n.Block())
	if out := tp.ns.ip("link", "show"); !strings.Contains(out, channel) {
		t.Fatalf("no channel %s in the namespace:\n%s", channel, out)
	}
	vm1, vm2 := openPacketSock(t, tp.ns, "vm1"), openPacketSock(t, tp.ns, "vm2")
	up1 := openPacketSock(t, tp.remote, "up1")

	// Misses, untagged and tagged, from vport 1 and the uplink.
	miss := udpFrame(macVM1, macVM2, "192.0.2.1", "192.0.2.2", 1000, 2000)
	plain := udpFrame(macVM1, macVM2, "192.0.2.1", "192.0.2.3", 1000, 2001)
	tagged := append(append(append([]byte(nil), plain[:12]...), 0x81, 0x00, 0x20, 0x64), plain[12:]...) // PCP 1, VID 100
	vm1.send(t, miss, tagged)
	got := readExc(t, n, 2, wait)
	if len(got) != 2 {
		t.Fatalf("%d misses reached the host, want 2", len(got))
	}
	checkExc(t, got[0], 1, hal.ReasonMiss, 0, miss, "miss")
	checkExc(t, got[1], 1, hal.ReasonMiss, 0, tagged, "tagged miss")
	fromUp := udpFrame(hal.MustMAC("02:4e:50:00:00:a2"), tp.upMAC, underlayRemote, underlayLocal, 1000, 7000)
	up1.send(t, fromUp)
	if got := readExc(t, n, 1, wait); len(got) != 1 {
		t.Errorf("a miss on the uplink did not reach the host")
	} else {
		checkExc(t, got[0], 3, hal.ReasonMiss, 0, fromUp, "uplink miss")
	}

	// A later fragment: reason fragment.
	frag := fragmentOf(miss)
	vm1.send(t, frag)
	if got := readExc(t, n, 1, wait); len(got) != 1 {
		t.Errorf("a fragment did not reach the host")
	} else {
		checkExc(t, got[0], 1, hal.ReasonFragment, 0, frag, "fragment")
	}

	// ToHost from vport 2, with the rule named.
	var m hal.Match
	m.InPort(2).IPDst(netip.MustParsePrefix("192.0.2.1/32"))
	apply(t, n, hal.AddOp(hal.Rule{ID: 42, Priority: 10, Match: m, Actions: []hal.Action{hal.ToHost(hal.ReasonAction)}}))
	back := udpFrame(macVM2, macVM1, "192.0.2.2", "192.0.2.1", 2000, 1000)
	vm2.send(t, back, back)
	got = readExc(t, n, 2, wait)
	if len(got) != 2 {
		t.Fatalf("%d to_host frames reached the host, want 2", len(got))
	}
	checkExc(t, got[0], 2, hal.ReasonAction, 42, back, "to_host")
	if extra := vm1.recv(t, 1, 300*time.Millisecond, hasMagic); len(extra) != 0 {
		t.Errorf("a to_host frame was forwarded too")
	}

	// A short buffer gets the frame's head.
	vm1.send(t, miss)
	short := []hal.Exception{{Buf: make([]byte, 40)}}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	k, err := n.ReadExceptions(ctx, short)
	cancel()
	if err != nil || k != 1 || !short[0].Truncated || short[0].Len != 40 || !bytes.Equal(short[0].Frame(), miss[:40]) {
		t.Errorf("a 40-byte buffer: %d, %v, %+v", k, err, short[0])
	}

	// The uplink's ARP goes to the kernel, which answers it.
	up1.send(t, arpRequest(hal.MustMAC("02:4e:50:00:00:a2"), underlayRemote, underlayLocal))
	isReply := func(b []byte) bool {
		return len(b) >= 42 && binary.BigEndian.Uint16(b[12:]) == hal.EtherTypeARP && binary.BigEndian.Uint16(b[20:]) == 2
	}
	if rep := up1.recv(t, 1, wait, isReply); len(rep) != 1 {
		t.Errorf("the kernel did not answer ARP on the uplink: the miss path took it")
	}

	// Counters: 3 misses + 1 truncated, 1 fragment, 2 to_host.
	st, err := n.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Exceptions[hal.ReasonMiss] != 4 || st.Exceptions[hal.ReasonFragment] != 1 || st.Exceptions[hal.ReasonAction] != 2 {
		t.Errorf("Stats.Exceptions miss %d fragment %d action %d; want 4, 1, 2", st.Exceptions[hal.ReasonMiss], st.Exceptions[hal.ReasonFragment], st.Exceptions[hal.ReasonAction])
	}
	for port, want := range map[hal.PortID]uint64{1: 4, 2: 2, 3: 1} {
		pc, err := n.PortCounters(context.Background(), port)
		if err != nil || pc.Exceptions != want {
			t.Errorf("port %d: %d exceptions, %v; want %d", port, pc.Exceptions, err, want)
		}
	}

	// Inject still sends out of a port.
	if err := n.Inject(context.Background(), 2, [][]byte{miss}); err != nil {
		t.Fatalf("Inject: %v", err)
	}
	if rx := vm2.recv(t, 1, wait, hasMagic); len(rx) != 1 || !bytes.Equal(rx[0].data, miss) {
		t.Errorf("injected frame on vm2: %+v", rx)
	}
	if got := readExc(t, n, 1, 300*time.Millisecond); len(got) != 0 {
		t.Errorf("an injected frame came back on the exception path")
	}

	// Close unblocks a reader and deletes the channel.
	done := make(chan error, 1)
	go func() {
		_, err := n.ReadExceptions(context.Background(), newBatch(1, 2048))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, hal.ErrClosed) {
			t.Errorf("a reader blocked across Close: %v, want ErrClosed", err)
		}
	case <-time.After(wait):
		t.Errorf("a reader blocked across Close did not return")
	}
	if out := tp.ns.ip("link", "show"); strings.Contains(out, channel) {
		t.Errorf("Close left the channel behind:\n%s", out)
	}
	if left := tp.leftovers(t); left != "" {
		t.Errorf("Close left qdiscs behind:\n%s", left)
	}
}

// TestKernelExceptionPathAcrossScopes checks the jump budget: a miss that
// walks every scope to the miss chain, and a to_host rule in the last
// scope, still reach the host.
func TestKernelExceptionPathAcrossScopes(t *testing.T) {
	requireKernel(t)
	tp := newTopology(t)
	n := tp.open(t, PlaceAny)
	ctx := context.Background()
	for s := 1; s <= maxScopes; s++ {
		if err := n.Activate(ctx, hal.Scope(s), 1); err != nil {
			t.Fatal(err)
		}
	}
	var m hal.Match
	m.InPort(1).IPDst(netip.MustParsePrefix("192.0.2.77/32"))
	apply(t, n, hal.AddOp(hal.Rule{ID: 7, Priority: 1, Match: m, Scope: maxScopes, Generation: 1, Actions: []hal.Action{hal.ToHost(hal.ReasonAction)}}))
	vm1 := openPacketSock(t, tp.ns, "vm1")
	host := udpFrame(macVM1, macVM2, "192.0.2.1", "192.0.2.77", 1, 2)
	miss := udpFrame(macVM1, macVM2, "192.0.2.1", "192.0.2.78", 1, 2)
	vm1.send(t, host, miss)
	got := readExc(t, n, 2, wait)
	if len(got) != 2 {
		t.Fatalf("%d of 2 frames reached the host across %d scopes", len(got), maxScopes)
	}
	checkExc(t, got[0], 1, hal.ReasonAction, 7, host, "to_host in the last scope")
	checkExc(t, got[1], 1, hal.ReasonMiss, 0, miss, "miss after the last scope")

	// A dec_ttl rule in the last scope: its own chain, then the host
	// chain, is the 16th jump, the kernel's last.
	var dm hal.Match
	dm.InPort(1).EthType(hal.EtherTypeIPv4).IPDst(netip.MustParsePrefix("192.0.2.79/32"))
	apply(t, n, hal.AddOp(hal.Rule{ID: 8, Priority: 1, Match: dm, Scope: maxScopes, Generation: 1, Actions: []hal.Action{hal.DecTTL(), hal.Output(2)}}))
	expiring := withTTL(udpFrame(macVM1, macVM2, "192.0.2.1", "192.0.2.79", 1, 2), 1)
	vm1.send(t, expiring)
	if got := readExc(t, n, 1, wait); len(got) != 1 {
		t.Errorf("an expiring TTL in the last scope did not reach the host")
	} else {
		checkExc(t, got[0], 1, hal.ReasonTTL, 8, expiring, "TTL expiry in the last scope")
	}
}

// withTTL returns f (Ethernet/IPv4) with its TTL set and the header
// checksum fixed.
func withTTL(f []byte, ttl byte) []byte {
	g := append([]byte(nil), f...)
	ip := g[14:34]
	ip[8] = ttl
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	return g
}

func TestKernelDecTTL(t *testing.T) {
	requireKernel(t)
	tp := newTopology(t)
	n := tp.open(t, PlaceAny)
	if c := n.Capabilities(); !c.HasAction(hal.ActionDecTTL) {
		t.Fatalf("dec_ttl not advertised with pedit, csum and an exception path:\n%s", c.String())
	}
	vm1, vm2 := openPacketSock(t, tp.ns, "vm1"), openPacketSock(t, tp.ns, "vm2")
	var m hal.Match
	m.InPort(1).EthType(hal.EtherTypeIPv4)
	r := hal.Rule{ID: 5, Priority: 10, Match: m, Actions: []hal.Action{hal.DecTTL(), hal.Output(2)}}
	apply(t, n, hal.AddOp(r))
	f := udpFrame(macVM1, macVM2, "192.0.2.1", "192.0.2.2", 1, 2)
	vm1.send(t, f)
	got := vm2.recv(t, 1, wait, hasMagic)
	if len(got) != 1 {
		t.Fatal("the dec_ttl rule did not forward")
	}
	if want := withTTL(f, 63); !bytes.Equal(got[0].data, want) {
		t.Errorf("forwarded frame:\n got % x\nwant % x (TTL 63, checksum fixed)", got[0].data, want)
	}
	for _, ttl := range []byte{1, 0} {
		exp := withTTL(f, ttl)
		vm1.send(t, exp)
		if rx := vm2.recv(t, 1, 300*time.Millisecond, hasMagic); len(rx) != 0 {
			t.Errorf("a frame with TTL %d was forwarded", ttl)
		}
		if xs := readExc(t, n, 1, wait); len(xs) != 1 {
			t.Errorf("a frame with TTL %d did not reach the host", ttl)
		} else {
			checkExc(t, xs[0], 1, hal.ReasonTTL, 5, exp, fmt.Sprintf("TTL %d", ttl))
		}
	}
	st, err := n.Stats(context.Background())
	if err != nil || st.Exceptions[hal.ReasonTTL] != 2 {
		t.Errorf("Stats.Exceptions[ttl] = %d, %v; want 2", st.Exceptions[hal.ReasonTTL], err)
	}
	if d := dumpAll(t, n); d[5].Counters.Packets != 3 {
		t.Errorf("the dec_ttl rule counted %d packets, want 3 (expired ones included)", d[5].Counters.Packets)
	}
	// Modified to a plain forward, the frame keeps its TTL; deleted, it
	// misses.
	r.Actions = []hal.Action{hal.Output(2)}
	apply(t, n, hal.ModifyOp(r))
	vm1.send(t, withTTL(f, 1))
	if got := vm2.recv(t, 1, wait, hasMagic); len(got) != 1 || !bytes.Equal(got[0].data, withTTL(f, 1)) {
		t.Errorf("after the modify: %+v", got)
	}
	r.Actions = []hal.Action{hal.DecTTL(), hal.Output(2)}
	apply(t, n, hal.ModifyOp(r))
	apply(t, n, hal.DeleteOp(5))
	vm1.send(t, f)
	if xs := readExc(t, n, 1, wait); len(xs) != 1 || xs[0].Reason != hal.ReasonMiss {
		t.Errorf("after the delete: %+v, want a miss", xs)
	}
	out, _ := tp.ns.tc("filter", "show", "block", itoa(n.Block()))
	t.Logf("filters left:\n%s", out)
}

package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
)

var (
	errGwMAC     = hal.MAC{2, 0, 0, 0, 0, 8}
	errRouterMAC = hal.MAC{2, 0, 0, 0, 0, 9}
	errVMMAC     = hal.MAC{2, 0, 0, 0xb, 0, 1}
)

// errBed is a gateway on softnic serving one VM (10.0.0.10 and
// 2001:db8:a::10 on host-a) whose tenant routes everything to it; the
// external network is 203.0.113.0/24 or 2001:db8:e::/64, the router .254
// (::fe) is a static neighbour.
type errBed struct {
	t         *testing.T
	nic       *softnic.NIC
	g         *Gateway
	v6        bool
	vm, gw    netip.Addr
	router    netip.Addr
	remote    netip.Addr
	hostPA    netip.Addr
	gatewayPA netip.Addr
}

func newErrBed(t *testing.T, v6 bool) *errBed {
	t.Helper()
	e := &errBed{t: t, v6: v6, hostPA: netip.MustParseAddr("198.18.0.1"), gatewayPA: netip.MustParseAddr("198.18.0.100")}
	st := e.state(policy.DefaultRouterMAC)
	var err error
	addr := netip.MustParsePrefix("203.0.113.1/24")
	e.vm, e.router, e.remote = netip.MustParseAddr("10.0.0.10"), netip.MustParseAddr("203.0.113.254"), netip.MustParseAddr("198.51.100.10")
	if v6 {
		addr = netip.MustParsePrefix("2001:db8:e::1/64")
		e.vm, e.router, e.remote = netip.MustParseAddr("2001:db8:a::10"), netip.MustParseAddr("2001:db8:e::fe"), netip.MustParseAddr("2001:db8:f::10")
	}
	e.gw = addr.Addr()
	e.nic, err = softnic.New(softnic.Config{Ports: []softnic.PortConfig{
		{Name: "ext", Kind: hal.PortVPort, MAC: errGwMAC},
		{Name: "uplink", Kind: hal.PortUplink, MAC: hal.MAC{2, 0, 0, 0, 0, 7}, MTU: 1600}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.nic.Close() })
	e.g, err = New(Config{NIC: e.nic, State: st, Name: "gw", Uplink: 2, External: 1, Address: addr, Router: e.router,
		Neighbors: map[netip.Addr]hal.MAC{e.router: errRouterMAC}})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// state is errBed's policy with router MAC rm.
func (e *errBed) state(rm policy.MAC) *policy.State {
	e.t.Helper()
	b := policy.NewBuilder()
	b.SetRouterMAC(rm)
	b.AddHost(policy.Host{Name: "host-a", PA: e.hostPA})
	b.AddGateway(policy.Gateway{Name: "gw", PA: e.gatewayPA})
	b.AddTenant(policy.Tenant{Name: "blue"})
	b.AddVNET(policy.VNET{Tenant: "blue", Name: "web", VNI: 1001, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("2001:db8:a::/64")}})
	b.AddVM(policy.VM{Name: "vm", Tenant: "blue", VNET: "web", MAC: policy.MAC(errVMMAC),
		CAs: []netip.Addr{netip.MustParseAddr("10.0.0.10"), netip.MustParseAddr("2001:db8:a::10")}, Host: "host-a"})
	for _, p := range []string{"0.0.0.0/0", "::/0"} {
		b.AddRoute(policy.Route{Tenant: "blue", Prefix: netip.MustParsePrefix(p), NextHop: policy.NextHop{Kind: policy.NextHopGateway, Gateway: "gw"}})
	}
	st, err := b.Build()
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

// send hands one frame to the gateway as the NIC's exception path would
// and returns what left on port out.
func (e *errBed) send(in hal.PortID, frame []byte, out hal.PortID) [][]byte {
	e.t.Helper()
	buf := make([]byte, 4096)
	n := copy(buf, frame)
	if err := e.g.HandleBatch(context.Background(), []hal.Exception{{InPort: in, Buf: buf, Len: n}}); err != nil {
		e.t.Fatal(err)
	}
	var got [][]byte
	for _, p := range []hal.PortID{1, 2} {
		port, _ := e.nic.Port(p)
		bufs, sizes := [][]byte{make([]byte, 4096), make([]byte, 4096)}, []int{0, 0}
		m, _ := port.Recv(bufs, sizes)
		if p == out {
			for i := range m {
				got = append(got, bufs[i][:sizes[i]])
			}
		}
	}
	return got
}

// fromVM is the VM's packet to the remote host, encapsulated by its host.
func (e *errBed) fromVM(spec wire.FrameSpec) (inner, frame []byte) {
	spec.SrcMAC, spec.DstMAC, spec.Src, spec.Dst = errVMMAC, hal.MAC(policy.DefaultRouterMAC), e.vm, e.remote
	inner = wire.Build(spec)
	return inner, wire.BuildEncap(&hal.Encap{Kind: hal.EncapVXLAN, VNI: 1001, Src: e.hostPA, Dst: e.gatewayPA}, inner)
}

// icmpError builds an ICMP error from src to the gateway quoting packet
// quote (an IP packet), with typ/code and the 4 bytes after the checksum
// (the MTU of a "fragmentation needed" / "packet too big").
func (e *errBed) icmpError(src netip.Addr, typ, code uint8, mtu uint32, quote []byte) []byte {
	proto := uint8(hal.ProtoICMP)
	if e.v6 {
		proto = hal.ProtoICMPv6
	}
	f := wire.Build(wire.FrameSpec{SrcMAC: errRouterMAC, DstMAC: errGwMAC, Src: src, Dst: e.gw, Proto: proto,
		ICMPType: typ, ICMPCode: code, Payload: quote})
	var k hal.FlowKey
	var l wire.Layout
	if err := wire.Parse(f, 1, &k, &l); err != nil {
		e.t.Fatal(err)
	}
	m := f[l.L4:l.End]
	binary.BigEndian.PutUint32(m[4:8], mtu)
	setICMPChecksum(f, &l)
	return f
}

func setICMPChecksum(f []byte, l *wire.Layout) {
	m := f[l.L4:l.End]
	binary.BigEndian.PutUint16(m[2:], 0)
	var init uint32
	if l.EthType == hal.EtherTypeIPv6 {
		init = wire.PseudoHeaderSum(f[l.L3+8:l.L3+24], f[l.L3+24:l.L3+40], hal.ProtoICMPv6, len(m))
	}
	binary.BigEndian.PutUint16(m[2:], wire.Checksum(m, init))
}

// TestICMPErrorTranslated: a router's "fragmentation needed" (ICMPv6
// "packet too big") about a translated TCP segment, and the remote host's
// "port unreachable" about a translated UDP datagram, reach the VM's host
// encapsulated, addressed to the VM and quoting the VM's own packet (as the
// VM sent it, but for the hop the gateway took off its TTL): quoted source
// address and port back to the VM's, quoted IP header checksum, quoted
// transport checksum and the error's own checksum right; the MTU announced
// unchanged.
func TestICMPErrorTranslated(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		name := "ipv4"
		if v6 {
			name = "ipv6"
		}
		t.Run(name, func(t *testing.T) {
			e := newErrBed(t, v6)
			tooBig, tooBigCode, unreach, unreachCode := uint8(3), uint8(4), uint8(3), uint8(3)
			if v6 {
				tooBig, tooBigCode, unreach, unreachCode = 2, 0, 1, 4
			}
			for _, c := range []struct {
				spec      wire.FrameSpec
				from      netip.Addr
				typ, code uint8
				mtu       uint32
			}{
				{wire.FrameSpec{Proto: hal.ProtoTCP, SrcPort: 40000, DstPort: 80, DontFragment: true, Payload: bytes.Repeat([]byte("x"), 1200)}, e.router, tooBig, tooBigCode, 1280},
				{wire.FrameSpec{Proto: hal.ProtoUDP, SrcPort: 40001, DstPort: 9, Payload: []byte("anyone?")}, e.remote, unreach, unreachCode, 0},
			} {
				orig, frame := e.fromVM(c.spec)
				out := e.send(2, frame, 1)
				if len(out) != 1 {
					t.Fatalf("the VM's packet left the external port %d times", len(out))
				}
				sent := out[0][14:] // the translated IP packet as the router got it
				var sk hal.FlowKey
				var sl wire.Layout
				if err := wire.Parse(out[0], 1, &sk, &sl); err != nil || sk.Src() != e.gw {
					t.Fatalf("translated packet: %v %+v", err, sk)
				}
				quote := sent
				if max := 548; !v6 && len(quote) > max {
					quote = quote[:max]
				} else if v6 && len(quote) > 1232 {
					quote = quote[:1232]
				}
				back := e.send(1, e.icmpError(c.from, c.typ, c.code, c.mtu, quote), 2)
				if len(back) != 1 {
					t.Fatalf("the error reached the uplink %d times; drops %v", len(back), e.g.Stats().Drops)
				}
				var k hal.FlowKey
				var l wire.Layout
				if err := wire.Parse(back[0], 2, &k, &l); err != nil {
					t.Fatal(err)
				}
				if !l.Tunnelled() || k.VNI != 1001 || hal.AddrFrom16(k.TunDst) != e.hostPA || hal.AddrFrom16(k.TunSrc) != e.gatewayPA {
					t.Fatalf("not encapsulated toward the VM's host: %+v", k)
				}
				if k.Dst() != e.vm || k.Src() != c.from || k.EthDst != errVMMAC || uint8(k.L4Src) != c.typ || uint8(k.L4Dst) != c.code {
					t.Fatalf("error %+v: want %s > %s type %d code %d to the VM's MAC", k, c.from, e.vm, c.typ, c.code)
				}
				ip := back[0][l.L3:l.End]
				m := back[0][l.L4:l.End]
				var init uint32
				if v6 {
					init = wire.PseudoHeaderSum(ip[8:24], ip[24:40], hal.ProtoICMPv6, len(m))
				} else if wire.Checksum(ip[:20], 0) != 0 {
					t.Fatal("outer IPv4 header checksum wrong")
				}
				if wire.Checksum(m, init) != 0 {
					t.Fatal("the error's checksum is wrong")
				}
				if got := binary.BigEndian.Uint32(m[4:8]); got != c.mtu {
					t.Fatalf("announced MTU %d, want %d", got, c.mtu)
				}
				// The quote is the VM's packet but for the TTL (one hop
				// taken) and so the IPv4 header checksum.
				q := append([]byte(nil), m[8:]...)
				want := append([]byte(nil), orig[14:14+len(q)]...)
				if v6 {
					want[7]--
				} else {
					if wire.Checksum(q[:20], 0) != 0 {
						t.Fatal("quoted IPv4 header checksum wrong")
					}
					want[8]--
					copy(want[10:12], q[10:12])
				}
				if !bytes.Equal(q, want) {
					t.Fatalf("quoted packet:\n got %x\nwant %x", q[:48], want[:48])
				}
			}
			if s := e.g.Stats(); s.ICMPErrors != 2 {
				t.Fatalf("ICMPErrors %d, want 2", s.ICMPErrors)
			}
		})
	}
}

// TestICMPErrorRefused: errors that name no connection, or quote a
// non-first fragment, are dropped and counted under their own reasons; a
// non-first fragment from a tenant is dropped, counted and explained.
func TestICMPErrorRefused(t *testing.T) {
	e := newErrBed(t, false)
	// About a connection that does not exist.
	stray := wire.Build(wire.FrameSpec{Src: e.gw, Dst: e.remote, Proto: hal.ProtoUDP, SrcPort: 20000, DstPort: 9})[14:]
	if out := e.send(1, e.icmpError(e.remote, 3, 3, 0, stray), 2); len(out) != 0 {
		t.Fatal("an error about no connection went to the uplink")
	}
	// About a non-first fragment.
	frag := wire.Build(wire.FrameSpec{Src: e.gw, Dst: e.remote, Proto: hal.ProtoUDP, FragOffset: 100, Payload: make([]byte, 16)})[14:]
	e.send(1, e.icmpError(e.router, 3, 4, 1280, frag), 2)
	// Quoting too little.
	e.send(1, e.icmpError(e.router, 3, 4, 1280, stray[:20]), 2)
	// A non-first fragment from the tenant.
	_, later := e.fromVM(wire.FrameSpec{Proto: hal.ProtoUDP, FragOffset: 185, Payload: make([]byte, 64)})
	if out := e.send(2, later, 1); len(out) != 0 {
		t.Fatal("a non-first fragment left the external port")
	}
	d := e.g.Stats().Drops
	for _, r := range []string{"icmp-error-no-connection", "icmp-error-fragment", "icmp-error-short", "non-first-fragment"} {
		if d[r] != 1 {
			t.Errorf("drops[%s] = %d, want 1 (%v)", r, d[r], d)
		}
	}
	x := e.g.Explain(2, later)
	if !strings.Contains(x.String(), "non-first fragment") || !strings.HasPrefix(x.Verdict, "drop (non-first-fragment)") {
		t.Errorf("explain of a non-first fragment:\n%s", x)
	}
}

// TestICMPErrorFromTenant: an ICMP error the VM sends about a packet of a
// translated connection it received (a port unreachable about the remote
// host's datagram) leaves the external port from the gateway's address,
// quoting the datagram as the remote host sent it (to the gateway's
// address and external port), every checksum right.
func TestICMPErrorFromTenant(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		name := "ipv4"
		if v6 {
			name = "ipv6"
		}
		t.Run(name, func(t *testing.T) {
			e := newErrBed(t, v6)
			// Port 1000 is outside the external range: the gateway takes
			// another, so the quote's port must be rewritten too.
			_, frame := e.fromVM(wire.FrameSpec{Proto: hal.ProtoUDP, SrcPort: 1000, DstPort: 53, Payload: []byte("q")})
			out := e.send(2, frame, 1)
			if len(out) != 1 {
				t.Fatalf("%d frames out", len(out))
			}
			var sk hal.FlowKey
			var sl wire.Layout
			if err := wire.Parse(out[0], 1, &sk, &sl); err != nil || sk.L4Src == 1000 {
				t.Fatalf("translated: %+v %v", sk, err)
			}
			answer := wire.Build(wire.FrameSpec{SrcMAC: errRouterMAC, DstMAC: errGwMAC, Src: e.remote, Dst: e.gw,
				Proto: hal.ProtoUDP, SrcPort: 53, DstPort: sk.L4Src, Payload: []byte("an answer the VM does not want")})
			back := e.send(1, answer, 2)
			if len(back) != 1 {
				t.Fatalf("the answer reached the uplink %d times", len(back))
			}
			var bk hal.FlowKey
			var bl wire.Layout
			if err := wire.Parse(back[0], 2, &bk, &bl); err != nil {
				t.Fatal(err)
			}
			got := back[0][bl.L3:bl.End] // the answer as the VM got it
			proto, typ, code := uint8(hal.ProtoICMP), uint8(3), uint8(3)
			if v6 {
				proto, typ, code = hal.ProtoICMPv6, 1, 4
			}
			inner := wire.Build(wire.FrameSpec{SrcMAC: errVMMAC, DstMAC: hal.MAC(policy.DefaultRouterMAC), Src: e.vm, Dst: e.remote,
				Proto: proto, ICMPType: typ, ICMPCode: code, Payload: got})
			var il wire.Layout
			var ik hal.FlowKey
			if err := wire.Parse(inner, 0, &ik, &il); err != nil {
				t.Fatal(err)
			}
			binary.BigEndian.PutUint32(inner[il.L4+4:], 0) // unused
			setICMPChecksum(inner, &il)
			errFrame := wire.BuildEncap(&hal.Encap{Kind: hal.EncapVXLAN, VNI: 1001, Src: e.hostPA, Dst: e.gatewayPA}, inner)
			if x := e.g.Explain(2, errFrame); x.Verdict != "icmp-error" || !strings.Contains(x.String(), "from the VM about connection") {
				t.Fatalf("explain:\n%s", x)
			}
			ext := e.send(2, errFrame, 1)
			if len(ext) != 1 {
				t.Fatalf("the VM's error left the external port %d times; drops %v", len(ext), e.g.Stats().Drops)
			}
			var k hal.FlowKey
			var l wire.Layout
			if err := wire.Parse(ext[0], 1, &k, &l); err != nil {
				t.Fatal(err)
			}
			if k.Src() != e.gw || k.Dst() != e.remote || k.EthSrc != errGwMAC || k.EthDst != errRouterMAC || uint8(k.L4Src) != typ {
				t.Fatalf("error left as %+v", k)
			}
			ip := ext[0][l.L3:l.End]
			m := ext[0][l.L4:l.End]
			var init uint32
			if v6 {
				init = wire.PseudoHeaderSum(ip[8:24], ip[24:40], hal.ProtoICMPv6, len(m))
			} else if wire.Checksum(ip[:20], 0) != 0 {
				t.Fatal("IPv4 header checksum wrong")
			}
			if wire.Checksum(m, init) != 0 {
				t.Fatal("the error's checksum is wrong")
			}
			// The quote is the answer as the remote host sent it, but for
			// the gateway's hop (TTL) and so the IPv4 header checksum.
			q := append([]byte(nil), m[8:]...)
			want := append([]byte(nil), answer[14:]...)
			if v6 {
				want[7]--
			} else {
				if wire.Checksum(q[:20], 0) != 0 {
					t.Fatal("quoted IPv4 header checksum wrong")
				}
				want[8]--
				copy(want[10:12], q[10:12])
			}
			if !bytes.Equal(q, want) {
				t.Fatalf("quoted packet:\n got %x\nwant %x", q, want)
			}
		})
	}
}

// TestSharedActionsFollowUpdate: connections that rewrite no port share
// their action lists; a new policy (here a new router MAC, the source of
// answers toward the VMs) makes the next connection's lists again.
func TestSharedActionsFollowUpdate(t *testing.T) {
	e := newErrBed(t, false)
	newRouter := policy.MAC{2, 0, 0, 0, 0xee, 1}
	for i, rm := range []policy.MAC{policy.DefaultRouterMAC, newRouter} {
		if i == 1 {
			if err := e.g.Update(context.Background(), e.state(newRouter)); err != nil {
				t.Fatal(err)
			}
		}
		port := uint16(40000 + i) // in the range: kept, no rewrite
		_, frame := e.fromVM(wire.FrameSpec{Proto: hal.ProtoUDP, SrcPort: port, DstPort: 53})
		out := e.send(2, frame, 1)
		var k hal.FlowKey
		var l wire.Layout
		if len(out) != 1 || wire.Parse(out[0], 1, &k, &l) != nil || k.L4Src != port {
			t.Fatalf("connection %d left as %+v", i, k)
		}
		answer := wire.Build(wire.FrameSpec{SrcMAC: errRouterMAC, DstMAC: errGwMAC, Src: e.remote, Dst: e.gw,
			Proto: hal.ProtoUDP, SrcPort: 53, DstPort: port})
		back := e.send(1, answer, 2)
		if len(back) != 1 || wire.Parse(back[0], 2, &k, &l) != nil {
			t.Fatalf("answer %d: %d frames", i, len(back))
		}
		if k.EthSrc != hal.MAC(rm) {
			t.Fatalf("answer %d reached the VM from %s, want the policy's router MAC %s", i, k.EthSrc, hal.MAC(rm))
		}
	}
}

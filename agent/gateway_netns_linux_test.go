//go:build linux

package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/control"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/internal/nsexec"
	"github.com/nicpath/nicpath/policy"
)

// gwBed is the namespace topology of TestGatewayNamespaces:
//
//	vm-blue (10.0.0.10) ── host-a ─┐
//	                               ├─ router (the underlay, 198.18.0.0/15) ── gw ── ext (203.0.113.10)
//	vm-red  (10.0.0.10) ── host-b ─┘
//
// host-a and host-b run the agent with the vswitch, gw the agent as the
// shared gateway (softnic on AF_PACKET everywhere); the router is the
// kernel forwarding between the uplinks; ext is a plain namespace, the
// non-virtualized host.
type gwBed struct {
	t      *testing.T
	prefix string
	dir    string
	// v6 gives the VMs and the external host IPv6 addresses too
	// (2001:db8:a::10 in both tenants, 2001:db8:e::10 outside), with no
	// static neighbour on the external network.
	v6 bool
	// mid puts a router between the gateway and the external host: the
	// gateway's external network is 203.0.113.0/24 (2001:db8:e::/64) with
	// the router at .254 (::fe), the host is 198.51.100.10
	// (2001:db8:f::10) beyond it, across a link of MTU 1280.
	mid bool
}

func (b *gwBed) ns(name string) string   { return b.prefix + "-" + name }
func (b *gwBed) path(name string) string { return "/run/netns/" + b.ns(name) }

func (b *gwBed) run(args ...string) {
	b.t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		b.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (b *gwBed) ip(args ...string) { b.t.Helper(); b.run(append([]string{"ip"}, args...)...) }

var (
	routerMACs = map[string]hal.MAC{"host-a": hal.MustMAC("02:72:00:00:00:0a"), "host-b": hal.MustMAC("02:72:00:00:00:0b"), "gw": hal.MustMAC("02:72:00:00:00:01")}
	upMACs     = map[string]hal.MAC{"host-a": hal.MustMAC("02:75:00:00:00:0a"), "host-b": hal.MustMAC("02:75:00:00:00:0b"), "gw": hal.MustMAC("02:75:00:00:00:01")}
	pas        = map[string]string{"host-a": "198.18.0.1", "host-b": "198.18.0.2", "gw": "198.18.0.100"}
	gwExtMAC   = hal.MustMAC("02:65:00:00:00:01")
	extHostMAC = hal.MustMAC("02:65:00:00:00:10")
)

func nsGatewayPolicy(t *testing.T) []byte { return nsGatewayPolicyWith(t, false) }

// nsGatewayPolicyWith is nsGatewayPolicy; with v6 both tenants' VNETs also
// have 2001:db8:a::/64 (the VMs 2001:db8:a::10) and both route
// 2001:db8:e::/64 to the shared gateway.
func nsGatewayPolicyWith(t *testing.T, v6 bool) []byte { return nsGatewayPolicyMid(t, v6, false) }

// nsGatewayPolicyMid is nsGatewayPolicyWith; with mid both tenants also
// route the network beyond the router (198.51.100.0/24, with v6 also
// 2001:db8:f::/64) to the shared gateway.
func nsGatewayPolicyMid(t *testing.T, v6, mid bool) []byte {
	t.Helper()
	p := netip.MustParsePrefix
	b := policy.NewBuilder()
	b.AddHost(policy.Host{Name: "host-a", PA: netip.MustParseAddr(pas["host-a"])})
	b.AddHost(policy.Host{Name: "host-b", PA: netip.MustParseAddr(pas["host-b"])})
	b.AddGateway(policy.Gateway{Name: "gw-shared", PA: netip.MustParseAddr(pas["gw"])})
	for i, tn := range []string{"blue", "red"} {
		b.AddTenant(policy.Tenant{Name: tn})
		subnets, cas := []netip.Prefix{p("10.0.0.0/24")}, []netip.Addr{netip.MustParseAddr("10.0.0.10")}
		if v6 {
			subnets, cas = append(subnets, p("2001:db8:a::/64")), append(cas, netip.MustParseAddr("2001:db8:a::10"))
			b.AddRoute(policy.Route{Tenant: tn, Prefix: p("2001:db8:e::/64"), NextHop: policy.NextHop{Kind: policy.NextHopGateway, Gateway: "gw-shared"}})
		}
		beyond := []netip.Prefix{p("198.51.100.0/24")}
		if v6 {
			beyond = append(beyond, p("2001:db8:f::/64"))
		}
		for _, pr := range beyond {
			if mid {
				b.AddRoute(policy.Route{Tenant: tn, Prefix: pr, NextHop: policy.NextHop{Kind: policy.NextHopGateway, Gateway: "gw-shared"}})
			}
		}
		b.AddVNET(policy.VNET{Tenant: tn, Name: "web", VNI: uint32(1001 + 1000*i), Subnets: subnets})
		b.AddVM(policy.VM{Name: tn + "-web-1", Tenant: tn, VNET: "web", MAC: policy.MAC{2, 0, 0, byte(0xb + i), 0, 1},
			CAs: cas, Host: []string{"host-a", "host-b"}[i]})
	}
	b.AddGatewayRule(policy.GatewayRule{Tenant: "blue", Name: "storage", Prefix: p("192.0.2.0/24"), Gateway: "gw-shared", NAT: p("203.0.113.0/24")})
	b.AddRoute(policy.Route{Tenant: "red", Prefix: p("203.0.113.0/24"), NextHop: policy.NextHop{Kind: policy.NextHopGateway, Gateway: "gw-shared"}})
	st, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	out, err := policy.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (b *gwBed) build() {
	t := b.t
	names := []string{"router", "host-a", "host-b", "gw", "ext", "vm-blue", "vm-red"}
	if b.mid {
		names = append(names, "mid")
	}
	for _, n := range names {
		b.ip("netns", "add", b.ns(n))
		name := b.ns(n)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
		b.ip("-n", b.ns(n), "link", "set", "lo", "up")
	}
	r := b.ns("router")
	for _, sc := range [][]string{{"net.ipv4.ip_forward=1"}, {"net.ipv4.conf.all.rp_filter=0"}, {"net.ipv4.conf.default.rp_filter=0"}} {
		b.run(append([]string{"ip", "netns", "exec", r, "sysctl", "-qw"}, sc...)...)
	}
	for _, h := range []string{"host-a", "host-b", "gw"} {
		rif := "r-" + strings.TrimPrefix(h, "host-")
		b.ip("-n", r, "link", "add", rif, "address", routerMACs[h].String(), "type", "veth", "peer", "name", "up0",
			"address", upMACs[h].String(), "netns", b.ns(h))
		b.ip("-n", r, "link", "set", rif, "up")
		b.ip("-n", b.ns(h), "link", "set", "up0", "up")
		b.ip("-n", r, "addr", "replace", "198.18.1.1/32", "dev", rif)
		b.ip("-n", r, "route", "replace", pas[h]+"/32", "dev", rif)
		b.ip("-n", r, "neigh", "replace", pas[h], "lladdr", upMACs[h].String(), "dev", rif, "nud", "permanent")
	}
	for i, vm := range []string{"blue", "red"} {
		host := []string{"host-a", "host-b"}[i]
		vns := b.ns("vm-" + vm)
		b.ip("-n", b.ns(host), "link", "add", "vm-"+vm, "type", "veth", "peer", "name", "eth0", "netns", vns)
		b.ip("-n", b.ns(host), "link", "set", "vm-"+vm, "mtu", "1450", "up")
		b.ip("-n", vns, "link", "set", "eth0", "address", hal.MAC{2, 0, 0, byte(0xb + i), 0, 1}.String(), "mtu", "1450", "up")
		b.ip("-n", vns, "addr", "replace", "10.0.0.10/24", "dev", "eth0")
		b.ip("-n", vns, "neigh", "replace", "10.0.0.1", "lladdr", hal.MAC(policy.DefaultRouterMAC).String(), "dev", "eth0", "nud", "permanent")
		b.ip("-n", vns, "route", "replace", "default", "via", "10.0.0.1", "dev", "eth0")
		if b.v6 {
			b.ip("-n", vns, "addr", "replace", "2001:db8:a::10/64", "dev", "eth0", "nodad")
			b.ip("-n", vns, "neigh", "replace", "2001:db8:a::1", "lladdr", hal.MAC(policy.DefaultRouterMAC).String(), "dev", "eth0", "nud", "permanent")
			b.ip("-n", vns, "-6", "route", "replace", "default", "via", "2001:db8:a::1", "dev", "eth0")
		}
	}
	if b.mid {
		b.buildMid()
		return
	}
	b.ip("-n", b.ns("gw"), "link", "add", "ext0", "address", gwExtMAC.String(), "type", "veth", "peer", "name", "eth0",
		"address", extHostMAC.String(), "netns", b.ns("ext"))
	b.ip("-n", b.ns("gw"), "link", "set", "ext0", "up")
	b.ip("-n", b.ns("ext"), "link", "set", "eth0", "up")
	b.ip("-n", b.ns("ext"), "addr", "replace", "203.0.113.10/24", "dev", "eth0")
	if b.v6 {
		// No static neighbour on either side of the external network: the
		// host and the gateway find each other by neighbour discovery.
		b.ip("-n", b.ns("ext"), "addr", "replace", "2001:db8:e::10/64", "dev", "eth0", "nodad")
	}
}

// buildMid is build's external side with a router between the gateway
// and the host.
func (b *gwBed) buildMid() {
	m := b.ns("mid")
	for _, sc := range []string{"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"} {
		b.run("ip", "netns", "exec", m, "sysctl", "-qw", sc)
	}
	b.ip("-n", b.ns("gw"), "link", "add", "ext0", "address", gwExtMAC.String(), "type", "veth", "peer", "name", "eth0",
		"address", extHostMAC.String(), "netns", m)
	b.ip("-n", b.ns("gw"), "link", "set", "ext0", "up")
	b.ip("-n", m, "link", "set", "eth0", "up")
	b.ip("-n", m, "addr", "replace", "203.0.113.254/24", "dev", "eth0")
	b.ip("-n", m, "addr", "replace", "2001:db8:e::fe/64", "dev", "eth0", "nodad")
	// The narrow link: the router's side has MTU 1280, the host's 1500, so
	// that the host's MSS does not hide it from the VMs.
	b.ip("-n", m, "link", "add", "eth1", "mtu", "1280", "type", "veth", "peer", "name", "eth0", "netns", b.ns("ext"))
	b.ip("-n", m, "link", "set", "eth1", "up")
	b.ip("-n", b.ns("ext"), "link", "set", "eth0", "up")
	b.ip("-n", m, "addr", "replace", "198.51.100.1/24", "dev", "eth1")
	b.ip("-n", m, "addr", "replace", "2001:db8:f::1/64", "dev", "eth1", "nodad")
	b.ip("-n", b.ns("ext"), "addr", "replace", "198.51.100.10/24", "dev", "eth0")
	b.ip("-n", b.ns("ext"), "addr", "replace", "2001:db8:f::10/64", "dev", "eth0", "nodad")
	b.ip("-n", b.ns("ext"), "route", "replace", "default", "via", "198.51.100.1", "dev", "eth0")
	b.ip("-n", b.ns("ext"), "-6", "route", "replace", "default", "via", "2001:db8:f::1", "dev", "eth0")
}

// xdpPass attaches an XDP_PASS program to dev in namespace ns, for as long
// as the namespace lives.
func (b *gwBed) xdpPass(ns, dev string) {
	b.t.Helper()
	err := nsexec.Do(b.path(ns), func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "MIT",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}}) // XDP_PASS
		if err != nil {
			return err
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifi.Index})
		if err != nil {
			prog.Close()
			return err
		}
		b.t.Cleanup(func() { l.Close(); prog.Close() })
		return nil
	})
	if err != nil {
		b.t.Fatalf("XDP_PASS on %s in %s: %v", dev, ns, err)
	}
}

// start builds the bed, writes policy into its directory and runs on it
// the hosts' agents (blue-web-1 on host-a's vm-blue, red-web-1 on
// host-b's vm-red) and the gateway gw on gwDriver with the configuration's
// gateway section gwSection, until the test's cleanup; it returns the
// context they run in and the gateway.
func (b *gwBed) start(gwDriver string, policy []byte, gwSection string) (context.Context, *GatewayAgent) {
	t := b.t
	t.Helper()
	b.build()
	if gwDriver == "xdp" {
		// The gateway's XDP program sends by redirect into its veths: their
		// far ends (the router's, and the external host's or the middle
		// router's) take such frames only with NAPI on, which an XDP_PASS
		// program turns on.
		b.xdpPass("router", "r-gw")
		if b.mid {
			b.xdpPass("mid", "eth0")
		} else {
			b.xdpPass("ext", "eth0")
		}
	}
	if err := os.WriteFile(filepath.Join(b.dir, "policy.yaml"), policy, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for _, h := range []struct{ host, vm, iface string }{{"host-a", "blue-web-1", "vm-blue"}, {"host-b", "red-web-1", "vm-red"}} {
		a, err := New(ctx, b.config(h.host, fmt.Sprintf("ports:\n  %s: %s\n", h.vm, h.iface)))
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); a.Run(ctx); a.Close() }()
	}
	gwCfg := b.config("gw", gwSection)
	gwCfg.Driver = gwDriver
	if gwDriver != "softnic" {
		gwCfg.Binding = ""
	}
	gw, err := NewGateway(ctx, gwCfg)
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); gw.Run(ctx); gw.Close() }()
	return ctx, gw
}

func (b *gwBed) config(host, body string) *Config {
	b.t.Helper()
	doc := fmt.Sprintf("host: %s\ndriver: softnic\npolicy: policy.yaml\nuplink: up0\nnetns: %s\nnext_hop_mac: %s\ncontrol: %s\nlog_level: warn\n%s",
		host, b.path(host), routerMACs[host], filepath.Join(b.dir, host+".sock"), body)
	p := filepath.Join(b.dir, host+".yaml")
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		b.t.Fatal(err)
	}
	c, err := LoadConfig(p)
	if err != nil {
		b.t.Fatalf("%s:\n%s\n%v", host, doc, err)
	}
	return c
}

// servers runs services in namespace ns on address addr: UDP echo on
// port 7 and a TCP service on port 80 that sends back the SHA-256 of what
// it received. Every UDP peer address is recorded.
func (b *gwBed) servers(ctx context.Context, ns, addr string) (peers func() []netip.AddrPort) {
	b.t.Helper()
	var pc net.PacketConn
	var ln net.Listener
	err := nsexec.Do(b.path(ns), func() (err error) {
		if pc, err = net.ListenPacket("udp", net.JoinHostPort(addr, "7")); err != nil {
			return err
		}
		ln, err = net.Listen("tcp", net.JoinHostPort(addr, "80"))
		return err
	})
	if err != nil {
		b.t.Fatal(err)
	}
	context.AfterFunc(ctx, func() { pc.Close(); ln.Close() })
	var mu sync.Mutex
	var seen []netip.AddrPort
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			seen = append(seen, from.(*net.UDPAddr).AddrPort())
			mu.Unlock()
			pc.WriteTo(append([]byte("echo "), buf[:n]...), from)
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				h := sha256.New()
				io.Copy(h, c)
				c.Write(h.Sum(nil))
			}()
		}
	}()
	return func() []netip.AddrPort {
		mu.Lock()
		defer mu.Unlock()
		return append([]netip.AddrPort(nil), seen...)
	}
}

// TestGatewayNamespaces: a plain namespace (the non-virtualized host) and
// VMs of two tenants whose addresses overlap exchange ping, UDP and TCP
// through the shared gateway, each tenant's answers reaching its own VM;
// the UDP and TCP connections end up on the gateway's NIC.
func TestGatewayNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: network namespaces need root")
	}
	for _, drv := range []string{"softnic", "xdp"} {
		t.Run("gateway on "+drv, func(t *testing.T) { testGatewayNamespaces(t, drv) })
	}
}

func testGatewayNamespaces(t *testing.T, gwDriver string) {
	b := &gwBed{t: t, prefix: fmt.Sprintf("npgw%s%d", gwDriver[:1], os.Getpid()%100000), dir: t.TempDir()}
	ctx, gw := b.start(gwDriver, nsGatewayPolicy(t), "gateway:\n  name: gw-shared\n  external: ext0\n  address: 203.0.113.1/24\n"+
		"  publish:\n    203.0.113.21: blue/10.0.0.10\n    203.0.113.22: red/10.0.0.10\n")
	peers := b.servers(ctx, "ext", "203.0.113.10")

	// ping: blue addresses the host as 192.0.2.10 (its gateway rule), red
	// as 203.0.113.10.
	dst := map[string]string{"blue": "192.0.2.10", "red": "203.0.113.10"}
	for _, vm := range []string{"blue", "red"} {
		b.pingFrom("vm-"+vm, dst[vm])
	}

	// UDP from the same address and port in both tenants.
	for _, vm := range []string{"blue", "red"} {
		c := b.dialUDP("vm-"+vm, "udp4", netip.MustParseAddrPort("10.0.0.10:40000"), netip.AddrPortFrom(netip.MustParseAddr(dst[vm]), 7))
		echoes(t, c, vm+" 0", vm+" 1", vm+" 2")
		c.Close()
	}
	ps := peers()
	ports := map[uint16]bool{}
	for _, p := range ps {
		if p.Addr() != netip.MustParseAddr("203.0.113.1") {
			t.Fatalf("the external host saw a datagram from %s: not the gateway's address", p)
		}
		ports[p.Port()] = true
	}
	if len(ports) != 2 {
		t.Fatalf("the two tenants' datagrams (same address and port inside) came from ports %v: want one each", ports)
	}

	// TCP: a megabyte each way through the gateway, every byte checked.
	for _, vm := range []string{"blue", "red"} {
		b.tcpDigest("vm-"+vm, "tcp4", dst[vm]+":80", repeat(vm+" through the gateway ", 1<<20), 20*time.Second, "")
	}

	// The other way: the non-virtualized host opens ping, UDP and TCP to
	// each tenant's VM through its published address; the VM sees the
	// host as its tenant addresses it.
	published := map[string]string{"blue": "203.0.113.21", "red": "203.0.113.22"}
	vmPeers := map[string]func() []netip.AddrPort{}
	for _, vm := range []string{"blue", "red"} {
		vmPeers[vm] = b.servers(ctx, "vm-"+vm, "10.0.0.10")
	}
	for _, vm := range []string{"blue", "red"} {
		b.pingFrom("ext", published[vm])
		c := b.dialUDP("ext", "udp4", netip.AddrPort{}, netip.AddrPortFrom(netip.MustParseAddr(published[vm]), 7))
		echoes(t, c, "to "+vm)
		c.Close()
		if ps := vmPeers[vm](); len(ps) != 1 || ps[0].Addr() != netip.MustParseAddr(dst[vm]) {
			t.Fatalf("%s's VM saw the external host as %v, want %s", vm, ps, dst[vm])
		}
		b.tcpDigest("ext", "tcp4", published[vm]+":80", repeat("to "+vm+" from outside ", 1<<19), 20*time.Second, "")
	}

	st := b.gatewayStatus(ctx)
	t.Logf("vswitchctl gateway:\n%s", st.Text)
	tenants := map[string]int{}
	for _, c := range st.Connections {
		tenants[c.Tenant]++
		if c.Proto != hal.ProtoICMP && c.Where != "nic" {
			t.Errorf("connection %+v is not on the gateway's NIC", c)
		}
	}
	if st.Offloaded < 8 || st.Inbound < 6 || tenants["blue"] < 6 || tenants["red"] < 6 {
		t.Fatalf("want each tenant's ping, UDP and TCP tracked both ways and UDP and TCP offloaded: %+v", st)
	}
	var hits uint64
	gw.NIC().Dump(ctx, func(ri *hal.RuleInfo) error { hits += ri.Counters.Packets; return nil })
	if hits == 0 {
		t.Fatal("the gateway's rules counted no packet: everything went through its host")
	}
}

// pingReceived reads how many replies ping's summary counts. The tests
// send 5 and want at least 3: under load a first echo may wait out the
// gateway's next-hop resolution, and ping's deadline is only a bound.
func pingReceived(out string) int {
	m := regexp.MustCompile(`(\d+) (packets )?received`).FindStringSubmatch(out)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// rawExchange sends frame out of dev in namespace ns on an AF_PACKET
// socket, as it is (a station on dev's link that the namespace's kernel is
// not), and waits up to 30s for a frame on dev that answer accepts.
func (b *gwBed) rawExchange(ns, dev string, frame []byte, answer func([]byte) bool) {
	b.t.Helper()
	var fd int
	var ifindex int
	err := nsexec.Do(b.path(ns), func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		ifindex = ifi.Index
		all := int(htons(unix.ETH_P_ALL))
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, all); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
			unix.Close(fd)
			return err
		}
		return nil
	})
	if err != nil {
		b.t.Fatalf("a raw socket on %s in %s: %v", dev, ns, err)
	}
	defer unix.Close(fd)
	if err := unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifindex, Halen: 6}); err != nil {
		b.t.Fatalf("a raw frame out of %s in %s: %v", dev, ns, err)
	}
	tv := unix.NsecToTimeval(int64(time.Second))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		b.t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == nil && answer(buf[:n]) {
			return
		}
	}
	b.t.Fatalf("no answer on %s in %s within 30s to the frame %x", dev, ns, frame)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// pingFrom pings dst from namespace ns (5 echoes; at least 3 must come
// back, see pingReceived) and fails the test otherwise.
func (b *gwBed) pingFrom(ns, dst string) {
	b.t.Helper()
	args := []string{"ip", "netns", "exec", b.ns(ns), "ping"}
	if netip.MustParseAddr(dst).Is6() {
		args = append(args, "-6")
	}
	args = append(args, "-c", "5", "-i", "0.2", "-W", "5", dst)
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil || pingReceived(string(out)) < 3 {
		b.t.Fatalf("ping from %s to %s: %v\n%s", ns, dst, err, out)
	}
}

// dialUDP opens a UDP socket in namespace ns from local (any when
// invalid) to remote.
func (b *gwBed) dialUDP(ns, network string, local, remote netip.AddrPort) *net.UDPConn {
	b.t.Helper()
	var laddr *net.UDPAddr
	if local.IsValid() {
		laddr = net.UDPAddrFromAddrPort(local)
	}
	var c *net.UDPConn
	if err := nsexec.Do(b.path(ns), func() (err error) {
		c, err = net.DialUDP(network, laddr, net.UDPAddrFromAddrPort(remote))
		return err
	}); err != nil {
		b.t.Fatalf("UDP from %s to %s: %v", ns, remote, err)
	}
	return c
}

// echoes sends each message on c and wants "echo " and it back within 10s.
func echoes(t *testing.T, c *net.UDPConn, msgs ...string) {
	t.Helper()
	buf := make([]byte, 2048)
	for _, msg := range msgs {
		c.Write([]byte(msg))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != "echo "+msg {
			t.Fatalf("UDP %s to %s: got %q, %v", msg, c.RemoteAddr(), buf[:n], err)
		}
	}
}

// refused sends datagrams on c, to a port nothing serves, until the port
// unreachable that comes back surfaces as ECONNREFUSED (up to 5, 2s each:
// the first may wait out a resolution on the way); it returns the last
// read's error, ECONNREFUSED when it came.
func refused(c *net.UDPConn) error {
	var err error
	buf := make([]byte, 64)
	for range 5 {
		c.Write([]byte("anyone?"))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err = c.Read(buf); errors.Is(err, syscall.ECONNREFUSED) {
			return err
		}
	}
	return err
}

// tcpDigest connects from namespace ns to addr (one of the servers'
// TCP services), sends data within timeout and fails the test unless the
// SHA-256 of data comes back; what says what the transfer is for.
func (b *gwBed) tcpDigest(ns, network, addr string, data []byte, timeout time.Duration, what string) {
	b.t.Helper()
	var c net.Conn
	if err := nsexec.Do(b.path(ns), func() (err error) {
		c, err = net.DialTimeout(network, addr, 5*time.Second)
		return err
	}); err != nil {
		b.t.Fatalf("TCP from %s to %s: %v", ns, addr, err)
	}
	c.SetDeadline(time.Now().Add(timeout))
	go func() { c.Write(data); c.(*net.TCPConn).CloseWrite() }()
	got, err := io.ReadAll(c)
	c.Close()
	if want := sha256.Sum256(data); err != nil || !bytes.Equal(got, want[:]) {
		b.t.Fatalf("TCP from %s to %s%s: digest %x (%v), want %x", ns, addr, what, got, err, want)
	}
}

// repeat is s repeated to about n bytes.
func repeat(s string, n int) []byte { return bytes.Repeat([]byte(s), n/len(s)) }

// gatewayStatus is the gateway's answer to "gateway" on its control
// socket (what vswitchctl gateway prints).
func (b *gwBed) gatewayStatus(ctx context.Context) control.GatewayStatus {
	b.t.Helper()
	var st control.GatewayStatus
	if err := (&control.Client{Path: filepath.Join(b.dir, "gw.sock"), Timeout: 10 * time.Second}).Call(ctx, "gateway", nil, &st); err != nil {
		b.t.Fatal(err)
	}
	return st
}

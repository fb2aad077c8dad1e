package agent

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nicpath/nicpath/control"
	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/gateway"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
)

const goodGatewayConfig = `host: gw-1
driver: softnic
policy: policy.yaml
uplink: up0
control: /run/nicpath/gw.sock
gateway:
  name: gw-shared
  external: ext0
  address: 203.0.113.1/24
  router: 203.0.113.254
  ports: 30000-30999
  idle: 30s
  neighbors:
    203.0.113.10: 02:00:00:00:fe:10
  publish:
    203.0.113.21: blue/10.0.0.10
`

func TestParseGatewayConfig(t *testing.T) {
	c, err := ParseConfig("/etc/nicpath/gw.yaml", []byte(goodGatewayConfig))
	if err != nil {
		t.Fatal(err)
	}
	g := c.Gateway
	if g == nil || g.Name != "gw-shared" || g.External != "ext0" || g.Address != netip.MustParsePrefix("203.0.113.1/24") ||
		g.Router != netip.MustParseAddr("203.0.113.254") || g.PortLo != 30000 || g.PortHi != 30999 || g.Idle != 30*time.Second ||
		g.Neighbors[netip.MustParseAddr("203.0.113.10")] != hal.MustMAC("02:00:00:00:fe:10") ||
		g.Publish[netip.MustParseAddr("203.0.113.21")] != (gateway.Target{Tenant: "blue", CA: netip.MustParseAddr("10.0.0.10")}) {
		t.Fatalf("%+v", g)
	}
}

// Every mistake in a gateway section is refused with the file, the line and
// the field, and no configuration comes back.
func TestGatewayConfigRefused(t *testing.T) {
	for _, tc := range []struct {
		name, from, to string
		line           int
		field, msg     string
	}{
		{"no name", "  name: gw-shared\n", "", 6, "gateway.name", "missing"},
		{"no external", "  external: ext0\n", "", 6, "gateway.external", "missing"},
		{"network address", "203.0.113.1/24", "203.0.113.0/24", 9, "gateway.address", "with its network's prefix"},
		{"not a prefix", "203.0.113.1/24", "203.0.113.1", 9, "gateway.address", "with its network's prefix"},
		{"router off the network", "router: 203.0.113.254", "router: 198.51.100.1", 10, "gateway.router", "not on the external network"},
		{"bad ports", "30000-30999", "30999-30000", 11, "gateway.ports", "range of ports"},
		{"bad idle", "idle: 30s", "idle: soon", 12, "gateway.idle", "not a duration"},
		{"bad neighbor MAC", "02:00:00:00:fe:10", "02:00", 14, "gateway.neighbors.203.0.113.10", "not a MAC"},
		{"unknown field", "  idle: 30s\n", "  idle: 30s\n  nat: yes\n", 13, "gateway.nat", "unknown field"},
		{"publish without a tenant", "blue/10.0.0.10", "10.0.0.10", 16, "gateway.publish.203.0.113.21", "want tenant/address"},
		{"publish off the network", "203.0.113.21: blue", "198.51.100.21: blue", 15, "gateway.publish.198.51.100.21", "not an address of the external network"},
		{"publish the gateway's own address", "203.0.113.21: blue", "203.0.113.1: blue", 15, "gateway.publish.203.0.113.1", "apart from the gateway's"},
		{"external is the uplink", "external: ext0", "external: up0", 6, "gateway.external", "is the uplink"},
		{"VM ports on a gateway", "control:", "ports:\n  vm: tap0\ncontrol:", 5, "ports", "no VM ports"},
		{"a store", "policy: policy.yaml", "store: etcd://192.0.2.1:2379/n/", 3, "store", "policy file"},
		{"flow_idle", "control:", "flow_idle: 30s\ncontrol:", 5, "flow_idle", "not for a gateway host"},
		{"not a mapping", goodGatewayConfig[strings.Index(goodGatewayConfig, "gateway:"):], "gateway: gw-shared\n", 6, "gateway", "want a mapping"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(goodGatewayConfig, tc.from, tc.to, 1)
			if doc == goodGatewayConfig {
				t.Fatalf("the case changes nothing")
			}
			c, err := ParseConfig("gw.yaml", []byte(doc))
			if c != nil || err == nil {
				t.Fatalf("accepted:\n%s", doc)
			}
			var list ConfigErrors
			if !errors.As(err, &list) {
				t.Fatalf("%T %v", err, err)
			}
			for _, e := range list {
				if e.File == "gw.yaml" && e.Line == tc.line && e.Field == tc.field && strings.Contains(e.Msg, tc.msg) {
					return
				}
			}
			t.Fatalf("want gw.yaml:%d: %s: …%s…, got\n%v", tc.line, tc.field, tc.msg, err)
		})
	}
}

func gatewayPolicy(t *testing.T, withGateway bool) []byte {
	t.Helper()
	b := policy.NewBuilder()
	b.AddHost(policy.Host{Name: "host-a", PA: netip.MustParseAddr("198.18.0.1")})
	b.AddTenant(policy.Tenant{Name: "blue"})
	b.AddVNET(policy.VNET{Tenant: "blue", Name: "web", VNI: 1001, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}})
	b.AddVM(policy.VM{Name: "blue-web-1", Tenant: "blue", VNET: "web", MAC: policy.MAC{2, 0, 0, 0xb, 0, 1},
		CAs: []netip.Addr{netip.MustParseAddr("10.0.0.10")}, Host: "host-a"})
	if withGateway {
		b.AddGateway(policy.Gateway{Name: "gw-shared", PA: netip.MustParseAddr("198.18.0.100")})
		b.AddRoute(policy.Route{Tenant: "blue", Prefix: netip.MustParsePrefix("203.0.113.0/24"),
			NextHop: policy.NextHop{Kind: policy.NextHopGateway, Gateway: "gw-shared"}})
	}
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

// A gateway host on an unbound softnic: a tenant frame through it, its
// status over the control socket, and a policy without its gateway refused
// with the configuration's file, line and field, the gateway unchanged.
func TestGatewayAgent(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(pol, gatewayPolicy(t, true), 0o644); err != nil {
		t.Fatal(err)
	}
	doc := strings.Replace(goodGatewayConfig, "/run/nicpath/gw.sock", filepath.Join(dir, "gw.sock"), 1)
	doc = strings.Replace(doc, "driver: softnic\n", "driver: softnic\nbinding: none\nwatch_interval: 1h\n", 1) + "metrics: 127.0.0.1:0\n"
	cfgPath := filepath.Join(dir, "gw.yaml")
	cfg, err := ParseConfig(cfgPath, []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	// A published address whose tenant the policy lacks: refused at the
	// publish line, nothing started.
	bad, err := ParseConfig(cfgPath, []byte(strings.Replace(doc, "blue/10.0.0.10", "red/10.0.0.10", 1)))
	if err != nil {
		t.Fatal(err)
	}
	var list ConfigErrors
	if _, err := NewGateway(context.Background(), bad); !errors.As(err, &list) || list[0].Line != 18 || list[0].Field != "gateway.publish.203.0.113.21" {
		t.Fatalf("red published without a red tenant: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "gw.sock")); err == nil {
		t.Fatal("a refused configuration left a control socket")
	}
	ctx, a, stop := runGatewayAgent(t, cfg)
	nic := a.NIC().(*softnic.NIC)
	up, _ := nic.Port(2)
	ext, _ := nic.Port(1)
	if _, err := up.Send([][]byte{blueToRemote(nic)}); err != nil {
		t.Fatal(err)
	}
	bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, _ := ext.Recv(bufs, sizes)
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("nothing left on the external port")
		}
		time.Sleep(5 * time.Millisecond)
	}
	var k hal.FlowKey
	var l wire.Layout
	if err := wire.Parse(bufs[0][:sizes[0]], 0, &k, &l); err != nil || k.Src() != netip.MustParseAddr("203.0.113.1") || k.L4Src < 30000 || k.L4Src > 30999 {
		t.Fatalf("left as %+v (%v)", k, err)
	}

	cl := &control.Client{Path: filepath.Join(dir, "gw.sock")}
	var st control.GatewayStatus
	if err := cl.Call(ctx, "gateway", nil, &st); err != nil {
		t.Fatal(err)
	}
	if st.Name != "gw-shared" || st.Conns != 1 || len(st.Connections) != 1 || st.Connections[0].VM != "blue-web-1" ||
		!strings.Contains(st.Text, "tenant blue vm blue-web-1: 10.0.0.10:5000 > 203.0.113.10:53") {
		t.Fatalf("%+v\n%s", st, st.Text)
	}

	// The metrics endpoint has the gateway's counters and the NIC's ports.
	resp, err := http.Get("http://" + a.ep.metricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"nicpath_gateway_connections 1\n",
		`nicpath_gateway_connections_created_total{opened_by="tenant"} 1` + "\n",
		`nicpath_gateway_connections_placed_total{where="nic"} 1` + "\n",
		"nicpath_gateway_host_packets_total 1\n",
		`nicpath_gateway_neighbor_messages_total{message="arp_request"} 0` + "\n",
		"nicpath_gateway_icmp_errors_total 0\n",
		`nicpath_port_packets_total{direction="tx",port="ext0"} 1` + "\n",
		`nicpath_port_packets_total{direction="rx",port="up0"} 1` + "\n",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}

	// A policy without the gateway: refused, nothing applied.
	if err := os.WriteFile(pol, gatewayPolicy(t, false), 0o644); err != nil {
		t.Fatal(err)
	}
	changed, err := a.Reload(ctx)
	if changed || !errors.As(err, &list) || list[0].File != cfgPath || list[0].Line != 9 || list[0].Field != "gateway.name" {
		t.Fatalf("reload: changed %v, %v", changed, err)
	}
	if got := a.Gateway().Stats().Conns; got != 1 {
		t.Fatalf("the refused policy changed the gateway: %d connections", got)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// runGatewayAgent starts a gateway host on cfg, running until stop (or
// the test's end); stop returns what Run returned.
func runGatewayAgent(t *testing.T, cfg *Config) (ctx context.Context, a *GatewayAgent, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a, err := NewGateway(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() { cancel(); runErr = <-done; a.Close() })
		return runErr
	}
	t.Cleanup(func() { stop() })
	return ctx, a, stop
}

// blueToRemote is blue-web-1's UDP datagram 10.0.0.10:5000 > 203.0.113.10:53
// as host-a's tunnel brings it to the gateway's uplink (port 2 of nic).
func blueToRemote(nic *softnic.NIC) []byte {
	inner := wire.Build(wire.FrameSpec{SrcMAC: hal.MAC{2, 0, 0, 0xb, 0, 1}, DstMAC: hal.MAC(policy.DefaultRouterMAC),
		Src: netip.MustParseAddr("10.0.0.10"), Dst: netip.MustParseAddr("203.0.113.10"), Proto: hal.ProtoUDP, SrcPort: 5000, DstPort: 53})
	return wire.BuildEncap(&hal.Encap{Kind: hal.EncapVXLAN, VNI: 1001, Src: netip.MustParseAddr("198.18.0.1"),
		Dst: netip.MustParseAddr("198.18.0.100"), SrcMAC: hal.MAC{2, 0, 0, 0, 0, 1}, DstMAC: nic.Ports()[1].MAC}, inner)
}

// The gateway section's fields and its mappings (neighbors, publish) name
// the entry's field, its line and column in every error, as the
// configuration's own mapping fields do.
func TestGatewayConfigMappings(t *testing.T) {
	for _, tc := range []struct {
		name, from, to, want string
		col                  int // of the first error
	}{
		{"not a mapping", goodGatewayConfig[strings.Index(goodGatewayConfig, "gateway:"):], "gateway: [gw]\n",
			"gw.yaml:6: gateway: want a mapping (name, external, address, …)", 10},
		{"field twice", "  idle: 30s\n", "  idle: 30s\n  name: gw-2\n", "gw.yaml:13: gateway.name: given twice (first on line 7)", 3},
		{"unknown field", "  idle: 30s\n", "  idle: 30s\n  nat: yes\n",
			"gw.yaml:13: gateway.nat: unknown field (known: name, external, address, router, external_mac, ports, idle, neighbors, neighbor_refresh, publish)", 3},
		{"neighbors not a mapping", "  neighbors:\n    203.0.113.10: 02:00:00:00:fe:10\n", "  neighbors: [203.0.113.10]\n",
			"gw.yaml:13: gateway.neighbors: want a mapping of address to MAC", 14},
		{"neighbor not an address", "203.0.113.10: 02", "gw-1: 02", "gw.yaml:14: gateway.neighbors.gw-1: not an address", 5},
		{"neighbor MAC not a string", "203.0.113.10: 02:00:00:00:fe:10", "203.0.113.10: [02]",
			"gw.yaml:14: gateway.neighbors.203.0.113.10: want a string", 19},
		{"publish not a mapping", "  publish:\n    203.0.113.21: blue/10.0.0.10\n", "  publish: blue/10.0.0.10\n",
			"gw.yaml:15: gateway.publish: want a mapping of address to tenant/address", 12},
		{"published not an address", "203.0.113.21: blue", "web: blue", "gw.yaml:16: gateway.publish.web: not an address", 5},
		{"no tenant", "blue/10.0.0.10", "/10.0.0.10",
			"gw.yaml:16: gateway.publish.203.0.113.21: want tenant/address, such as blue/10.0.0.10", 19},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(goodGatewayConfig, tc.from, tc.to, 1)
			if doc == goodGatewayConfig {
				t.Fatalf("the case changes nothing")
			}
			refusedExactly(t, "gw.yaml", doc, tc.want, tc.col)
		})
	}
}

// neighbor_refresh reaches the gateway: with 1s, a next hop learned for a
// connection is asked for again within seconds (with the gateway's
// default, a minute, not before the minute is out). Settings below a
// second, or not durations, are refused.
func TestGatewayNeighborRefreshConfig(t *testing.T) {
	for _, tc := range []struct{ value, msg string }{{"0s", "at least 1s"}, {"500ms", "at least 1s"}, {"soon", "not a duration"}, {"-1s", "not a duration"}} {
		doc := goodGatewayConfig + "  neighbor_refresh: " + tc.value + "\n"
		var list ConfigErrors
		if _, err := ParseConfig("gw.yaml", []byte(doc)); !errors.As(err, &list) || len(list) != 1 ||
			list[0].Line != 17 || list[0].Field != "gateway.neighbor_refresh" || !strings.Contains(list[0].Msg, tc.msg) {
			t.Fatalf("neighbor_refresh %s: %v, want one error at gw.yaml:17: gateway.neighbor_refresh: …%s…", tc.value, err, tc.msg)
		}
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), gatewayPolicy(t, true), 0o644); err != nil {
		t.Fatal(err)
	}
	// No static neighbour: 203.0.113.10 is learned.
	doc := strings.Replace(goodGatewayConfig, "  neighbors:\n    203.0.113.10: 02:00:00:00:fe:10\n", "", 1)
	doc = strings.Replace(doc, "/run/nicpath/gw.sock", filepath.Join(dir, "gw.sock"), 1)
	// A long idle: the gateway's housekeeping (Expire) runs as often as
	// the refresh needs, not only every quarter of the idle timeout.
	doc = strings.Replace(doc, "idle: 30s", "idle: 1h", 1)
	doc = strings.Replace(doc, "driver: softnic\n", "driver: softnic\nbinding: none\nwatch_interval: 1h\n", 1) + "  neighbor_refresh: 1s\n"
	cfg, err := ParseConfig(filepath.Join(dir, "gw.yaml"), []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Gateway.NeighborRefresh != time.Second {
		t.Fatalf("neighbor_refresh %v, want 1s", cfg.Gateway.NeighborRefresh)
	}
	_, a, _ := runGatewayAgent(t, cfg)
	nic := a.NIC().(*softnic.NIC)
	up, _ := nic.Port(2)
	ext, _ := nic.Port(1)
	extMAC := nic.Ports()[0].MAC
	remote, remoteMAC := netip.MustParseAddr("203.0.113.10"), hal.MustMAC("02:00:00:00:fe:10")
	bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
	// next returns the next frame on the external port that keep accepts,
	// waiting up to 30s.
	next := func(what string, keep func([]byte) bool) []byte {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
			if n, _ := ext.Recv(bufs, sizes); n == 1 && keep(bufs[0][:sizes[0]]) {
				return bufs[0][:sizes[0]]
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("no %s on the external port within 30s", what)
		return nil
	}
	asksRemote := func(f []byte) bool {
		op, _, _, tpa, ok := gateway.ParseARP(f)
		return ok && op == 1 && tpa == remote
	}
	if _, err := up.Send([][]byte{blueToRemote(nic)}); err != nil {
		t.Fatal(err)
	}
	next("ARP request for "+remote.String(), asksRemote)
	if _, err := ext.Send([][]byte{gateway.BuildARP(2, remoteMAC, remote, extMAC, netip.MustParseAddr("203.0.113.1"))}); err != nil {
		t.Fatal(err)
	}
	next("held datagram", func(f []byte) bool {
		var k hal.FlowKey
		var l wire.Layout
		return wire.Parse(f, 0, &k, &l) == nil && k.Proto == hal.ProtoUDP && k.EthDst == remoteMAC
	})
	learned := time.Now()
	// Not heard from since: asked for again once the second is out (the
	// connection goes through it).
	next("second ARP request for "+remote.String()+" (the refresh)", asksRemote)
	if d := time.Since(learned); d < 900*time.Millisecond {
		t.Fatalf("asked for again %v after the answer: before neighbor_refresh (1s) was out", d)
	}
}

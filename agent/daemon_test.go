package agent

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/nicpath/nicpath/control"
	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/vswitch"
)

const examplePolicy = "../examples/policies/two-tenants.yaml"

// hostAConfig is a configuration for host-a of the example policy, on an
// unbound softnic whose port far sides the test drives.
func hostAConfig(t *testing.T, dir string) string {
	t.Helper()
	pol, err := os.ReadFile(examplePolicy)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), pol, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := `host: host-a
driver: softnic
binding: none
policy: policy.yaml
uplink: up0
ports:
  blue-web-1: vm-bw1
  red-app-2: vm-ra2
  red-fw: vm-rfw
  blue-web-2: vm-bw2
control: ` + filepath.Join(dir, "ctl.sock") + `
log_level: debug
watch_interval: 20ms
`
	path := filepath.Join(dir, "vswitchd.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// running is a daemon started by a test, running until the test ends.
type running struct {
	d      *Agent
	cancel context.CancelFunc
	done   chan error
	logs   *syncBuffer
}

type syncBuffer struct {
	mu chan struct{}
	b  bytes.Buffer
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{mu: make(chan struct{}, 1)} }

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.b.String()
}

// startDaemon runs an agent on the configuration file cfgPath (and on
// nic, if not nil) until the test ends.
func startDaemon(t *testing.T, cfgPath string, nic hal.NIC) *running {
	t.Helper()
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	return startAgent(t, cfg, nic)
}

// startAgent runs an agent on cfg (and on nic, if not nil) until the test
// ends, logging at debug level into its running's logs.
func startAgent(t *testing.T, cfg *Config, nic hal.NIC) *running {
	t.Helper()
	logs := newSyncBuffer()
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var d *Agent
	var err error
	if nic != nil {
		d, err = NewWithNIC(context.Background(), nic, cfg)
	} else {
		d, err = New(context.Background(), cfg)
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{d: d, cancel: cancel, done: make(chan error, 1), logs: logs}
	go func() { r.done <- d.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

func (r *running) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	r.d.Close()
	r.cancel = nil
}

var (
	macBW1 = hal.MustMAC("02:00:00:0b:00:01")
	macBW2 = hal.MustMAC("02:00:00:0b:00:02")
	caBW1  = netip.MustParseAddr("10.0.0.10")
	caBW2  = netip.MustParseAddr("10.0.0.11")
)

func udpFrame(sport uint16) []byte {
	return wire.Build(wire.FrameSpec{SrcMAC: macBW1, DstMAC: macBW2, Src: caBW1, Dst: caBW2,
		Proto: hal.ProtoUDP, SrcPort: sport, DstPort: 53, Payload: []byte("query")})
}

// tcpFrame is a TCP segment between the same VMs: a flow of its own, where
// UDP frames with other ports share udpFrame's port-wildcard flow.
func tcpFrame(sport uint16) []byte {
	return wire.Build(wire.FrameSpec{SrcMAC: macBW1, DstMAC: macBW2, Src: caBW1, Dst: caBW2,
		Proto: hal.ProtoTCP, SrcPort: sport, DstPort: 53, Payload: []byte("query")})
}

// sctpFrame is an SCTP packet between the same VMs (IP protocol 132).
func sctpFrame(sport uint16) []byte {
	return wire.Build(wire.FrameSpec{SrcMAC: macBW1, DstMAC: macBW2, Src: caBW1, Dst: caBW2,
		Proto: 132, SrcPort: sport, DstPort: 53, Payload: []byte("query")})
}

// send has blue-web-1 send frames and waits until every one of them left
// on the uplink (encapsulated toward host-b): the daemon handles the first
// packet of a flow on its own goroutine.
func (r *running) send(t *testing.T, frames ...[]byte) [][]byte {
	t.Helper()
	vm, ok := r.d.SoftPort("blue-web-1")
	up, ok2 := r.d.SoftPort("uplink")
	if !ok || !ok2 {
		t.Fatal("no softnic ports")
	}
	var out [][]byte
	bufs := [][]byte{make([]byte, 2048)}
	sizes := []int{0}
	for _, f := range frames {
		if _, err := vm.Send([][]byte{f}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			n, err := up.Recv(bufs, sizes)
			if err != nil {
				t.Fatal(err)
			}
			if n == 1 {
				out = append(out, append([]byte(nil), bufs[0][:sizes[0]]...))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("a frame never left the uplink\nlogs:\n%s", r.logs.String())
			}
			time.Sleep(time.Millisecond)
		}
	}
	return out
}

func call(t *testing.T, r *running, cmd string, args []string, out any) error {
	t.Helper()
	c := &control.Client{Path: r.d.cfg.Control, Timeout: 5 * time.Second}
	return c.Call(context.Background(), cmd, args, out)
}

func TestDaemonOffloadsAndReportsFlows(t *testing.T) {
	r := startDaemon(t, hostAConfig(t, t.TempDir()), nil)
	out := r.send(t, udpFrame(4000), udpFrame(4000), udpFrame(4000))
	for _, f := range out {
		var k hal.FlowKey
		var l wire.Layout
		if err := wire.Parse(f, 0, &k, &l); err != nil || k.TunKind != hal.EncapVXLAN || k.VNI != 1001 ||
			hal.AddrFrom16(k.TunDst) != netip.MustParseAddr("198.18.0.2") {
			t.Fatalf("uplink frame: %v %v", k, err)
		}
	}
	if st := r.d.Switch().Stats(); st.Packets != 1 || st.FlowsNIC != 1 {
		t.Fatalf("want 1 exception and 1 flow on the NIC:\n%s", st)
	}
	if err := r.d.Switch().Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	var flows []control.Flow
	if err := call(t, r, "flows", nil, &flows); err != nil {
		t.Fatal(err)
	}
	// A port-wildcard flow (the verdict does not depend on the ports):
	// its match has no transport ports.
	if len(flows) != 1 || flows[0].Location != "nic" || flows[0].Packets != 3 || flows[0].Rule == 0 ||
		!strings.Contains(flows[0].Match, "proto=17") || strings.Contains(flows[0].Match, "l4_") || !strings.Contains(strings.Join(flows[0].Actions, ","), "vni=1001") {
		t.Fatalf("flows: %+v", flows)
	}
	flows0 := flows[0]
	if err := call(t, r, "flows", []string{"host"}, &flows); err != nil || len(flows) != 0 {
		t.Fatalf("host flows: %+v %v", flows, err)
	}
	var e control.Explanation
	if err := call(t, r, "explain", []string{"blue-web-1", "10.0.0.10", "10.0.0.11", "udp", "4000", "53"}, &e); err != nil {
		t.Fatal(err)
	}
	if e.Where != "nic" || !strings.Contains(e.Text, "VNET mapping") || !strings.Contains(e.Text, "3 packets") {
		t.Fatalf("explain:\n%s", e.Text)
	}
	// The same question by rule ID.
	var e2 control.Explanation
	if err := call(t, r, "explain", []string{strconv.FormatUint(flows0.Rule, 10)}, &e2); err != nil || e2.Where != "nic" || e2.CachedAt != flows0.Rule {
		t.Fatalf("explain %d: %+v %v", flows0.Rule, e2, err)
	}
	if err := call(t, r, "explain", []string{"999999"}, nil); err == nil {
		t.Error("explain of a rule no flow has was answered")
	}
	var show control.Show
	if err := call(t, r, "show", nil, &show); err != nil {
		t.Fatal(err)
	}
	if show.Host != "host-a" || show.Driver != "softnic" || len(show.Ports) != 5 || show.Ports[4].Name != "uplink" ||
		show.Ports[4].TxPackets != 3 {
		t.Fatalf("show: %+v", show)
	}
	var st control.Stats
	if err := call(t, r, "stats", nil, &st); err != nil || st.FlowsNIC != 1 || st.Exceptions["miss"] != 1 {
		t.Fatalf("stats: %+v %v", st, err)
	}
	var caps control.Caps
	if err := call(t, r, "caps", nil, &caps); err != nil || !strings.Contains(caps.Text, "softnic") {
		t.Fatalf("caps: %+v %v", caps, err)
	}
	for _, bad := range [][]string{{"nope"}, {"explain", "blue-web-1", "10.0.0.10"}, {"explain", "ghost", "10.0.0.10", "10.0.0.11"},
		{"activate", "blue-web-1"}, {"capture", "start", "relative.pcapng"}, {"capture", "stop"}, {"flows", "sideways"}} {
		if err := call(t, r, bad[0], bad[1:], nil); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
}

func TestMetrics(t *testing.T) {
	r := startDaemon(t, hostAConfig(t, t.TempDir()), nil)
	r.send(t, udpFrame(4000), udpFrame(4000), tcpFrame(4001))
	srv := httptest.NewServer(r.d.MetricsHandler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	for _, want := range []string{
		`nicpath_flows{location="nic"} 2`,
		`nicpath_flows{location="host"} 0`,
		`nicpath_exceptions_total{reason="miss"} 2`,
		// Each flow toward blue-web-2 has a shadow rule too: the VM has a
		// shadow location (migration to host-a) in the example policy.
		`nicpath_rule_operations_total{op="add"} 4`,
		`nicpath_flows_created_total 2`,
		`nicpath_port_packets_total{direction="tx",port="uplink"} 3`,
		`nicpath_policy_updates_total{result="rejected"} 0`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if !strings.Contains(text, `nicpath_rule_programming_seconds_count{call="apply"}`) {
		t.Errorf("no programming latency histogram")
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", text)
	}
}

// The capture is a pcapng file that gopacket reads back: the exception
// path's packets as the NIC handed them over, on the interface of their
// port, with the reason in a comment.
func TestCaptureReadsBack(t *testing.T) {
	dir := t.TempDir()
	r := startDaemon(t, hostAConfig(t, dir), nil)
	file := filepath.Join(dir, "exceptions.pcapng")
	var cs control.CaptureStatus
	if err := call(t, r, "capture", []string{"start", file}, &cs); err != nil || !cs.Active {
		t.Fatalf("capture start: %+v %v", cs, err)
	}
	if err := call(t, r, "capture", []string{"start", file}, nil); err == nil {
		t.Error("a second capture started while one runs")
	}
	r.send(t, udpFrame(5000), udpFrame(5000), tcpFrame(5001))
	if err := call(t, r, "capture", []string{"stop"}, &cs); err != nil {
		t.Fatal(err)
	}
	if cs.Packets != 2 {
		t.Fatalf("capture holds %d packets, want the 2 first packets", cs.Packets)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rd, err := pcapgo.NewNgReader(f, pcapgo.NgReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ports []uint16
	for i := 0; ; i++ {
		data, ci, err := rd.ReadPacketData()
		if err == io.EOF {
			if i != 2 {
				t.Fatalf("read %d packets, want 2", i)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		intf, err := rd.Interface(ci.InterfaceIndex)
		if err != nil || intf.Name != "blue-web-1" || intf.LinkType != layers.LinkTypeEthernet {
			t.Fatalf("packet %d on interface %+v (%v)", i, intf, err)
		}
		p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		// The UDP flow's first packet, then the TCP flow's.
		var sport, dport uint16
		if udp, _ := p.Layer(layers.LayerTypeUDP).(*layers.UDP); udp != nil && i == 0 {
			sport, dport = uint16(udp.SrcPort), uint16(udp.DstPort)
		} else if tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP); tcp != nil && i == 1 {
			sport, dport = uint16(tcp.SrcPort), uint16(tcp.DstPort)
		}
		ip4, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if ip4 == nil || ip4.SrcIP.String() != "10.0.0.10" || dport != 53 {
			t.Fatalf("packet %d: %v", i, p)
		}
		ports = append(ports, sport)
		if len(ci.AncillaryData) > 0 {
			t.Logf("ancillary %v", ci.AncillaryData)
		}
	}
	if ports[0] != 5000 || ports[1] != 5001 {
		t.Fatalf("captured source ports %v", ports)
	}
	raw, _ := os.ReadFile(file)
	if !bytes.Contains(raw, []byte("reason=miss in_port=1")) {
		t.Error("the packets' comments do not give the reason")
	}
}

// A policy file that does not load changes nothing and is reported with
// file, line and field; a good change is applied.
func TestPolicyWatch(t *testing.T) {
	dir := t.TempDir()
	r := startDaemon(t, hostAConfig(t, dir), nil)
	r.send(t, udpFrame(4000))
	polPath := filepath.Join(dir, "policy.yaml")
	good, _ := os.ReadFile(polPath)
	bad := bytes.Replace(good, []byte("vni: 1001"), []byte("vni: lots"), 1)
	if bytes.Equal(bad, good) {
		t.Fatal("the example policy changed shape; fix the test")
	}
	if err := os.WriteFile(polPath, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := r.d.Reload(context.Background())
	if err == nil {
		t.Fatal("a bad policy was accepted")
	}
	line := 1 + bytes.Count(good[:bytes.Index(good, []byte("vni: 1001"))], []byte("\n"))
	for _, want := range []string{polPath, ":" + strconv.Itoa(line) + ":", "vni"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if st := r.d.Switch().Stats(); st.Updates != 0 || st.FlowsNIC != 1 {
		t.Fatalf("a rejected policy changed the switch:\n%s", st)
	}
	rec := httptest.NewRecorder()
	r.d.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(rec.Body.String(), `nicpath_policy_updates_total{result="rejected"} 1`) {
		t.Error("the rejection is not in the metrics")
	}
	r.send(t, udpFrame(4000)) // still forwarded by the old state's flow
	// A good change: blue-web-2 moves to host-a (the shadow activated in the file).
	moved := append(append([]byte(nil), good...), []byte("\nactivations:\n  - vm: blue-web-2\n    generation: 2\n")...)
	if err := os.WriteFile(polPath, moved, 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for r.d.Switch().Stats().Updates == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the watcher never applied the change\n%s", r.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(r.logs.String(), "policy rejected") {
		t.Error("the rejected policy was not logged")
	}
	if loc, _, _, _ := r.d.State().Location("blue-web-2"); loc != "host-a" {
		t.Errorf("blue-web-2 is on %s after the activation", loc)
	}
}

// A restarted daemon on a NIC that kept its rules reconciles: the earlier
// run's rules do not stay beside the new ones, and traffic flows on.
func TestRestartReconciles(t *testing.T) {
	dir := t.TempDir()
	cfgPath := hostAConfig(t, dir)
	var pcs []softnic.PortConfig
	for _, n := range []string{"vm-bw1", "vm-bw2", "vm-ra2", "vm-rfw"} {
		pcs = append(pcs, softnic.PortConfig{Name: n, Kind: hal.PortVPort})
	}
	pcs = append(pcs, softnic.PortConfig{Name: "up0", Kind: hal.PortUplink, MTU: 1600})
	nic, err := softnic.New(softnic.Config{Ports: pcs})
	if err != nil {
		t.Fatal(err)
	}
	defer nic.Close()
	r1 := startDaemon(t, cfgPath, nic)
	r1.send(t, udpFrame(4000), tcpFrame(4001))
	r1.stop()
	// Two flows, each with its shadow rule (blue-web-2 is migrating).
	if n := countRules(t, nic); n != 4 {
		t.Fatalf("%d rules after the first run, want 4", n)
	}
	r2 := startDaemon(t, cfgPath, nic)
	r2.send(t, udpFrame(4000), tcpFrame(4001), udpFrame(4000), tcpFrame(4001))
	fs := r2.d.Switch().Flows()
	want := 0
	for _, f := range fs {
		want++
		if f.ShadowID != 0 {
			want++
		}
	}
	if n := countRules(t, nic); n != want || len(fs) != 2 {
		t.Fatalf("%d rules on the NIC for %d flows (%d rules wanted) after the restart: duplicated or lost", n, len(fs), want)
	}
	for _, f := range fs {
		if f.Path != vswitch.PathNIC {
			t.Errorf("flow %s in %s", f.Match.String(), f.Path)
		}
	}
}

func countRules(t *testing.T, nic hal.NIC) int {
	n := 0
	if err := nic.Dump(context.Background(), func(*hal.RuleInfo) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/nicpath/nicpath/agent"
	"github.com/nicpath/nicpath/control"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// startDaemon runs vswitchd's logic for host-a of the example policy on an
// unbound softnic, with its control socket in a temporary directory.
func startDaemon(t *testing.T) (*agent.Agent, string) {
	t.Helper()
	dir := t.TempDir()
	pol, err := os.ReadFile("../policies/two-tenants.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), pol, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "ctl.sock")
	cfg, err := agent.ParseConfig(filepath.Join(dir, "vswitchd.yaml"), []byte(`host: host-a
driver: softnic
binding: none
policy: policy.yaml
uplink: up0
ports: {blue-web-1: vm-bw1, red-app-2: vm-ra2, red-fw: vm-rfw, blue-web-2: vm-bw2}
control: `+sock+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	d, err := agent.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; d.Close() })
	return d, sock
}

// sendUDP has blue-web-1 send a datagram and waits for it on the uplink.
func sendUDP(t *testing.T, d *agent.Agent, sport uint16) {
	t.Helper()
	sendL4(t, d, hal.ProtoUDP, sport)
}

// sendL4 is sendUDP for another transport protocol: a TCP segment between
// the same VMs is a flow of its own, where UDP datagrams with other ports
// share the first one's port-wildcard flow.
func sendL4(t *testing.T, d *agent.Agent, proto uint8, sport uint16) {
	t.Helper()
	vm, _ := d.SoftPort("blue-web-1")
	up, _ := d.SoftPort("uplink")
	f := wire.Build(wire.FrameSpec{SrcMAC: hal.MustMAC("02:00:00:0b:00:01"), DstMAC: hal.MustMAC("02:00:00:0b:00:02"),
		Src: netip.MustParseAddr("10.0.0.10"), Dst: netip.MustParseAddr("10.0.0.11"), Proto: proto,
		SrcPort: sport, DstPort: 53, Payload: []byte("query")})
	if _, err := vm.Send([][]byte{f}); err != nil {
		t.Fatal(err)
	}
	bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
	for deadline := time.Now().Add(30 * time.Second); ; {
		if n, _ := up.Recv(bufs, sizes); n == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the datagram never left the uplink")
		}
		time.Sleep(time.Millisecond)
	}
}

func ctl(t *testing.T, sock string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), append([]string{"-s", sock}, args...), &out, &errb)
	return out.String(), errb.String(), code
}

func TestSession(t *testing.T) {
	d, sock := startDaemon(t)
	dir := filepath.Dir(sock)

	out, errs, code := ctl(t, sock, "show")
	if code != 0 || !strings.Contains(out, "host host-a (PA 198.18.0.1), driver softnic") ||
		!strings.Contains(out, "blue-web-1") || !strings.Contains(out, "uplink") {
		t.Fatalf("show (%d): %s%s", code, out, errs)
	}
	out, _, code = ctl(t, sock, "caps")
	if code != 0 || !strings.Contains(out, "softnic") {
		t.Fatalf("caps (%d): %s", code, out)
	}
	out, _, _ = ctl(t, sock, "flows")
	if strings.TrimSpace(out) != "no flows" {
		t.Fatalf("flows before traffic: %s", out)
	}

	capFile := filepath.Join(dir, "exc.pcapng")
	out, errs, code = ctl(t, sock, "capture", "start", capFile)
	if code != 0 || !strings.Contains(out, "capturing the exception path to "+capFile) {
		t.Fatalf("capture start (%d): %s%s", code, out, errs)
	}
	for i := 0; i < 4; i++ {
		sendUDP(t, d, 7000)
	}
	sendL4(t, d, hal.ProtoTCP, 7001)
	out, _, code = ctl(t, sock, "capture", "stop")
	if code != 0 || !strings.Contains(out, "capture stopped: 2 packets") {
		t.Fatalf("capture stop (%d): %s", code, out)
	}
	readCapture(t, capFile, 2)

	if err := d.Switch().Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	out, _, code = ctl(t, sock, "flows", "--nic")
	if code != 0 || strings.Count(out, "where=nic") != 2 || !strings.Contains(out, "packets=4,") ||
		!strings.Contains(out, ",proto=17 actions=") || !strings.Contains(out, "encap(vxlan vni=1001") {
		t.Fatalf("flows --nic (%d):\n%s", code, out)
	}
	out, _, _ = ctl(t, sock, "flows", "--host")
	if strings.TrimSpace(out) != "no flows" {
		t.Fatalf("flows --host:\n%s", out)
	}
	out, _, code = ctl(t, sock, "explain", "blue-web-1", "10.0.0.10", "10.0.0.11", "udp", "7000", "53")
	if code != 0 || !strings.Contains(out, "Handled: NIC") || !strings.Contains(out, "VNET mapping: vni 1001 10.0.0.11") ||
		!strings.Contains(out, "4 packets") {
		t.Fatalf("explain (%d):\n%s", code, out)
	}
	// A packet no flow exists for: where its first packet would go.
	out, _, code = ctl(t, sock, "explain", "red-app-2", "10.0.0.11", "10.0.0.10", "tcp", "40000", "22")
	if code != 0 || !strings.Contains(out, "vni 2001") || !strings.Contains(out, "none yet") {
		t.Fatalf("explain red (%d):\n%s", code, out)
	}
	out, _, code = ctl(t, sock, "explain", "uplink", "2001", "198.18.0.2", "10.0.0.10", "10.0.0.11", "tcp", "22", "40000")
	if code != 0 || !strings.Contains(out, "from uplink: vxlan vni 2001") {
		t.Fatalf("explain uplink (%d):\n%s", code, out)
	}
	out, _, code = ctl(t, sock, "stats")
	if code != 0 || !strings.Contains(out, "flows: 2 on the NIC, 0 in the host") {
		t.Fatalf("stats (%d):\n%s", code, out)
	}
	out, _, code = ctl(t, sock, "-json", "stats")
	if code != 0 || !strings.Contains(out, `"flows_nic":2`) {
		t.Fatalf("stats -json (%d):\n%s", code, out)
	}
	// blue-web-2 migrates to host-a: its shadow becomes live here.
	out, errs, code = ctl(t, sock, "activate", "blue-web-2")
	if code != 0 || !strings.Contains(out, "activated") {
		t.Fatalf("activate (%d): %s%s", code, out, errs)
	}
	out, _, code = ctl(t, sock, "explain", "blue-web-1", "10.0.0.10", "10.0.0.11", "udp", "7000", "53")
	if code != 0 || strings.Contains(out, "encapsulate") || !strings.Contains(out, "on host-a") {
		t.Fatalf("after the activation blue-web-2 should be local:\n%s", out)
	}
	out, _, code = ctl(t, sock, "reload")
	if code != 0 || !strings.Contains(out, "policy unchanged") {
		t.Fatalf("reload (%d): %s", code, out)
	}
	// Commands the daemon refuses exit 1 with its reason.
	_, errs, code = ctl(t, sock, "activate", "red-fw")
	if code != 1 || !strings.Contains(errs, "no shadow") {
		t.Fatalf("activate red-fw (%d): %s", code, errs)
	}
	_, errs, code = ctl(t, sock, "capture", "stop")
	if code != 1 || !strings.Contains(errs, "no capture") {
		t.Fatalf("capture stop without capture (%d): %s", code, errs)
	}
}

func readCapture(t *testing.T, file string, want int) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewNgReader(f, pcapgo.NgReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		data, _, err := r.ReadPacketData()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		if p.Layer(layers.LayerTypeIPv4) == nil || (p.Layer(layers.LayerTypeUDP) == nil && p.Layer(layers.LayerTypeTCP) == nil) {
			t.Fatalf("captured packet %d does not decode as UDP or TCP: %v", n, p)
		}
		n++
	}
	if n != want {
		t.Fatalf("%d packets in the capture, want %d", n, want)
	}
}

// Wrong arguments print the usage and exit 2, without calling the daemon.
func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{}, {"bogus"}, {"show", "extra"}, {"flows", "--all"}, {"explain"}, {"explain", "vm", "10.0.0.1"},
		{"explain", "uplink", "1001"}, {"activate"}, {"activate", "a", "b"}, {"capture"}, {"capture", "start"},
		{"capture", "pause"}, {"-x", "show"},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), append([]string{"-s", "/nonexistent/ctl.sock"}, args...), &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), "usage: vswitchctl") || out.Len() != 0 {
			t.Errorf("%q: exit %d, stderr %q", args, code, errb.String())
		}
	}
}

// A daemon that is not there is an error (exit 1) that names the socket.
func TestNoDaemon(t *testing.T) {
	var out, errb bytes.Buffer
	sock := filepath.Join(t.TempDir(), "none.sock")
	if code := run(context.Background(), []string{"-s", sock, "show"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), sock) {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
}

// show says where the state comes from: a policy file, or a store with its
// revision, and loudly when the store is out of reach.
func TestPrintShowStore(t *testing.T) {
	at := time.Date(2026, 11, 24, 5, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	printShow(&b, control.Show{Host: "host-a", PolicyFile: "/etc/nicpath/policy.yaml", PolicyLoad: at})
	if !strings.Contains(b.String(), "policy /etc/nicpath/policy.yaml, loaded 2026-11-24T05:00:00Z") || strings.Contains(b.String(), "store") {
		t.Fatalf("file:\n%s", b.String())
	}
	b.Reset()
	printShow(&b, control.Show{Host: "host-a", PolicyLoad: at, Store: &control.StoreStatus{Spec: "etcd://192.0.2.1:2379/nicpath/",
		Revision: 42, Stale: true, StaleSince: at, Resyncs: 3, Error: "store: unavailable"}})
	for _, want := range []string{"store etcd://192.0.2.1:2379/nicpath/, revision 42 applied 2026-11-24T05:00:00Z, 3 resyncs",
		"STALE: the store is unreachable since 2026-11-24T05:00:00Z; forwarding on revision 42", "last store problem: store: unavailable"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("store show lacks %q:\n%s", want, b.String())
		}
	}
}

// A policy file the daemon refused stays refused for vswitchctl: reload
// exits 1 with file:line: field every time (it used to say "policy
// unchanged" and exit 0 the second time, or the first when the daemon's
// watcher had seen the file), show says so, until a good file is back.
func TestReloadRejectedPolicy(t *testing.T) {
	for _, watcherFirst := range []bool{false, true} {
		t.Run(map[bool]string{false: "reload twice", true: "watcher then reload"}[watcherFirst], func(t *testing.T) {
			d, sock := startDaemon(t)
			polPath := filepath.Join(filepath.Dir(sock), "policy.yaml")
			good, err := os.ReadFile(polPath)
			if err != nil {
				t.Fatal(err)
			}
			i := bytes.Index(good, []byte("vni: 1001"))
			line := 1 + bytes.Count(good[:i], []byte("\n"))
			if err := os.WriteFile(polPath, bytes.Replace(good, []byte("vni: 1001"), []byte("vni: lots"), 1), 0o644); err != nil {
				t.Fatal(err)
			}
			if watcherFirst {
				for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
					if _, ok := d.PolicyRejection(); ok {
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("the watcher never looked at the file")
					}
				}
			}
			where := fmt.Sprintf("%s:%d: tenants[0].vnets[0].vni:", polPath, line)
			for range 2 {
				out, errs, code := ctl(t, sock, "reload")
				if code != 1 || out != "" || !strings.Contains(errs, where) || !strings.Contains(errs, `"lots" is not a whole number`) {
					t.Fatalf("reload of a bad file: exit %d, stdout %q, stderr %q", code, out, errs)
				}
			}
			out, _, code := ctl(t, sock, "show")
			if code != 0 || !strings.Contains(out, "POLICY REJECTED at ") ||
				!strings.Contains(out, fmt.Sprintf("%s:%d: tenants[0].vnets[0].vni: ", polPath, line)) ||
				!strings.Contains(out, "the switch runs the policy loaded") {
				t.Fatalf("show (%d):\n%s", code, out)
			}
			out, _, _ = ctl(t, sock, "-json", "show")
			if !strings.Contains(out, `"policy_rejected":{`) || !strings.Contains(out, fmt.Sprintf(`"line":%d`, line)) {
				t.Fatalf("show -json:\n%s", out)
			}
			// The good file back: what runs is what the file says again.
			if err := os.WriteFile(polPath, good, 0o644); err != nil {
				t.Fatal(err)
			}
			out, errs, code := ctl(t, sock, "reload")
			if code != 0 || !strings.Contains(out, "policy unchanged") {
				t.Fatalf("reload of the good file: exit %d: %s%s", code, out, errs)
			}
			out, _, _ = ctl(t, sock, "show")
			if strings.Contains(out, "REJECTED") {
				t.Fatalf("show after the good file:\n%s", out)
			}
		})
	}
}

func TestPrintShowRejected(t *testing.T) {
	at := time.Date(2026, 11, 24, 5, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	printShow(&b, control.Show{Host: "host-a", PolicyFile: "/etc/nicpath/policy.yaml", PolicyLoad: at,
		PolicyRejected: &control.PolicyRejection{File: "/etc/nicpath/policy.yaml", Line: 12, Field: "hosts[1].pa",
			Msg: `invalid address "x"`, Problems: 3, At: at.Add(time.Hour)}})
	want := "POLICY REJECTED at 2026-11-24T06:00:00Z: /etc/nicpath/policy.yaml:12: hosts[1].pa: invalid address \"x\" (and 2 more problems)\n" +
		"the switch runs the policy loaded 2026-11-24T05:00:00Z; fix the file and reload\n"
	if !strings.Contains(b.String(), want) {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}

// garp is a gratuitous ARP from mac for addr.
func garp(mac hal.MAC, addr netip.Addr) []byte {
	p := make([]byte, 28)
	p[1], p[2], p[4], p[5], p[7] = 1, 0x08, 6, 4, 1
	copy(p[8:14], mac[:])
	a := addr.As4()
	copy(p[14:18], a[:])
	copy(p[24:28], a[:])
	return wire.Build(wire.FrameSpec{SrcMAC: mac, DstMAC: hal.MustMAC("ff:ff:ff:ff:ff:ff"), EthType: 0x0806, Payload: p})
}

// learned shows what the NIC learned: a VM sending from an address that is
// not its own (dropped and counted, and explain says why), and a migrated
// VM's first announcement on its new host.
func TestLearned(t *testing.T) {
	d, sock := startDaemon(t)
	bw1, _ := d.SoftPort("blue-web-1")
	bw2, _ := d.SoftPort("blue-web-2")
	spoof := wire.Build(wire.FrameSpec{SrcMAC: hal.MustMAC("02:00:00:0b:00:01"), DstMAC: hal.MustMAC("02:00:00:0b:00:02"),
		Src: netip.MustParseAddr("10.0.0.99"), Dst: netip.MustParseAddr("10.0.0.11"), Proto: hal.ProtoUDP, SrcPort: 4444, DstPort: 53})
	for range 3 {
		if _, err := bw1.Send([][]byte{spoof}); err != nil {
			t.Fatal(err)
		}
	}
	// blue-web-2 moves to host-a and announces itself there.
	if _, _, code := ctl(t, sock, "activate", "blue-web-2"); code != 0 {
		t.Fatal("activate failed")
	}
	if _, err := bw2.Send([][]byte{garp(hal.MustMAC("02:00:00:0b:00:02"), netip.MustParseAddr("10.0.0.11"))}); err != nil {
		t.Fatal(err)
	}
	var out string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		d.Switch().Maintain(context.Background())
		out, _, _ = ctl(t, sock, "learned")
		if strings.Contains(out, "first on this host: arrived") && strings.Contains(out, "blue-web-1=3") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("learned:\n%s", out)
		}
	}
	t.Logf("vswitchctl learned:\n%s", out)
	for _, want := range []string{"blue-web-2 announced 10.0.0.11 (02:00:00:0b:00:02)", "10.0.0.99", "NOT OWNED (spoofed)",
		"spoofed-source drops: blue-web-1=3"} {
		if !strings.Contains(out, want) {
			t.Errorf("learned lacks %q:\n%s", want, out)
		}
	}
	out, _, code := ctl(t, sock, "explain", "blue-web-1", "10.0.0.99", "10.0.0.11", "udp", "4444", "53")
	if code != 0 || !strings.Contains(out, "source address 10.0.0.99 is not one of VM blue-web-1's addresses") ||
		!strings.Contains(out, "3 of its packets were dropped for a spoofed source") {
		t.Fatalf("explain (%d):\n%s", code, out)
	}
	out, _, _ = ctl(t, sock, "stats")
	if !strings.Contains(out, "spoofed source from blue-web-1: 3") {
		t.Errorf("stats:\n%s", out)
	}
	rec := httptest.NewRecorder()
	d.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{`nicpath_spoofed_source_drops_total{vm="blue-web-1"} 3`, `nicpath_address_announcements_total 1`,
		`nicpath_learned_addresses_total{owned="no"} 1`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

//go:build linux

package sealede2e_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/agent"
	"github.com/nicpath/nicpath/control"
	"github.com/nicpath/nicpath/internal/nsexec"
	"github.com/nicpath/nicpath/securechan"
	"github.com/nicpath/nicpath/securechan/sealclient"
	"github.com/nicpath/nicpath/securechan/sealtest"
)

// The namespaced topology: the host's namespace holds the daemon's softnic
// bound over AF_PACKET to vm-s1, vm-s2 and the uplink up0; each VM has
// its own namespace with eth0, the veth peer of its vport.
const nsPolicy = `hosts:
  - name: host-a
    pa: 198.19.0.1
  - name: host-b
    pa: 198.19.0.2
tenants:
  - name: t
    vnets:
      - name: v
        vni: 7
        subnets: [198.18.7.0/24, "2001:db8:7::/64"]
        vms:
          - name: s1
            mac: 02:00:00:00:07:01
            ca: [198.18.7.1, "2001:db8:7::1"]
            host: host-a
            seal_keys:
              - id: 1
                public: %s
          - name: s2
            mac: 02:00:00:00:07:02
            ca: [198.18.7.2, "2001:db8:7::2"]
            host: host-a
          - name: r1
            mac: 02:00:00:00:07:03
            ca: [198.18.7.3, "2001:db8:7::3"]
            host: host-b
`

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestSealedNetns is the product's path end to end: vswitchd's agent on
// softnic over AF_PACKET registers s1's key from the policy and publishes
// the NIC's key in a file; in s1's namespace the VM-side library seals
// UDP datagrams to s2 (a local VM whose kernel answers with a UDP echo)
// over IPv4 and IPv6, with no packet in clear before; the replies arrive.
// The host's exception capture (pcapng), its logs and everything vswitchctl
// reports are checked byte by byte: none names s2's addresses.
func TestSealedNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces and AF_PACKET sockets")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip")
	}
	pid := os.Getpid()
	hostNS, s1NS, s2NS := fmt.Sprintf("sealh%d", pid), fmt.Sprintf("seal1%d", pid), fmt.Sprintf("seal2%d", pid)
	for _, ns := range []string{hostNS, s1NS, s2NS} {
		sh(t, "ip", "netns", "add", ns)
		ns := ns
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	inNS := func(ns string, args ...string) { sh(t, append([]string{"ip", "netns", "exec", ns}, args...)...) }
	for _, vm := range []struct{ ns, host, mac, v4, v6 string }{
		{s1NS, "vm-s1", "02:00:00:00:07:01", "198.18.7.1/24", "2001:db8:7::1/64"},
		{s2NS, "vm-s2", "02:00:00:00:07:02", "198.18.7.2/24", "2001:db8:7::2/64"},
	} {
		sh(t, "ip", "link", "add", vm.host, "netns", hostNS, "type", "veth", "peer", "name", "eth0", "netns", vm.ns)
		inNS(vm.ns, "ip", "link", "set", "eth0", "address", vm.mac)
		inNS(vm.ns, "ip", "addr", "replace", vm.v4, "dev", "eth0")
		inNS(vm.ns, "ip", "addr", "replace", vm.v6, "dev", "eth0", "nodad")
		inNS(vm.ns, "ip", "link", "set", "eth0", "up")
		inNS(vm.ns, "ip", "link", "set", "lo", "up")
		inNS(hostNS, "ip", "link", "set", vm.host, "up")
	}
	// s2 answers s1 without asking the host where s1 is.
	inNS(s2NS, "ip", "neigh", "replace", "198.18.7.1", "lladdr", "02:00:00:00:07:01", "dev", "eth0", "nud", "permanent")
	inNS(s2NS, "ip", "neigh", "replace", "2001:db8:7::1", "lladdr", "02:00:00:00:07:01", "dev", "eth0", "nud", "permanent")
	inNS(hostNS, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up0p")
	inNS(hostNS, "ip", "link", "set", "up0", "up")
	inNS(hostNS, "ip", "link", "set", "up0p", "up")

	// The VM's key pair; the public half goes into the policy.
	vmPub, vmPriv, err := securechan.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(fmt.Sprintf(nsPolicy, hex.EncodeToString(vmPub[:]))), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	cfg := &agent.Config{File: filepath.Join(dir, "vswitchd.yaml"), Host: "host-a", Driver: "softnic", Binding: agent.BindAFPacket,
		Policy: filepath.Join(dir, "policy.yaml"), Uplink: "up0", Ports: map[string]string{"s1": "vm-s1", "s2": "vm-s2"},
		Control: filepath.Join(dir, "ctl.sock"), NetNS: "/run/netns/" + hostNS, WatchInterval: time.Hour,
		SealPublicKey: filepath.Join(dir, "nic.pub"), DriverOptions: map[string]string{"seal_key": "nic.key"},
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	d, err := agent.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		<-done
		d.Close()
	}()
	pcap := filepath.Join(dir, "exceptions.pcapng")
	if _, err := d.Do(ctx, control.Request{Cmd: "capture", Args: []string{"start", pcap}}); err != nil {
		t.Fatal(err)
	}

	// s2's echo: its kernel's UDP socket, in its namespace.
	var echo4, echo6 *net.UDPConn
	if err := nsexec.Do("/run/netns/"+s2NS, func() error {
		var err error
		if echo4, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("198.18.7.2"), Port: 7}); err != nil {
			return err
		}
		echo6, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.ParseIP("2001:db8:7::2"), Port: 7})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*net.UDPConn{echo4, echo6} {
		defer c.Close()
		go func(c *net.UDPConn) {
			buf := make([]byte, 2048)
			for {
				n, from, err := c.ReadFromUDP(buf)
				if err != nil {
					return
				}
				c.WriteToUDP(append([]byte("echo: "), buf[:n]...), from)
			}
		}(c)
	}

	// s1: the VM side, with the key the host published. A socket on the
	// source port keeps s1's kernel from answering the replies with port
	// unreachable (which would carry s2's address to the host).
	nicKey, err := sealclient.LoadPublicKey(cfg.SealPublicKey)
	if err != nil {
		t.Fatal(err)
	}
	var client *sealclient.Client
	var hold4, hold6 *net.UDPConn
	if err := nsexec.Do("/run/netns/"+s1NS, func() error {
		var err error
		if hold4, err = net.ListenUDP("udp4", &net.UDPAddr{Port: 40000}); err != nil {
			return err
		}
		if hold6, err = net.ListenUDP("udp6", &net.UDPAddr{Port: 40000}); err != nil {
			return err
		}
		client, err = sealclient.Open(sealclient.Config{Interface: "eth0", NICKey: nicKey, Key: vmPriv, KeyID: 1})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer hold4.Close()
	defer hold6.Close()
	defer client.Close()
	for _, dst := range []string{"198.18.7.2", "2001:db8:7::2"} {
		u := sealclient.UDP{Dst: netip.MustParseAddr(dst), SrcPort: 40000, DstPort: 7, Payload: []byte("sealed hello")}
		start := time.Now()
		if err := client.SendUDP(u); err != nil {
			t.Fatal(err)
		}
		r, err := client.RecvUDP(40000, start.Add(15*time.Second))
		if err != nil {
			t.Fatalf("no reply from %s: %v\nlogs:\n%s", dst, err, logs.String())
		}
		if r.Src != u.Dst || string(r.Payload) != "echo: sealed hello" {
			t.Fatalf("reply %+v", r)
		}
	}

	if _, err := d.Do(ctx, control.Request{Cmd: "capture", Args: []string{"stop"}}); err != nil {
		t.Fatal(err)
	}
	view := map[string][]byte{"logs": []byte(logs.String())}
	if view["exception capture"], err = os.ReadFile(pcap); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"show", "stats", "flows", "seal"} {
		res, err := d.Do(ctx, control.Request{Cmd: cmd})
		if err != nil {
			t.Fatal(err)
		}
		view["vswitchctl "+cmd] = []byte(fmt.Sprintf("%+v", res))
	}
	secrets := []sealtest.Secret{{IP: netip.MustParseAddr("198.18.7.2")}, {IP: netip.MustParseAddr("2001:db8:7::2")}}
	for where, data := range view {
		for _, s := range secrets {
			if leak := sealtest.FindLeak(data, s); leak != "" {
				t.Errorf("%s reveals the sealed destination %v: %s", where, s.IP, leak)
			}
		}
	}
	if len(view["exception capture"]) == 0 {
		t.Fatal("the capture is empty: the check saw nothing")
	}
	// The check can fail: the same exchange in clear, from s1's kernel,
	// goes through the host (ARP, the first packet), and the capture
	// shows s2.
	pcap2 := filepath.Join(dir, "clear.pcapng")
	if _, err := d.Do(ctx, control.Request{Cmd: "capture", Args: []string{"start", pcap2}}); err != nil {
		t.Fatal(err)
	}
	inNS(s1NS, "ip", "neigh", "replace", "198.18.7.2", "lladdr", "02:00:00:00:07:02", "dev", "eth0", "nud", "permanent")
	hold4.SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := hold4.WriteToUDP([]byte("clear hello"), &net.UDPAddr{IP: net.ParseIP("198.18.7.2"), Port: 7}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	for {
		// (The sealed exchange's reply reached this socket too.)
		n, _, err := hold4.ReadFromUDP(buf)
		if err != nil {
			st, _ := d.Do(ctx, control.Request{Cmd: "stats"})
			t.Fatalf("the clear exchange: %v\n%+v\nlogs:\n%s", err, st, logs.String())
		}
		if string(buf[:n]) == "echo: clear hello" {
			break
		}
	}
	if _, err := d.Do(ctx, control.Request{Cmd: "capture", Args: []string{"stop"}}); err != nil {
		t.Fatal(err)
	}
	clearCap, err := os.ReadFile(pcap2)
	if err != nil {
		t.Fatal(err)
	}
	if sealtest.FindLeak(clearCap, secrets[0]) == "" {
		t.Fatal("the capture of the clear exchange does not show s2: the leak check cannot see")
	}
	res, _ := d.Do(ctx, control.Request{Cmd: "seal"})
	if s := res.(control.Seal); s.Routes != 4 || len(s.Ports) != 1 {
		t.Fatalf("seal: %+v", s)
	}
}

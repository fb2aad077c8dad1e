package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nicpath/nicpath/control"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/securechan"
	"github.com/nicpath/nicpath/securechan/sealclient"
	"github.com/nicpath/nicpath/securechan/sealtest"
)

// The namespace story's sealed step. The example policy's tenants have
// outbound ACLs, and a VM with one does not seal (its host pushes sealed
// routes only where the policy's verdict holds for every packet of a
// pair: vswitch/sealroute.go). So the story adds a small tenant, green,
// without ACLs, to the copy of the policy its hosts run: green-1 seals its
// destinations, green-2 beside it on host-a and green-3 on host-b. green-1's
// key pair is made when the story starts (as nicseal genkey makes one): the
// public half goes into the policy copy's seal_keys, the private half stays
// in the story's directory, so the embedded default runs without setup and
// no private key is committed.

// sealedTenant is the tenant the story adds; %s is green-1's public key.
// Its VMs have IPv6 too (the story's other namespaces have it off).
const sealedTenant = `  # Added by the demo to the policy its hosts run: green-1 seals its
  # destinations to its NIC's key (the sealed step).
  - name: green
    vnets:
      - name: g
        vni: 3001
        subnets: [198.18.30.0/24, "2001:db8:30::/64"]
        vms:
          - name: green-1
            mac: 02:00:00:0c:00:01
            ca: [198.18.30.1, "2001:db8:30::1"]
            host: host-a
            seal_keys:
              - id: 1
                public: %s
          - name: green-2
            mac: 02:00:00:0c:00:02
            ca: [198.18.30.2, "2001:db8:30::2"]
            host: host-a
          - name: green-3
            mac: 02:00:00:0c:00:03
            ca: [198.18.30.3, "2001:db8:30::3"]
            host: host-b

`

// sealerVM is the VM of the sealed step that seals; sealKeyFile its
// private key's file in the story's directory.
const (
	sealedTenantName = "green"
	sealerVM         = "green-1"
	sealKeyFile      = "green-1.key"
	sealPort         = 40000 // green-1's source port
)

// withSealedTenant returns pol with the green tenant added to its tenants
// (before the shadows, the last section of the example policy).
func withSealedTenant(pol []byte, vmPub securechan.PublicKey) ([]byte, error) {
	at := bytes.Index(pol, []byte("\n# blue-web-2 is about to move"))
	if at < 0 {
		at = bytes.Index(pol, []byte("\nshadows:"))
	}
	if at < 0 {
		return nil, errors.New("the policy has no shadows section to add the sealed step's tenant before")
	}
	out := append([]byte{}, pol[:at+1]...)
	out = fmt.Appendf(out, sealedTenant, hex.EncodeToString(vmPub[:]))
	return append(out, pol[at+1:]...), nil
}

// storyPolicy makes green-1's key pair, writes the private half into dir
// and returns the policy the story's hosts run.
func storyPolicy(dir string) ([]byte, error) {
	pub, priv, err := securechan.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	err = os.WriteFile(filepath.Join(dir, sealKeyFile), []byte(hex.EncodeToString(priv[:])+"\n"), 0o600)
	clear(priv[:])
	if err != nil {
		return nil, err
	}
	return withSealedTenant(defaultPolicy, pub)
}

// sealedVMIPv6 turns IPv6 on in the namespace of a VM of the sealed step's
// tenant: its IPv6 address (no duplicate detection: the address is the
// policy's) and its VNET peers as static neighbours, as addVM does for
// IPv4. Router solicitations stay off: the VMs' routes are their subnet's.
func (n *nsStory) sealedVMIPv6(vm policy.VM) error {
	if vm.Tenant != sealedTenantName {
		return nil
	}
	ns := n.vmNS(vm.Name)
	for _, k := range []string{"all", "default", "eth0"} {
		if _, err := n.in(ns, "sysctl", "-qw", "net.ipv6.conf."+k+".router_solicitations=0", "net.ipv6.conf."+k+".disable_ipv6=0"); err != nil {
			return err
		}
	}
	vn, _ := n.st.VNET(vm.Tenant, vm.VNET)
	for _, ca := range vm.CAs {
		if !ca.Is6() {
			continue
		}
		for _, p := range vn.Subnets {
			if p.Contains(ca) {
				if err := n.ip("-n", ns, "addr", "replace", netip.PrefixFrom(ca, p.Bits()).String(), "dev", "eth0", "nodad"); err != nil {
					return err
				}
			}
		}
	}
	for m := range n.st.Mappings() {
		if m.VNI == vn.VNI && m.CA.Is6() && !slices.Contains(vm.CAs, m.CA) {
			if err := n.ip("-n", ns, "neigh", "replace", m.CA.String(), "lladdr", hal.MAC(m.MAC).String(), "dev", "eth0", "nud", "permanent"); err != nil {
				return err
			}
		}
	}
	return nil
}

// sealPubFile is where host's vswitchd publishes its NIC's sealing key.
func (n *nsStory) sealPubFile(host string) string {
	return filepath.Join(n.dir, host+"-seal.pub")
}

// sealedStep: green-1 seals UDP datagrams to green-2 (local) and green-3
// (remote) with the key host-a's vswitchd published; on a NIC that opens
// sealed frames the replies arrive, and host-a's exception capture, its
// logs and what vswitchctl shows (the NIC's learned addresses, reported
// over the channel with NIC=remote, included) never hold the clear
// destination, checked on the bytes. On a NIC without crypto (XDP) the
// frames are dropped and counted (fail closed).
// clearCapture is an earlier capture of clear traffic to clearDst: the
// leak check is shown to see it.
func (n *nsStory) sealedStep(ctl func(string, ...string) (string, error), clearCapture string, clearDst netip.Addr) {
	s := n.s
	host := "host-a"
	// Whether host-a's NIC opens sealed frames, as its vswitchd says
	// (softnic does; XDP and tc-flower have no crypto).
	var seal control.Seal
	raw, jerr := ctl(host, "-json", "seal")
	if jerr == nil {
		jerr = json.Unmarshal([]byte(raw), &seal)
	}
	if jerr != nil {
		s.check(false, "vswitchctl -json seal: %v", jerr)
		return
	}
	crypto := seal.Crypto
	dests := []struct {
		vm, where string
		ip        netip.Addr
	}{
		{"green-2", "local, on host-a", netip.MustParseAddr("198.18.30.2")},
		{"green-2", "local, on host-a", netip.MustParseAddr("2001:db8:30::2")},
		{"green-3", "remote, on host-b", netip.MustParseAddr("198.18.30.3")},
		{"green-3", "remote, on host-b", netip.MustParseAddr("2001:db8:30::3")},
	}
	var dsts []netip.Addr
	for _, d := range dests {
		dsts = append(dsts, d.ip)
	}
	if crypto {
		s.title("Sealed addresses: green-1 hides its destinations from host-a; host-a's NIC opens them")
	} else {
		s.title("Sealed addresses on %s, a NIC without crypto: green-1's sealed frames fail closed", n.drivers.of(host))
	}
	out, err := ctl(host, "seal")
	s.say("$ vswitchctl seal\n%s", indent(out, "  "))
	if !crypto {
		s.check(err == nil && strings.Contains(out, "dropped and counted (fail closed)"),
			"host-a's vswitchctl seal says its NIC does not open sealed frames: they are dropped (fail closed)")
		n.sealedFailClosed(ctl, dsts...)
		return
	}
	s.check(err == nil && strings.Contains(out, "vm green-1") && strings.Contains(out, "sealed routes 4"),
		"host-a's vswitchd registered green-1's key from the policy with its NIC and pushed 4 sealed routes (green-2, green-3; IPv4, IPv6)")
	pub := n.sealPubFile(host)
	key, kerr := os.ReadFile(pub)
	s.say("the NIC's public key, published by host-a's vswitchd in %s: %s", filepath.Base(pub), strings.TrimSpace(string(key)))
	s.check(kerr == nil && strings.Contains(out, strings.TrimSpace(string(key))), "the published key is the one vswitchctl seal shows")

	capFile := filepath.Join(n.dir, "host-a-sealed.pcapng")
	out, _ = ctl(host, "capture", "start", capFile)
	s.say("$ vswitchctl capture start %s\n%s", capFile, indent(out, "  "))
	args := []string{"-nic-key", pub, "-key", filepath.Join(n.dir, sealKeyFile), "-w", "5s"}
	for _, d := range dests {
		args = append(args, d.ip.String())
	}
	out, err = n.in(n.vmNS(sealerVM), "env", append([]string{childEnv + "=1", n.self, "seal"}, args...)...)
	s.say("$ green-1: seal UDP to port 7 of %v (sealclient, in green-1's namespace)\n%s", dsts, indent(out, "  "))
	for _, d := range dests {
		s.check(err == nil && strings.Contains(out, "reply from "+netip.AddrPortFrom(d.ip, 7).String()+": "+d.vm+" got sealed hello"),
			"sealed UDP green-1 → %s (%s) opened by the NIC, delivered, and %s's reply reached green-1", d.ip, d.where, d.vm)
	}
	out, _ = ctl(host, "capture", "stop")
	s.say("$ vswitchctl capture stop\n%s", indent(out, "  "))

	view := map[string][]byte{}
	view["the exception capture"], _ = os.ReadFile(capFile)
	for _, l := range []string{host + ".log", host + "-again.log"} {
		if b, err := os.ReadFile(filepath.Join(n.dir, l)); err == nil {
			view["the log "+l] = b
		}
	}
	for _, c := range [][]string{{"show"}, {"stats"}, {"flows"}, {"flows", "--nic"}, {"seal"}, {"learned"}, {"-json", "stats"}, {"-json", "flows", "--nic"}} {
		o, _ := ctl(host, c...)
		view["vswitchctl "+strings.Join(c, " ")] = []byte(o)
	}
	leaks := 0
	for where, data := range view {
		for _, d := range dests {
			if l := sealtest.FindLeak(data, sealtest.Secret{IP: d.ip}); l != "" {
				leaks++
				s.say("   LEAK: %s shows %v: %s", where, d.ip, l)
			}
		}
	}
	what := "host-a's exception capture, its vswitchd logs and vswitchctl (show, stats, flows, seal, learned)"
	if n.drivers.remote {
		what = "host-a's exception capture (what nicd handed vswitchd over the channel), its vswitchd logs and vswitchctl (show, stats, flows, seal, and learned: what nicd reported over the channel)"
	}
	s.check(leaks == 0 && len(view["the exception capture"]) > 0, "%s hold none of %v (checked on the bytes)", what, dsts)
	// The check sees: the capture of clear traffic earlier in the story
	// does show its destination.
	clearCap, _ := os.ReadFile(clearCapture)
	s.check(sealtest.FindLeak(clearCap, sealtest.Secret{IP: clearDst}) != "",
		"the same check finds %v in the earlier capture of clear UDP (the check can see a destination)", clearDst)
}

// sealedFailClosed sends green-1's sealed frames on a NIC without crypto:
// no reply, and they are counted dropped as sealed.
func (n *nsStory) sealedFailClosed(ctl func(string, ...string) (string, error), dsts ...netip.Addr) {
	s := n.s
	before := nicSealedDrops(ctl)
	// green-1 has no NIC key to seal to: it seals to a key of its own
	// making, which is what a NIC without crypto would have to open.
	pub, _, err := securechan.GenerateKey(nil)
	if err != nil {
		s.check(false, "a key: %v", err)
		return
	}
	args := []string{"-nic-key", hex.EncodeToString(pub[:]), "-key", filepath.Join(n.dir, sealKeyFile), "-w", "1s"}
	for _, d := range dsts {
		args = append(args, d.String())
	}
	out, _ := n.in(n.vmNS(sealerVM), "env", append([]string{childEnv + "=1", n.self, "seal"}, args...)...)
	s.say("$ green-1: seal UDP to port 7 of %v\n%s", dsts, indent(out, "  "))
	s.check(!strings.Contains("\n"+out, "\nreply from"), "no sealed frame got through: nothing answered")
	var after uint64
	werr := waitFor(5*time.Second, func() error {
		if after = nicSealedDrops(ctl); after >= before+uint64(len(dsts)) {
			return nil
		}
		return fmt.Errorf("NIC drops sealed %d, was %d", after, before)
	})
	out, _ = ctl("host-a", "stats")
	s.say("$ vswitchctl stats\n%s", indent(out, "  "))
	s.check(werr == nil, "host-a dropped and counted the %d sealed frames (sealed drops: %d, were %d): fail closed, never opened", len(dsts), after, before)
}

// nicSealedDrops reads host-a's sealed drops from vswitchctl stats: the
// NIC's (XDP and tc-flower drop sealed frames themselves) and the host's
// (for a NIC that hands them up).
func nicSealedDrops(ctl func(string, ...string) (string, error)) uint64 {
	raw, err := ctl("host-a", "-json", "stats")
	if err != nil {
		return 0
	}
	var st control.Stats
	if json.Unmarshal([]byte(raw), &st) != nil {
		return 0
	}
	return st.NICDrops["sealed"] + st.Drops["sealed"]
}

// runSeal is the VM side of the sealed step, run in green-1's namespace:
// it seals a UDP datagram to port 7 of each destination and prints the
// replies: -nic-key file|hex -key file -w timeout dst….
func runSeal(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("seal", flag.ContinueOnError)
	nicKey := fs.String("nic-key", "", "the NIC's public key: the file vswitchd publishes, or hex")
	keyFile := fs.String("key", "", "the VM's private key file")
	wait := fs.Duration("w", 3*time.Second, "how long to wait for each reply")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var nk securechan.PublicKey
	if k, err := sealclient.ParseKey(*nicKey); err == nil {
		nk = k
	} else if nk, err = sealclient.LoadPublicKey(*nicKey); err != nil {
		return err
	}
	priv, err := sealclient.LoadPrivateKey(*keyFile)
	if err != nil {
		return err
	}
	// A socket on the source port: without it the VM's kernel would answer
	// each reply with a port unreachable, which names the destination to
	// the host.
	for _, nw := range []string{"udp4", "udp6"} {
		hold, err := net.ListenUDP(nw, &net.UDPAddr{Port: sealPort})
		if err != nil {
			return err
		}
		defer hold.Close()
	}
	c, err := sealclient.Open(sealclient.Config{Interface: "eth0", NICKey: nk, Key: priv, KeyID: 1})
	clear(priv[:])
	if err != nil {
		return err
	}
	defer c.Close()
	failed := 0
	for _, a := range fs.Args() {
		dst, err := netip.ParseAddr(a)
		if err != nil {
			return err
		}
		start := time.Now()
		if err := c.SendUDP(sealclient.UDP{Dst: dst, SrcPort: sealPort, DstPort: 7, Payload: []byte("sealed hello")}); err != nil {
			return err
		}
		r, err := c.RecvUDP(sealPort, start.Add(*wait))
		if err != nil {
			fmt.Fprintf(stdout, "no reply from %s within %s\n", netip.AddrPortFrom(dst, 7), *wait)
			failed++
			continue
		}
		fmt.Fprintf(stdout, "reply from %s: %s\n", netip.AddrPortFrom(r.Src, r.SrcPort), r.Payload)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d sealed datagrams got no reply", failed, len(fs.Args()))
	}
	return nil
}

//go:build linux

// Command tetherdemo tells the relocated subnet's story on network
// namespaces (Linux, root): a data center of two vswitchd hosts with a VM
// each and an anchor; a NAT (nftables masquerade); a remote site whose
// tether hands its two nodes addresses of the tenant's VNET by DHCP. A
// node and a VM talk through the NAT both ways (ping, a TCP transfer
// checked byte for byte), vswitchctl shows the tether's endpoint as the
// NAT shows it and the leases, the NAT's mappings are flushed and its
// external address changes while the anchor follows, and the tether
// restarts and keeps its leases. Everything it creates is removed; it
// exits non-zero if any check fails.
//
//	make demo-tether     (or: go run ./examples/tetherdemo)
package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nicpath/nicpath/tether/tethertest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Stdout))
}

type story struct {
	w      io.Writer
	failed []string
}

func (s *story) title(t string) { fmt.Fprintf(s.w, "\n== %s\n", t) }
func (s *story) say(f string, a ...any) {
	fmt.Fprintf(s.w, f, a...)
	if !strings.HasSuffix(f, "\n") {
		fmt.Fprintln(s.w)
	}
}
func (s *story) check(what string, err error) bool {
	if err != nil {
		s.say("FAIL %s: %v", what, err)
		s.failed = append(s.failed, what)
		return false
	}
	s.say("ok   %s", what)
	return true
}

func run(ctx context.Context, w io.Writer) int {
	s := &story{w: w}
	if ok, why := tethertest.CanRun(); !ok {
		s.say("the relocated-subnet story runs on network namespaces and cannot run here: %s", why)
		return 0
	}
	dir, err := os.MkdirTemp("", "nicpath-tetherdemo-")
	if err != nil {
		s.say("%v", err)
		return 1
	}
	defer os.RemoveAll(dir)
	s.title("Building vswitchctl")
	ctl, err := buildVswitchctl(dir)
	if err != nil {
		s.say("%v", err)
		return 1
	}
	s.title("A data center, a NAT, a remote site")
	b, err := tethertest.New(ctx, tethertest.Options{Dir: dir})
	if err != nil {
		s.say("setting up: %v", err)
		return 1
	}
	defer func() {
		b.Close()
		s.say("\nremoved the namespaces and everything in them")
	}()
	s.say("host-a, host-b: vswitchd on softnic, VMs blue-a %s and blue-b %s (VNET web, vni %d)", tethertest.VMA, tethertest.VMB, tethertest.VNI)
	s.say("anchor: PA %s, tunnel endpoint %s:%d", tethertest.PAAnchor, tethertest.AnchorPublic, tethertest.TunnelPort)
	s.say("nat: nftables masquerade to %s; the tether and its nodes n1, n2 behind it", tethertest.NATPublic)
	s.say("relocated subnet %s (the policy's relocated entry %s), pool %s-%s, %d policy mappings to the anchor", b.Sub.Prefix, b.Sub.Name, b.Sub.PoolFirst, b.Sub.PoolLast, b.AnchorNode.Status().Pool)
	b.ServeControl(ctx, filepath.Join(dir, "anchor.sock"), filepath.Join(dir, "tether.sock"))
	vsctl := func(sock string, args ...string) string {
		out, err := exec.Command(ctl, append([]string{"-s", filepath.Join(dir, sock)}, args...)...).CombinedOutput()
		if err != nil {
			s.check("vswitchctl "+strings.Join(args, " "), fmt.Errorf("%v: %s", err, out))
		}
		return string(out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !b.Anchor.Status()[0].Established && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	s.check("the tether dialed the anchor through the NAT", boolErr(b.Anchor.Status()[0].Established, "no session"))

	s.title("The nodes take addresses by DHCP")
	var addrs []netip.Addr
	for _, n := range []string{"n1", "n2"} {
		l, err := b.DHCP(ctx, n)
		if s.check(fmt.Sprintf("%s: DHCP", n), err) {
			s.say("     %s got %s, router %s, MTU %d (the tunnel's 74 bytes left), lease %s", n, l.Addr, l.Router, l.MTU, l.Expires)
			addrs = append(addrs, l.Addr.Addr())
		}
	}
	if len(addrs) != 2 {
		return 1
	}
	s.say("$ vswitchctl -s tether.sock leases\n%s", indent(vsctl("tether.sock", "leases")))

	s.title("A node and a VM talk through the NAT")
	traffic := func() {
		_, err := b.Ping("n1", tethertest.VMA)
		s.check(fmt.Sprintf("ping n1 (%s) -> blue-a (%s)", addrs[0], tethertest.VMA), err)
		_, err = b.Ping("vm-b", addrs[1])
		s.check(fmt.Sprintf("ping blue-b (%s) -> n2 (%s)", tethertest.VMB, addrs[1]), err)
		err = b.TCPTransfer("n1", "vm-b", netip.AddrPortFrom(tethertest.VMB, 5001), 4<<20)
		s.check("TCP n1 -> blue-b, 4 MiB echoed and checked", err)
	}
	traffic()
	s.say("$ vswitchctl -s anchor.sock tether\n%s", indent(vsctl("anchor.sock", "tether")))
	s.say("$ vswitchctl -s tether.sock tether\n%s", indent(vsctl("tether.sock", "tether")))

	s.title("The NAT forgets its mappings")
	before, _ := b.Anchor.Endpoint("branch-1")
	s.check("conntrack -F in the NAT", b.FlushNAT())
	moved := waitMoved(b, before, 10*time.Second)
	after, _ := b.Anchor.Endpoint("branch-1")
	s.check(fmt.Sprintf("the anchor follows: %s -> %s", before, after), boolErr(moved, "the endpoint did not move"))
	traffic()

	s.title("The NAT's external address changes")
	before = after
	s.check(fmt.Sprintf("the NAT moves to %s", tethertest.NATPublic2), b.ChangeNATAddress())
	moved = waitMoved(b, before, 10*time.Second)
	after, _ = b.Anchor.Endpoint("branch-1")
	s.check(fmt.Sprintf("the anchor follows: %s -> %s", before, after), boolErr(moved && after.Addr() == tethertest.NATPublic2, "the endpoint did not move"))
	traffic()
	s.say("$ vswitchctl -s anchor.sock tether\n%s", indent(vsctl("anchor.sock", "tether")))

	s.title("The tether restarts")
	s.check("tether restarted", b.RestartTether())
	traffic()
	s.say("$ vswitchctl -s tether.sock leases   (the same leases, from the store)\n%s", indent(vsctl("tether.sock", "leases")))

	if len(s.failed) > 0 {
		s.say("\n%d checks failed: %s", len(s.failed), strings.Join(s.failed, "; "))
		return 1
	}
	s.say("\nevery check passed")
	return 0
}

func waitMoved(b *tethertest.Bed, from netip.AddrPort, d time.Duration) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if ep, _ := b.Anchor.Endpoint("branch-1"); ep != from {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func boolErr(ok bool, msg string) error {
	if ok {
		return nil
	}
	return fmt.Errorf("%s", msg)
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

// buildVswitchctl builds vswitchctl from this module into dir.
func buildVswitchctl(dir string) (string, error) {
	goBin := os.Getenv("GO")
	if goBin == "" {
		goBin = "go"
	}
	gomod, err := exec.Command(goBin, "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" || strings.TrimSpace(string(gomod)) == os.DevNull {
		return "", fmt.Errorf("finding the module (run the demo from the repository): %v", err)
	}
	cmd := exec.Command(goBin, "build", "-o", dir, "./examples/vswitchctl")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building vswitchctl: %v\n%s", err, out)
	}
	return filepath.Join(dir, "vswitchctl"), nil
}

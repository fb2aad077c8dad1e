package agent

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/drivers/remote/remotetest"
	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/vswitch"
)

// succeeded is the number of reconciles that read the NIC's table.
func succeeded(st vswitch.Stats) uint64 { return st.Reconciles - st.ReconcileFailed }

// servedNIC is host-a's NIC on the NIC side. It numbers its ports its own
// way (the agent's plan would give blue-web-1 port 1 and vm-rfw port 4):
// the agent has to take the numbering from the NIC.
func servedNIC(t *testing.T) *softnic.NIC {
	t.Helper()
	n, err := softnic.New(softnic.Config{Device: "nicd host-a", Ports: []softnic.PortConfig{
		{Name: "vm-rfw", Kind: hal.PortVPort, MAC: hal.MustMAC("02:00:00:0e:00:fe")},
		{Name: "vm-ra2", Kind: hal.PortVPort, MAC: hal.MustMAC("02:00:00:0e:00:02")},
		{Name: "vm-bw2", Kind: hal.PortVPort, MAC: macBW2},
		{Name: "vm-bw1", Kind: hal.PortVPort, MAC: macBW1},
		{Name: "up0", Kind: hal.PortUplink, MAC: hal.MustMAC("02:00:00:00:ff:01"), MTU: 1600},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func portNamed(t *testing.T, n hal.NIC, name string) hal.PortID {
	t.Helper()
	for _, p := range n.Ports() {
		if p.Name == name {
			return p.ID
		}
	}
	t.Fatalf("no port %s", name)
	return 0
}

// remoteDriver is the driver section of a configuration in bed's directory
// that opens bed's NIC side with bed's key files.
func remoteDriver(bed *remotetest.Bed) string {
	return "driver: remote\ndriver_options:\n  address: " + bed.Addr + "\n  key: host.key\n  server_key: nic.pub\n"
}

// remoteHostAConfig writes host-a's configuration (hostAConfig) into bed's
// directory, on the remote driver to bed.
func remoteHostAConfig(t *testing.T, bed *remotetest.Bed) string {
	t.Helper()
	path := hostAConfig(t, bed.Dir)
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc = []byte(strings.Replace(string(doc), "driver: softnic\nbinding: none\n", remoteDriver(bed), 1))
	if err := os.WriteFile(path, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// An agent configured with driver: remote opens the NIC side over the
// secure channel with the keys its driver_options name (relative to the
// configuration file), takes the port numbering from the NIC, offloads a
// first packet's flow through the channel, and reconciles when the NIC
// side restarts: on the same NIC nothing is added twice, on a fresh one
// the flow's rule is put back once.
func TestRemoteDriver(t *testing.T) {
	// Key files host.key, host.pub, nic.key and nic.pub in a short
	// directory (a unix socket path is limited to 108 bytes).
	bed := remotetest.NewBedFiles(t)
	soft1 := servedNIC(t)
	s1 := bed.Serve(t, soft1)

	path := remoteHostAConfig(t, bed)
	r := startDaemon(t, path, nil)

	// blue-web-1's first packet goes to the host through the channel; the
	// agent offloads the flow onto the served NIC.
	bw1, up := portNamed(t, soft1, "vm-bw1"), portNamed(t, soft1, "up0")
	far := softnic.FarSide{NIC: soft1}
	if err := far.Send(bw1, udpFrame(4000)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(remotetest.Rules(t, soft1)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no rule on the served NIC\nlogs:\n%s", r.logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	want := remotetest.Rules(t, soft1)
	for _, rule := range want {
		if rule.Match.Key.InPort != bw1 {
			t.Errorf("rule %v: want in_port %d (the NIC's own numbering of vm-bw1)", &rule, bw1)
		}
	}
	// The first packet itself left on the uplink, encapsulated toward host-b.
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	got, _ := far.Recv(rctx, up, 1)
	rcancel()
	if len(got) != 1 {
		t.Fatalf("the first packet did not leave the uplink")
	}
	sw := r.d.Switch()

	// waitReconcile waits for a reconcile that succeeded after st (one
	// that failed, the NIC side not answering yet, changed nothing and
	// is retried).
	waitReconcile := func(st vswitch.Stats) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for succeeded(sw.Stats()) <= succeeded(st) {
			if time.Now().After(deadline) {
				t.Fatalf("no reconcile succeeded after the NIC side restarted\nstats:\n%s\nlogs:\n%s", sw.Stats(), r.logs.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	// The NIC side restarts on the same NIC: the rule is still there, and
	// the reconcile adds nothing.
	st := sw.Stats()
	s1.Stop()
	s2 := bed.Serve(t, soft1)
	waitReconcile(st)
	if after := sw.Stats(); after.ReconcileAdded != st.ReconcileAdded || after.ReconcileRemoved != st.ReconcileRemoved {
		t.Errorf("reconcile after a restart that kept the rules added %d, removed %d",
			after.ReconcileAdded-st.ReconcileAdded, after.ReconcileRemoved-st.ReconcileRemoved)
	}
	remotetest.SameRules(t, "after a restart on the same NIC", remotetest.Rules(t, soft1), want)

	// The NIC side restarts on a fresh NIC: the reconcile puts the rule
	// back, once.
	st = sw.Stats()
	s2.Stop()
	soft2 := servedNIC(t)
	bed.Serve(t, soft2)
	waitReconcile(st)
	if added := sw.Stats().ReconcileAdded - st.ReconcileAdded; added != uint64(len(want)) {
		t.Errorf("reconcile after a restart on a fresh NIC added %d rules, want %d", added, len(want))
	}
	remotetest.SameRules(t, "the fresh NIC", remotetest.Rules(t, soft2), want)
}

// The host restarts: the agent driving the NIC side over the channel goes
// away; the NIC keeps forwarding on its last rules with no host at all;
// the next agent takes the NIC over and, once traffic flows again, holds
// each flow's rule once (no rule twice, none left over).
func TestRemoteHostRestart(t *testing.T) {
	// Key files host.key, host.pub, nic.key and nic.pub in a short
	// directory (a unix socket path is limited to 108 bytes).
	bed := remotetest.NewBedFiles(t)
	soft := servedNIC(t)
	bed.Serve(t, soft)
	path := remoteHostAConfig(t, bed)
	bw1, up := portNamed(t, soft, "vm-bw1"), portNamed(t, soft, "up0")
	far := softnic.FarSide{NIC: soft}
	// send puts flow sport's next packet in and says whether it left the
	// uplink, and whether it went through the host.
	send := func(sport uint16) (out, viaHost bool) {
		t.Helper()
		before, _ := soft.Stats(context.Background())
		// Each sport its own flow: UDP, TCP and SCTP between the same
		// VMs (datagrams with other ports would share one port-wildcard
		// flow).
		f := udpFrame(sport)
		switch sport % 3 {
		case 1:
			f = tcpFrame(sport)
		case 2:
			f = sctpFrame(sport)
		}
		if err := far.Send(bw1, f); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		got, _ := far.Recv(ctx, up, 1)
		after, _ := soft.Stats(context.Background())
		return len(got) == 1, after.Exceptions != before.Exceptions
	}
	waitRules := func(what string, n int) map[hal.RuleID]hal.Rule {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			rs := remotetest.Rules(t, soft)
			if len(rs) >= n {
				return rs
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d rules on the NIC, want %d", what, len(rs), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	r1 := startDaemon(t, path, nil)
	for _, sport := range []uint16{4000, 4001} {
		if out, _ := send(sport); !out {
			t.Fatalf("flow %d: the first packet did not leave the uplink\n%s", sport, r1.logs.String())
		}
	}
	want := waitRules("the first agent", 2)
	perFlow := len(want) / 2 // blue-web-2 is migrating: a flow toward it has a shadow rule too
	if perFlow < 1 || len(want) != 2*perFlow {
		t.Fatalf("%d rules for 2 flows", len(want))
	}

	// The host goes away: the NIC forwards on its rules by itself.
	r1.stop()
	remotetest.SameRules(t, "after the host went away", remotetest.Rules(t, soft), want)
	for _, sport := range []uint16{4000, 4001} {
		if out, viaHost := send(sport); !out || viaHost {
			t.Fatalf("flow %d with no host: out %v, through the host %v", sport, out, viaHost)
		}
	}

	// The next agent takes over.
	r2 := startDaemon(t, path, nil)
	for _, sport := range []uint16{4000, 4001, 4002} {
		if out, _ := send(sport); !out {
			t.Fatalf("flow %d after the host restarted: nothing left the uplink\n%s", sport, r2.logs.String())
		}
	}
	waitRules("the next agent", 3*perFlow)
	time.Sleep(50 * time.Millisecond) // room for a rule added twice to show
	got := remotetest.Rules(t, soft)
	matches := map[string]hal.RuleID{}
	for id, r := range got {
		m := fmt.Sprintf("%s scope %d gen %d", r.Match.String(), r.Scope, r.Generation)
		if other, dup := matches[m]; dup {
			t.Errorf("rules %d and %d both match %s", other, id, m)
		}
		matches[m] = id
	}
	if len(got) != 3*perFlow {
		t.Errorf("%d rules on the NIC after the host restarted and 3 flows ran, want %d", len(got), 3*perFlow)
	}
	if rep := r2.d.Switch().Stats(); succeeded(rep) == 0 {
		t.Error("the next agent did not reconcile the NIC it found")
	}
}

package remote

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/securechan"
)

// keys is a host's and a NIC side's key pairs.
type keys struct {
	hostPriv, nicPriv securechan.PrivateKey
	hostPub, nicPub   securechan.PublicKey
}

func newKeys(t testing.TB) keys {
	t.Helper()
	var k keys
	var err error
	if k.hostPub, k.hostPriv, err = securechan.GenerateKey(nil); err != nil {
		t.Fatal(err)
	}
	if k.nicPub, k.nicPriv, err = securechan.GenerateKey(nil); err != nil {
		t.Fatal(err)
	}
	return k
}

var (
	macVM1    = hal.MAC{0x02, 0, 0, 0, 0, 1}
	macVM2    = hal.MAC{0x02, 0, 0, 0, 0, 2}
	macUplink = hal.MAC{0x02, 0, 0, 0, 0, 3}
)

func newSoftnic(t testing.TB, crypto bool) *softnic.NIC {
	t.Helper()
	n, err := softnic.New(softnic.Config{
		Crypto: crypto,
		Ports: []softnic.PortConfig{
			{Name: "vm1", Kind: hal.PortVPort, MAC: macVM1},
			{Name: "vm2", Kind: hal.PortVPort, MAC: macVM2},
			{Name: "uplink", Kind: hal.PortUplink, MAC: macUplink, MTU: 1600},
		},
		MaxRules: 1 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// testLogger writes through t.Log, so that refusals show in the test's
// output, and keeps the records for assertions.
type testLogger struct {
	mu   sync.Mutex
	msgs []string
}

func (l *testLogger) Enabled(context.Context, slog.Level) bool { return true }
func (l *testLogger) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := r.Level.String() + " " + r.Message
	r.Attrs(func(a slog.Attr) bool { s += " " + a.String(); return true })
	l.msgs = append(l.msgs, s)
	return nil
}
func (l *testLogger) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *testLogger) WithGroup(string) slog.Handler      { return l }

func (l *testLogger) has(sub string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.msgs {
		if contains(m, sub) {
			return true
		}
	}
	return false
}

func (l *testLogger) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.msgs...)
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// served is a NIC served on a unix socket.
type served struct {
	srv    *Server
	addr   string
	ln     net.Listener
	cancel context.CancelFunc
	done   chan struct{}
	log    *testLogger
}

func (s *served) stop() {
	s.cancel()
	<-s.done
}

func sockPath(t testing.TB) string {
	// Unix socket paths are short; TempDir's may not be.
	dir, err := os.MkdirTemp("", "remote")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "nic.sock")
}

func serve(t testing.TB, nic hal.NIC, k keys, path string, tweak func(*ServerConfig)) *served {
	t.Helper()
	lg := &testLogger{}
	cfg := ServerConfig{PrivateKey: k.nicPriv, HostKeys: []securechan.PublicKey{k.hostPub}, Logger: slog.New(lg)}
	if tweak != nil {
		tweak(&cfg)
	}
	srv, err := NewServer(nic, cfg)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	ln, err := Listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{srv: srv, addr: "unix:" + path, ln: ln, cancel: cancel, done: make(chan struct{}), log: lg}
	go func() {
		defer close(s.done)
		srv.Serve(ctx, ln)
	}()
	t.Cleanup(s.stop)
	return s
}

func clientConfig(k keys, addr string) Config {
	return Config{Address: addr, PrivateKey: k.hostPriv, ServerKey: k.nicPub, Logger: slog.New(&testLogger{})}
}

func open(t testing.TB, cfg Config) hal.NIC {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// exactRule is an exact-match IPv4/UDP rule from vm1 toward the uplink
// with a VXLAN encapsulation, as the vswitch installs for a connection.
func exactRule(id hal.RuleID, sport uint16) hal.Rule {
	k := hal.FlowKey{InPort: 1, EthSrc: macVM1, EthDst: macVM2, EthType: hal.EtherTypeIPv4, Proto: hal.ProtoUDP,
		IPSrc: hal.Addr16(netip.MustParseAddr("10.0.0.1")), IPDst: hal.Addr16(netip.MustParseAddr("10.0.0.2")),
		L4Src: sport, L4Dst: 53}
	return hal.Rule{ID: id, Priority: 10, Match: hal.Exact(&k), Cookie: 0xC0FFEE, Actions: []hal.Action{
		hal.SetEthDst(hal.MAC{0x02, 0, 0, 0, 0, 9}),
		hal.EncapWith(hal.Encap{Kind: hal.EncapVXLAN, VNI: 1001, Src: netip.MustParseAddr("198.18.0.1"),
			Dst: netip.MustParseAddr("198.18.0.2"), SrcMAC: macUplink, DstMAC: hal.MAC{0x02, 0, 0, 0, 0, 0xfe}}),
		hal.Count(), hal.Output(3)}}
}

func dumpIDs(t testing.TB, n hal.NIC) map[hal.RuleID]hal.Rule {
	t.Helper()
	out := map[hal.RuleID]hal.Rule{}
	err := n.Dump(context.Background(), func(ri *hal.RuleInfo) error {
		if _, dup := out[ri.Rule.ID]; dup {
			t.Errorf("rule %d dumped twice", ri.Rule.ID)
		}
		out[ri.Rule.ID] = ri.Rule
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func slogOf(h slog.Handler) *slog.Logger { return slog.New(h) }

// replaySession sends recorded frames on a new connection to addr, as an
// attacker replaying a session would, and reads until the server hangs up.
func replaySession(t testing.TB, addr string, frames [][]byte) {
	t.Helper()
	network, where, _ := splitAddress(addr)
	c, err := net.Dial(network, where)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, f := range frames {
		p := []byte{byte(len(f) >> 8), byte(len(f))}
		if _, err := c.Write(append(p, f...)); err != nil {
			return // the server hung up: refused
		}
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}

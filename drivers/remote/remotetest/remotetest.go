package remotetest

import (
	"context"
	"crypto/rand"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nicpath/nicpath/drivers/remote"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/securechan"
)

// Keys are the host's and the NIC side's key pairs.
type Keys struct {
	HostPub  securechan.PublicKey
	HostPriv securechan.PrivateKey
	NICPub   securechan.PublicKey
	NICPriv  securechan.PrivateKey
}

// NewKeys makes two fresh key pairs.
func NewKeys(t testing.TB) Keys {
	t.Helper()
	var k Keys
	var err error
	if k.HostPub, k.HostPriv, err = securechan.GenerateKey(nil); err != nil {
		t.Fatal(err)
	}
	if k.NICPub, k.NICPriv, err = securechan.GenerateKey(nil); err != nil {
		t.Fatal(err)
	}
	return k
}

// KeyFiles writes two fresh key pairs into dir as an agent's configuration
// and nicd name them: host.key and host.pub (named host-a), nic.key and
// nic.pub (named nicd), and returns them as read back from the files.
func KeyFiles(t testing.TB, dir string) Keys {
	t.Helper()
	var k Keys
	var err error
	for _, f := range []struct {
		name string
		pub  *securechan.PublicKey
		priv *securechan.PrivateKey
		file string
	}{{"host-a", &k.HostPub, &k.HostPriv, "host"}, {"nicd", &k.NICPub, &k.NICPriv, "nic"}} {
		key, pub := filepath.Join(dir, f.file+".key"), filepath.Join(dir, f.file+".pub")
		if *f.pub, err = remote.GenerateKeyFiles(rand.Reader, key, pub, f.name); err != nil {
			t.Fatal(err)
		}
		if *f.priv, err = remote.LoadPrivateKey(key); err != nil {
			t.Fatal(err)
		}
	}
	return k
}

// ServerConfig is the NIC side's configuration: its private key, the
// host's public key pinned.
func (k Keys) ServerConfig() remote.ServerConfig {
	return remote.ServerConfig{PrivateKey: k.NICPriv, HostKeys: []securechan.PublicKey{k.HostPub}}
}

// Config is the host side's configuration for addr: its private key, the
// NIC side's public key pinned, logs discarded.
func (k Keys) Config(addr string) remote.Config {
	return remote.Config{Address: addr, PrivateKey: k.HostPriv, ServerKey: k.NICPub, Logger: slog.New(slog.DiscardHandler)}
}

// Dir makes a short temporary directory, removed at cleanup: a unix
// socket's path is limited to 108 bytes, and t.TempDir's may be longer.
func Dir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Server is a NIC side serving one NIC on one address.
type Server struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// StartServer serves nic on addr with cfg until Stop. It registers no
// cleanup: the caller stops it.
func StartServer(nic hal.NIC, addr string, cfg remote.ServerConfig) (*Server, error) {
	srv, err := remote.NewServer(nic, cfg)
	if err != nil {
		return nil, err
	}
	ln, err := remote.Listen(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		srv.Serve(ctx, ln)
	}()
	return s, nil
}

// Serve serves nic on addr to the host key of k until Stop or the test's
// cleanup.
func Serve(t testing.TB, nic hal.NIC, addr string, k Keys) *Server {
	t.Helper()
	s, err := StartServer(nic, addr, k.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Stop stops serving and waits until the server is done: the listener
// and every connection closed. Stopping twice is harmless.
func (s *Server) Stop() {
	s.cancel()
	<-s.done
}

// Open opens the host side with cfg, giving up after 10 s; the NIC is
// closed at cleanup.
func Open(t testing.TB, cfg remote.Config) hal.NIC {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := remote.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// SoftnicSection is a NIC side configuration's (nicd's) softnic section:
// device dpu0 with vports vm1 and vm2 and an uplink of MTU 1600.
const SoftnicSection = `softnic:
  device: dpu0
  ports:
    - {name: vm1, kind: vport, mac: "02:00:00:00:00:01"}
    - {name: vm2, kind: vport, mac: "02:00:00:00:00:02"}
    - {name: uplink, kind: uplink, mac: "02:00:00:00:00:ff", mtu: 1600}
`

// WriteNICConfig writes body into dir as the NIC side's configuration
// file, nicd.yaml, and returns its path; its key files (KeyFiles) and
// relative paths are found beside it.
func WriteNICConfig(t testing.TB, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "nicd.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Bed is one NIC side's place: the keys, a short directory and the socket
// address in it. Servers started there one after another stand for the
// NIC side restarting.
type Bed struct {
	Keys
	Dir  string // removed at cleanup
	Addr string // "unix:" + Dir/nic.sock
}

// NewBed makes fresh keys and a fresh directory.
func NewBed(t testing.TB) *Bed {
	t.Helper()
	dir := Dir(t, "remotetest")
	return &Bed{Keys: NewKeys(t), Dir: dir, Addr: "unix:" + filepath.Join(dir, "nic.sock")}
}

// NewBedFiles is NewBed with the keys written into the directory as
// KeyFiles writes them, for configurations that name key files.
func NewBedFiles(t testing.TB) *Bed {
	t.Helper()
	dir := Dir(t, "remotetest")
	return &Bed{Keys: KeyFiles(t, dir), Dir: dir, Addr: "unix:" + filepath.Join(dir, "nic.sock")}
}

// Serve starts a server on nic at the bed's address.
func (b *Bed) Serve(t testing.TB, nic hal.NIC) *Server {
	t.Helper()
	return Serve(t, nic, b.Addr, b.Keys)
}

// Open opens the host side to the bed's address; tweak, if not nil,
// changes the configuration first (hooks, a logger).
func (b *Bed) Open(t testing.TB, tweak func(*remote.Config)) hal.NIC {
	t.Helper()
	cfg := b.Config(b.Addr)
	if tweak != nil {
		tweak(&cfg)
	}
	return Open(t, cfg)
}

// Start serves nic with fresh keys on a fresh socket and returns the host
// side opened to it; both are stopped at cleanup, the host side first.
func Start(t testing.TB, nic hal.NIC) hal.NIC {
	t.Helper()
	b := NewBed(t)
	b.Serve(t, nic)
	return b.Open(t, nil)
}

// Rules is n's table by rule ID, as Dump gives it (through the channel or
// on the served NIC itself); a rule dumped twice fails t.
func Rules(t testing.TB, n hal.NIC) map[hal.RuleID]hal.Rule {
	t.Helper()
	out := map[hal.RuleID]hal.Rule{}
	if err := n.Dump(context.Background(), func(ri *hal.RuleInfo) error {
		if _, dup := out[ri.Rule.ID]; dup {
			t.Errorf("rule %d twice in the dump", ri.Rule.ID)
		}
		out[ri.Rule.ID] = ri.Rule
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// SameRules fails t unless got holds exactly want's rule IDs, each with
// want's match, cookie and number of actions; what names the table.
func SameRules(t testing.TB, what string, got, want map[hal.RuleID]hal.Rule) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d rules, want %d", what, len(got), len(want))
	}
	for id, w := range want {
		g, ok := got[id]
		if !ok || g.Match != w.Match || g.Cookie != w.Cookie || len(g.Actions) != len(w.Actions) {
			t.Fatalf("%s: rule %d is %v, want %v", what, id, &g, &w)
		}
	}
}

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nicpath/nicpath/drivers/remote"
	"github.com/nicpath/nicpath/drivers/remote/remotetest"
	"github.com/nicpath/nicpath/hal"
)

// keys writes a NIC side's and a host's key files into dir with nicd
// keygen.
func keys(t *testing.T, dir string) {
	t.Helper()
	for _, who := range []string{"nic", "host"} {
		var out bytes.Buffer
		err := run(context.Background(), []string{"keygen", "-key", filepath.Join(dir, who+".key"), "-pub", filepath.Join(dir, who+".pub"), "-name", who}, &out, &out, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "public key ") {
			t.Fatalf("keygen said %q", out.String())
		}
	}
}

func TestKeygen(t *testing.T) {
	dir := t.TempDir()
	keys(t, dir)
	st, err := os.Stat(filepath.Join(dir, "nic.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key file mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
	priv, err := remote.LoadPrivateKey(filepath.Join(dir, "nic.key"))
	if err != nil {
		t.Fatal(err)
	}
	pubs, err := remote.LoadPublicKeys(filepath.Join(dir, "nic.pub"))
	if err != nil || len(pubs) != 1 || pubs[0] != priv.Public() {
		t.Fatalf("public key file does not hold the private key's public half: %v", err)
	}
	// keygen never overwrites a private key.
	err = run(context.Background(), []string{"keygen", "-key", filepath.Join(dir, "nic.key"), "-pub", filepath.Join(dir, "x.pub")}, &bytes.Buffer{}, &bytes.Buffer{}, nil)
	if !errors.Is(err, os.ErrExist) {
		t.Fatalf("keygen over an existing key: %v", err)
	}
	// A private key others may read is refused.
	os.Chmod(filepath.Join(dir, "nic.key"), 0o644)
	if _, err := remote.LoadPrivateKey(filepath.Join(dir, "nic.key")); !errors.Is(err, remote.ErrKeyFile) {
		t.Fatalf("a world-readable private key: %v", err)
	}
}

// TestServe: nicd serves a softnic on a unix socket and on TCP; a host
// with the pinned keys programs it through either, and an unpinned host is
// refused.
func TestServe(t *testing.T) {
	dir := remotetest.Dir(t, "nicd")
	keys(t, dir)
	sock := filepath.Join(dir, "nicd.sock")
	p := remotetest.WriteNICConfig(t, dir, "driver: softnic\nkey: nic.key\nhosts: [host.pub]\nlisten: [unix:"+sock+", tcp:127.0.0.1:0]\n"+remotetest.SoftnicSection)
	var out bytes.Buffer
	if err := run(context.Background(), []string{"serve", "-config", p, "-check"}, &out, &out, nil); err != nil || !strings.Contains(out.String(), "ok") {
		t.Fatalf("-check: %v %s", err, out.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan []string, 1)
	done := make(chan error, 1)
	var logs bytes.Buffer
	go func() {
		done <- run(ctx, []string{"serve", "-config", p}, &bytes.Buffer{}, &lockedWriter{w: &logs}, func(a []string) { addrs <- a })
	}()
	var served []string
	select {
	case served = <-addrs:
	case err := <-done:
		t.Fatalf("nicd exited: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("nicd did not come up")
	}
	nicPub, err := remote.LoadPublicKeys(filepath.Join(dir, "nic.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if len(served) != 2 || !strings.HasPrefix(served[1], "tcp:127.0.0.1:") {
		t.Fatalf("served on %v", served)
	}
	for i, addr := range served {
		// The host names its key files, as a daemon's configuration would.
		n, err := remote.Open(context.Background(), remote.Config{Address: addr,
			KeyFile: filepath.Join(dir, "host.key"), ServerKeyFile: filepath.Join(dir, "nic.pub")})
		if err != nil {
			t.Fatalf("open %s: %v", addr, err)
		}
		if len(n.Ports()) != 3 || n.Capabilities().Device == "" {
			t.Errorf("%s: ports %v", addr, n.Ports())
		}
		r := hal.Rule{ID: hal.RuleID(i + 1), Priority: 1, Actions: []hal.Action{hal.Output(3)}}
		r.Match.InPort(hal.PortID(i + 1))
		res := make([]hal.OpResult, 1)
		if err := n.Apply(context.Background(), []hal.Op{hal.AddOp(r)}, res); err != nil {
			t.Fatalf("apply through %s: %v", addr, err)
		}
		count := 0
		n.Dump(context.Background(), func(*hal.RuleInfo) error { count++; return nil })
		if count != i+1 {
			t.Errorf("through %s the NIC holds %d rules, want %d", addr, count, i+1)
		}
		n.Close()
	}
	// A host whose key nicd has not pinned.
	stranger, _ := remote.LoadPrivateKey(filepath.Join(dir, "nic.key"))
	if _, err := remote.Open(context.Background(), remote.Config{Address: served[0], PrivateKey: stranger, ServerKey: nicPub[0]}); !errors.Is(err, remote.ErrHandshake) {
		t.Errorf("an unpinned host: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("nicd: %v", err)
	}
}

// TestVsock: nicd listens on vsock where the kernel has AF_VSOCK. A
// connection needs a peer on another CID (a VM and its host, a DPU and its
// host) or the vsock_loopback transport; this test makes none, so it
// checks the listener only.
func TestVsock(t *testing.T) {
	// vsock ports are the machine's, not a namespace's: one per process,
	// so that two runs of this test at once do not collide.
	port := fmt.Sprint(1<<20 + os.Getpid())
	ln, err := remote.Listen("vsock:any:" + port)
	if err != nil {
		if _, serr := os.Stat("/dev/vsock"); serr != nil {
			t.Skipf("no AF_VSOCK on this machine (%v): vsock is not served here", err)
		}
		t.Fatalf("vsock listen with /dev/vsock present: %v", err)
	}
	defer ln.Close()
	if ln.Addr().Network() != "vsock" || !strings.HasSuffix(ln.Addr().String(), ":"+port) {
		t.Fatalf("listener address %v", ln.Addr())
	}
}

// lockedWriter serialises writes of nicd's logger with the test's reads.
type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

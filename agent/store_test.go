package agent

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nicpath/nicpath/control"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/store"
)

// The tests' stores: a scheme registered with store.Open, so that the
// daemon opens its store from the configuration as it would open etcd.
var (
	testStoresMu sync.Mutex
	testStores   = map[string]store.KV{}
)

func init() {
	store.Register("daemontest", func(spec string) (store.Store, error) {
		testStoresMu.Lock()
		defer testStoresMu.Unlock()
		kv, ok := testStores[spec]
		if !ok {
			// Nobody serves it: like an etcd client whose server is
			// down, opening works and every call fails.
			m := store.NewMemory()
			m.SetAvailable(false)
			kv = m
		}
		return store.NewKV(kv, ""), nil
	})
}

// noClose keeps the shared in-memory KV open when one daemon's store closes.
type noClose struct{ store.KV }

func (noClose) Close() error { return nil }

// storeConfig publishes the example policy to a fresh in-memory store and
// writes host-a's configuration following it.
func storeConfig(t *testing.T, extra string) (cfgPath string, mem *store.Memory, s *store.KVStore, rev int64) {
	t.Helper()
	st, err := policy.LoadFile(examplePolicy)
	if err != nil {
		t.Fatal(err)
	}
	mem = store.NewMemory()
	s = store.NewKV(mem, "")
	rev, err = s.Publish(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	spec := "daemontest://" + strings.ReplaceAll(t.Name(), "/", "-") + "/"
	testStoresMu.Lock()
	testStores[spec] = noClose{mem}
	testStoresMu.Unlock()
	t.Cleanup(func() {
		testStoresMu.Lock()
		delete(testStores, spec)
		testStoresMu.Unlock()
	})
	dir := t.TempDir()
	cfg := `host: host-a
driver: softnic
binding: none
store: ` + spec + `
uplink: up0
ports:
  blue-web-1: vm-bw1
  red-app-2: vm-ra2
  red-fw: vm-rfw
  blue-web-2: vm-bw2
control: ` + filepath.Join(dir, "ctl.sock") + `
log_level: debug
` + extra
	cfgPath = filepath.Join(dir, "vswitchd.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfgPath, mem, s, rev
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recvOn waits for one frame on a softnic port's far side.
func (r *running) recvOn(t *testing.T, port string) []byte {
	t.Helper()
	p, ok := r.d.SoftPort(port)
	if !ok {
		t.Fatalf("no port %s", port)
	}
	bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := p.Recv(bufs, sizes)
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			return append([]byte(nil), bufs[0][:sizes[0]]...)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no frame on %s\nlogs:\n%s", port, r.logs.String())
		}
		time.Sleep(time.Millisecond)
	}
}

func (r *running) show(t *testing.T) control.Show {
	t.Helper()
	var s control.Show
	if err := call(t, r, "show", nil, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestDaemonFollowsStore: the daemon runs the store's state, applies a
// committed change atomically (blue-web-2 moves to this host: its packets
// stop going to the uplink and reach its local port), reports its status to
// the store, and says so in show and the metrics.
func TestDaemonFollowsStore(t *testing.T) {
	cfgPath, _, s, published := storeConfig(t, "")
	r := startDaemon(t, cfgPath, nil)
	ctx := context.Background()
	if sh := r.show(t); sh.Store == nil || sh.Store.Revision != published || sh.Store.Stale || sh.PolicyFile != "" {
		t.Fatalf("show: %+v %+v", sh, sh.Store)
	}
	// blue-web-2 is on host-b: a frame to it is encapsulated to 198.18.0.2.
	if out := r.send(t, udpFrame(4000)); len(out) != 1 {
		t.Fatal("no frame on the uplink")
	}
	// The store activates blue-web-2's shadow on host-a (the policy has
	// it): the VM manager's activation record.
	rev, err := s.Commit(ctx, new(store.Change).Put(policy.Activation{VM: "blue-web-2", Generation: 2}))
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the daemon to apply the change", func() bool { return r.d.Follower().Applied().Revision == rev })
	if h, _, _, _ := r.d.State().Location("blue-web-2"); h != "host-a" {
		t.Fatalf("the daemon's state puts blue-web-2 on %s", h)
	}
	vmPort, _ := r.d.SoftPort("blue-web-1")
	if _, err := vmPort.Send([][]byte{udpFrame(4001)}); err != nil {
		t.Fatal(err)
	}
	got := r.recvOn(t, "blue-web-2")
	if hal.MAC(got[0:6]) != macBW2 {
		t.Fatalf("frame on blue-web-2's port is for %v", hal.MAC(got[0:6]))
	}
	// The host's status in the store.
	waitUntil(t, "the status report", func() bool {
		sts, _, _ := s.Statuses(ctx)
		return sts["host-a"].Revision == rev
	})
	if sh := r.show(t); sh.Store.Revision != rev {
		t.Fatalf("show: store revision %d, want %d", sh.Store.Revision, rev)
	}
	text := scrape(t, r)
	for _, want := range []string{"nicpath_store_revision " + strconv.FormatInt(rev, 10), "nicpath_store_stale 0", `nicpath_policy_updates_total{result="applied"} 1`} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func scrape(t *testing.T, r *running) string {
	t.Helper()
	srv := httptest.NewServer(r.d.MetricsHandler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// TestDaemonStoreOutage: with the store unreachable the daemon says it is
// stale and goes on forwarding on its last state; when the store is back it
// resyncs and applies what changed meanwhile.
func TestDaemonStoreOutage(t *testing.T) {
	cfgPath, mem, s, _ := storeConfig(t, "")
	r := startDaemon(t, cfgPath, nil)
	ctx := context.Background()
	mem.SetAvailable(false)
	waitUntil(t, "stale", func() bool { sh := r.show(t); return sh.Store.Stale })
	if text := scrape(t, r); !strings.Contains(text, "nicpath_store_stale 1") {
		t.Error("metrics do not say stale")
	}
	// Still forwarding on the last state.
	if out := r.send(t, udpFrame(4100)); len(out) != 1 {
		t.Fatal("not forwarding while the store is down")
	}
	mem.SetAvailable(true)
	rev, err := s.Commit(ctx, new(store.Change).Put(policy.Activation{VM: "blue-web-2", Generation: 2}))
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "resync", func() bool {
		sh := r.show(t)
		return !sh.Store.Stale && sh.Store.Revision == rev
	})
	if sh := r.show(t); sh.Store.Resyncs == 0 {
		t.Fatalf("no resync counted: %+v", sh.Store)
	}
}

// TestDaemonStoreRefusals: a state without this host is refused and the
// running state kept (the error reaches show and the store's status); the
// control commands that would change the state locally are refused.
func TestDaemonStoreRefusals(t *testing.T) {
	cfgPath, _, s, _ := storeConfig(t, "")
	r := startDaemon(t, cfgPath, nil)
	ctx := context.Background()
	for _, cmd := range [][]string{{"reload"}, {"activate", "blue-web-1"}} {
		err := call(t, r, cmd[0], cmd[1:], nil)
		if err == nil || !strings.Contains(err.Error(), "follows the store") {
			t.Errorf("%q: %v; want a refusal naming the store", cmd, err)
		}
	}
	before := r.d.State()
	if _, err := s.Commit(ctx, new(store.Change).Delete(policy.Host{Name: "host-a"})); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the refusal in show", func() bool { return strings.Contains(r.show(t).Store.Error, "host-a") })
	if r.d.State() != before {
		t.Fatal("a state without this host replaced the running one")
	}
	if out := r.send(t, udpFrame(4200)); len(out) != 1 {
		t.Fatal("not forwarding on the kept state")
	}
	waitUntil(t, "the error in the store's status", func() bool {
		sts, _, _ := s.Statuses(ctx)
		return strings.Contains(sts["host-a"].Error, "host-a")
	})
}

// TestDaemonStoreUnreachableAtStart: with no first state there is nothing
// to run; New says why within store_timeout and leaves nothing open.
func TestDaemonStoreUnreachableAtStart(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "vswitchd.yaml")
	cfg := "host: host-a\ndriver: softnic\nbinding: none\nstore: daemontest://nobody/\nstore_timeout: 300ms\nuplink: up0\ncontrol: " +
		filepath.Join(dir, "ctl.sock") + "\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = New(context.Background(), c)
	if err == nil || !strings.Contains(err.Error(), "no state within 300ms") {
		t.Fatalf("New: %v", err)
	}
	if time.Since(start) > 15*time.Second { // bounded by the 300ms, not the 30s default; room for a loaded machine
		t.Fatalf("New took %s", time.Since(start))
	}
	if _, err := os.Stat(filepath.Join(dir, "ctl.sock")); err == nil {
		t.Fatal("a control socket was left behind")
	}
}

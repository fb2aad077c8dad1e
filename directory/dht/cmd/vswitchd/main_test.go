package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/nicpath/nicpath/agent"
	"github.com/nicpath/nicpath/control"
	"github.com/nicpath/nicpath/directory"
	"github.com/nicpath/nicpath/directory/dht"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
)

const examplePolicy = "../../../../examples/policies/two-tenants.yaml"

func seedKey(t *testing.T, i byte) ([]byte, crypto.PrivKey, peer.ID) {
	seed := bytes.Repeat([]byte{0x5a, i}, ed25519.SeedSize/2)
	k, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(seed))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return seed, k, id
}

// TestVswitchdResolvesThroughTheDHT runs this vswitchd (its command line,
// its configuration files) for host-a of the example policy, in process on
// an unbound softnic, with a DHT node from its configuration joined to
// three others: blue-web-1's first packet to blue-db-1 (host-b) waits for
// the lookup and leaves encapsulated toward host-b; an address nobody
// published is answered "no record" and dropped; stats and explain say so.
func TestVswitchdResolvesThroughTheDHT(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	mgr := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	trusted := mgr.Public().(ed25519.PublicKey)

	const others = 3
	var ids []peer.ID
	var keys []crypto.PrivKey
	for i := range others + 1 {
		_, k, id := seedKey(t, byte(i))
		keys, ids = append(keys, k), append(ids, id)
	}
	var nodes []*dht.Node
	for i := range others {
		c := dht.Config{Key: keys[i], Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Transports: []string{"tcp"},
			Peers: ids, Trusted: []ed25519.PublicKey{trusted}}
		for _, n := range nodes {
			c.Bootstrap = append(c.Bootstrap, n.AddrInfo())
		}
		n, err := dht.New(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		if err := n.Join(ctx); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	st, err := policy.LoadFile(examplePolicy)
	if err != nil {
		t.Fatal(err)
	}
	if err := directory.PublishVM(ctx, nodes[0], mgr, st, "blue-db-1"); err != nil {
		t.Fatal(err)
	}

	// host-a's configuration files.
	pol, err := os.ReadFile(examplePolicy)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("policy.yaml", string(pol))
	sock := filepath.Join(dir, "ctl.sock")
	cfg := write("vswitchd.yaml", `host: host-a
driver: softnic
binding: none
policy: policy.yaml
uplink: up0
ports:
  blue-web-1: vm-bw1
  red-app-2: vm-ra2
  red-fw: vm-rfw
  blue-web-2: vm-bw2
control: `+sock+"\n")
	seed, _, _ := seedKey(t, others)
	write("node.key", hex.EncodeToString(seed)+"\n")
	var boot, peers []string
	for _, n := range nodes {
		ai := n.AddrInfo()
		boot = append(boot, fmt.Sprintf("%s/p2p/%s", ai.Addrs[0], ai.ID))
	}
	for _, id := range ids {
		peers = append(peers, id.String())
	}
	dcfg := write("dht.yaml", fmt.Sprintf(`key: node.key
listen: [/ip4/127.0.0.1/tcp/0]
transports: [tcp]
security: [noise]
bootstrap: [%s]
peers: [%s]
trusted: [%s]
cache: {ttl: 1m, negative_ttl: 1m, timeout: 10s}
`, strings.Join(boot, ", "), strings.Join(peers, ", "), hex.EncodeToString(trusted)))

	started := make(chan *agent.Agent, 1)
	done := make(chan int, 1)
	var out, errOut bytes.Buffer
	rctx, stop := context.WithCancel(ctx)
	go func() {
		done <- run(rctx, []string{"-config", cfg, "-dht", dcfg}, &out, &errOut, func(a *agent.Agent) { started <- a })
	}()
	var a *agent.Agent
	select {
	case a = <-started:
	case code := <-done:
		t.Fatalf("vswitchd exited %d:\n%s", code, errOut.String())
	}
	defer func() {
		stop()
		if code := <-done; code != 0 {
			t.Errorf("vswitchd exited %d:\n%s", code, errOut.String())
		}
	}()

	vm, _ := a.SoftPort("blue-web-1")
	up, _ := a.SoftPort("uplink")
	syn := func(dst netip.Addr) []byte {
		return wire.Build(wire.FrameSpec{SrcMAC: hal.MustMAC("02:00:00:0b:00:01"), DstMAC: hal.MAC(st.RouterMAC()),
			Src: netip.MustParseAddr("10.0.0.10"), Dst: dst, Proto: hal.ProtoTCP, TCPFlags: 0x02, SrcPort: 40000, DstPort: 5432})
	}
	if _, err := vm.Send([][]byte{syn(netip.MustParseAddr("10.0.1.10"))}); err != nil {
		t.Fatal(err)
	}
	bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := up.Recv(bufs, sizes)
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the first packet never left the uplink\n%s", errOut.String())
		}
		time.Sleep(time.Millisecond)
	}
	var k hal.FlowKey
	var lay wire.Layout
	if err := wire.Parse(bufs[0][:sizes[0]], 0, &k, &lay); err != nil {
		t.Fatal(err)
	}
	if k.TunKind != hal.EncapVXLAN || k.VNI != 1002 || k.Dst() != netip.MustParseAddr("10.0.1.10") {
		t.Fatalf("the packet left as %+v", k)
	}

	// 10.0.1.99 is in blue's db subnet and nobody published it.
	if _, err := vm.Send([][]byte{syn(netip.MustParseAddr("10.0.1.99"))}); err != nil {
		t.Fatal(err)
	}
	c := &control.Client{Path: sock, Timeout: 5 * time.Second}
	var s control.Stats
	for {
		s = control.Stats{}
		if err := c.Call(ctx, "stats", nil, &s); err != nil {
			t.Fatal(err)
		}
		if s.OnDemand != nil && s.OnDemand.Negative == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats: %+v\n%s", s.OnDemand, errOut.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if o := s.OnDemand; o.Lookups != 2 || o.Held != 2 || o.Released != 2 || o.DroppedTimeout != 0 || o.QueueDepth != 0 {
		t.Fatalf("stats: %+v", *o)
	}
	var x control.Explanation
	if err := c.Call(ctx, "explain", []string{"blue-web-1", "10.0.0.10", "10.0.1.99", "tcp", "40000", "5432"}, &x); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(x.Directory, "the directory has no record") {
		t.Fatalf("explain: %+v", x)
	}
}

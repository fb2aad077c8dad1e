package dht

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/nicpath/nicpath/directory"
)

// managerKey is the VM manager's signing key in the tests.
var managerKey = ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))

func nodeKey(t testing.TB, i int) crypto.PrivKey {
	seed := make([]byte, ed25519.SeedSize)
	seed[0], seed[1] = 0xd7, byte(i)
	k, _, err := crypto.GenerateEd25519Key(&seedReader{seed})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type seedReader struct{ b []byte }

func (r *seedReader) Read(p []byte) (int, error) {
	n := copy(p, r.b)
	return n, nil
}

// testNet is n nodes on loopback in this process.
type testNet struct {
	t     testing.TB
	keys  []crypto.PrivKey
	ids   []peer.ID
	nodes []*Node // nil when stopped
	mut   func(i int, c *Config)
}

// liveDialTimeout bounds the test nets' dials (Config.DialTimeout): their
// peers stay up, and under the race detector on a loaded machine a dial
// and its security handshake overran the default 1 s ("failed to negotiate
// security protocol: context deadline exceeded"). Tests whose nodes leave
// use departing.
const liveDialTimeout = 15 * time.Second

// departing is the configuration change of the tests in which nodes
// leave: a dial to a departed node (a QUIC dial gets no answer at all)
// gives up after the node's default DialTimeout, as a deployment's does,
// and a lookup goes on to the next peer within the test's bounds.
func departing(c *Config) { c.DialTimeout = 0 }

func (tn *testNet) config(i int) Config {
	c := Config{Key: tn.keys[i], Listen: []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"},
		Peers: tn.ids, Trusted: []ed25519.PublicKey{managerKey.Public().(ed25519.PublicKey)}, DialTimeout: liveDialTimeout}
	// Every node bootstraps through the first three that run.
	for j, n := range tn.nodes {
		if j != i && n != nil && len(c.Bootstrap) < 3 {
			c.Bootstrap = append(c.Bootstrap, n.AddrInfo())
		}
	}
	if tn.mut != nil {
		tn.mut(i, &c)
	}
	return c
}

func startNet(t testing.TB, n int, mut func(int, *Config)) *testNet {
	tn := &testNet{t: t, mut: mut, nodes: make([]*Node, n)}
	for i := range n {
		tn.keys = append(tn.keys, nodeKey(t, i))
		id, err := peer.IDFromPrivateKey(tn.keys[i])
		if err != nil {
			t.Fatal(err)
		}
		tn.ids = append(tn.ids, id)
	}
	for i := range n {
		tn.start(i)
	}
	t.Cleanup(func() {
		for i := range tn.nodes {
			tn.stop(i)
		}
	})
	return tn
}

func (tn *testNet) start(i int) *Node {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nd, err := New(context.Background(), tn.config(i))
	if err != nil {
		tn.t.Fatal(err)
	}
	if err := nd.Join(ctx); err != nil {
		tn.t.Fatal(err)
	}
	tn.nodes[i] = nd
	return nd
}

func (tn *testNet) stop(i int) {
	if tn.nodes[i] != nil {
		tn.nodes[i].Close()
		tn.nodes[i] = nil
	}
}

func (tn *testNet) live() []*Node {
	var out []*Node
	for _, n := range tn.nodes {
		if n != nil {
			out = append(out, n)
		}
	}
	return out
}

// waitTables waits until every live node's routing table holds at least min
// peers. A node short of peers is also connected to more of the
// deployment (what a longer bootstrap list in its configuration would do):
// under the race detector on a loaded machine a refresh can time out.
func (tn *testNet) waitTables(min int) {
	deadline := time.Now().Add(3 * time.Minute)
	for _, n := range tn.live() {
		for j := 0; n.DHT.RoutingTable().Size() < min; j++ {
			if time.Now().After(deadline) {
				tn.t.Fatalf("node %s: routing table has %d peers, want %d", n.Host.ID(), n.DHT.RoutingTable().Size(), min)
			}
			if o := tn.nodes[j%len(tn.nodes)]; o != nil && o != n {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				n.Host.Connect(ctx, o.AddrInfo())
				cancel()
			}
			n.DHT.RefreshRoutingTable()
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func rec(i int, ver uint64, host string, pa string) directory.Record {
	r := directory.Record{VNI: 100, CA: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), MAC: [6]byte{2, 0, 0, 0, byte(i >> 8), byte(i)},
		VM: fmt.Sprintf("vm%d", i), Tenant: "t", VNET: "net", Version: ver,
		Loc: directory.Location{Host: host, PA: netip.MustParseAddr(pa), Generation: 1}}
	if _, err := directory.Sign(&r, managerKey); err != nil {
		panic(err)
	}
	return r
}

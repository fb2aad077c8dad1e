package dht

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/nicpath/nicpath/directory"
)

func resolveAll(t *testing.T, ctx context.Context, from []*Node, recs []directory.Record) {
	t.Helper()
	for i, r := range recs {
		n := from[i%len(from)]
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		got, err := n.Resolve(lctx, r.VNI, r.CA)
		cancel()
		if err != nil {
			t.Fatalf("node %d resolving %s: %v", i%len(from), r.Key(), err)
		}
		if got.Version != r.Version || got.Loc != r.Loc || got.VM != r.VM {
			t.Fatalf("%s resolved to %+v, want %+v", r.Key(), got, r)
		}
	}
}

// Twenty nodes: records published through one are found from every other;
// an address nobody published is not found; then a third of the nodes
// leave and every record is still found.
func TestLookupsAndAThirdLeaves(t *testing.T) {
	ctx := context.Background()
	tn := startNet(t, 20, nil)
	tn.waitTables(5)
	var recs []directory.Record
	for i := range 30 {
		recs = append(recs, rec(i, 4, "host-a", "198.18.0.1"))
	}
	if err := tn.nodes[0].Publish(ctx, recs); err != nil {
		t.Fatal(err)
	}
	resolveAll(t, ctx, tn.live(), recs)
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err := tn.nodes[3].Resolve(lctx, 100, netip.MustParseAddr("10.9.9.9"))
	cancel()
	if !errors.Is(err, directory.ErrNotFound) {
		t.Fatalf("unpublished address: %v, want ErrNotFound", err)
	}
	for i := 0; i < 20; i += 3 { // 7 of 20 leave, the publisher among them
		tn.stop(i)
	}
	resolveAll(t, ctx, tn.live(), recs)
}

// A record signed by a key the deployment does not trust is refused by the
// node it is put on; a rogue node of the deployment that stores anything
// cannot make honest nodes return its forgery, even at a higher version.
func TestForgedRecordRefused(t *testing.T) {
	ctx := context.Background()
	tn := startNet(t, 6, func(i int, c *Config) {
		if i == 5 {
			c.validator = acceptAll{}
		}
	})
	tn.waitTables(3)
	good := rec(1, 4, "host-a", "198.18.0.1")
	if err := tn.nodes[0].Publish(ctx, []directory.Record{good}); err != nil {
		t.Fatal(err)
	}
	forger := ed25519.NewKeyFromSeed([]byte("a key the deployment never saw.."))
	bad := good
	bad.Version, bad.Loc.PA = 99, netip.MustParseAddr("203.0.113.66")
	if _, err := directory.Sign(&bad, forger); err != nil {
		t.Fatal(err)
	}
	if err := tn.nodes[1].Publish(ctx, []directory.Record{bad}); err == nil {
		t.Fatal("an honest node published a forged record")
	}
	// The rogue node stores it locally and pushes it to the others.
	_ = tn.nodes[5].Publish(ctx, []directory.Record{bad})
	for i := range 5 {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		got, err := tn.nodes[i].Resolve(lctx, good.VNI, good.CA)
		cancel()
		if err != nil || got.Loc.PA != good.Loc.PA || got.Version != 4 {
			t.Fatalf("node %d resolved %+v, %v; want the genuine record", i, got, err)
		}
	}
}

type acceptAll struct{}

func (acceptAll) Validate(string, []byte) error { return nil }
func (acceptAll) Select(_ string, vals [][]byte) (int, error) {
	// Prefers the last, as a forger would.
	return len(vals) - 1, nil
}

// The highest version wins on every node, whichever node published it.
func TestNewerVersionWins(t *testing.T) {
	ctx := context.Background()
	tn := startNet(t, 8, nil)
	tn.waitTables(4)
	old, newer := rec(2, 4, "host-a", "198.18.0.1"), rec(2, 5, "host-c", "198.18.0.3")
	if err := tn.nodes[0].Publish(ctx, []directory.Record{old}); err != nil {
		t.Fatal(err)
	}
	if err := tn.nodes[4].Publish(ctx, []directory.Record{newer}); err != nil {
		t.Fatal(err)
	}
	// Republishing the old version through the first node is refused by
	// its own store, which holds the newer one now or refuses a lower one.
	_ = tn.nodes[0].Publish(ctx, []directory.Record{old})
	resolveAll(t, ctx, tn.live(), []directory.Record{newer, newer, newer, newer, newer, newer, newer, newer})
}

// A node that restarts with its key rejoins through its bootstrap peers,
// resolves, and stores and serves the records published after it came back.
func TestRestartRejoinsAndServes(t *testing.T) {
	ctx := context.Background()
	tn := startNet(t, 8, func(_ int, c *Config) { c.Replication = 4 })
	tn.waitTables(3)
	before := rec(3, 4, "host-a", "198.18.0.1")
	if err := tn.nodes[1].Publish(ctx, []directory.Record{before}); err != nil {
		t.Fatal(err)
	}
	tn.stop(2)
	n := tn.start(2)
	tn.waitTables(3)
	resolveAll(t, ctx, []*Node{n}, []directory.Record{before})
	// Records after the restart: some land on the restarted node (it is
	// among the closest peers of some keys) and it serves them alone.
	var after []directory.Record
	for i := range 40 {
		after = append(after, rec(100+i, 4, "host-b", "198.18.0.2"))
	}
	had, _, err := n.Stored(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tn.nodes[0].Publish(ctx, after); err != nil {
		t.Fatal(err)
	}
	held, _, err := n.Stored(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if held <= had {
		t.Fatal("the restarted node stores none of 40 records published after it rejoined")
	}
	resolveAll(t, ctx, tn.live(), after)
}

// A node whose peer ID is not pinned in the deployment cannot join it.
func TestOutsiderRefused(t *testing.T) {
	ctx := context.Background()
	tn := startNet(t, 3, nil)
	outKey := nodeKey(t, 200)
	cfg := tn.config(0)
	cfg.Key = outKey
	id, _ := peer.IDFromPrivateKey(outKey)
	cfg.Peers = append(slices.Clone(cfg.Peers), id)
	out, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	r := rec(9, 4, "host-a", "198.18.0.1")
	if err := tn.nodes[0].Publish(ctx, []directory.Record{r}); err != nil {
		t.Fatal(err)
	}
	// A dialer may finish its side of the handshake before the node it
	// dials refuses it, so Join may not fail; but no connection stays.
	// (Join tries again for a while when none answers: its own bound.)
	jctx, jcancel := context.WithTimeout(ctx, 5*time.Second)
	_ = out.Join(jctx)
	jcancel()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	deadline := time.Now().Add(30 * time.Second)
	for len(out.Peers()) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if ps := out.Peers(); len(ps) > 0 {
		t.Fatalf("the outsider keeps connections to %v", ps)
	}
	if _, err := out.Resolve(cctx, r.VNI, r.CA); err == nil {
		t.Fatal("an outsider resolved a record")
	}
	for _, n := range tn.live() {
		for _, p := range n.Peers() {
			if p == out.Host.ID() {
				t.Fatal("a node kept a connection from an outsider")
			}
		}
	}
}

// Transports and security are the configuration's: each pair works, and the
// connection uses what was configured.
func TestTransportsAndSecurity(t *testing.T) {
	for _, c := range []struct{ tr, sec, listen, wantSec string }{
		{"tcp", "noise", "/ip4/127.0.0.1/tcp/0", "/noise"},
		{"tcp", "tls", "/ip4/127.0.0.1/tcp/0", "/tls/1.0.0"},
		{"quic", "tls", "/ip4/127.0.0.1/udp/0/quic-v1", ""},
	} {
		t.Run(c.tr+"+"+c.sec, func(t *testing.T) {
			ctx := context.Background()
			tn := startNet(t, 3, func(_ int, cfg *Config) {
				cfg.Transports, cfg.Security, cfg.Listen = []string{c.tr}, []string{c.sec}, []string{c.listen}
			})
			tn.waitTables(1)
			r := rec(7, 4, "host-a", "198.18.0.1")
			if err := tn.nodes[0].Publish(ctx, []directory.Record{r}); err != nil {
				t.Fatal(err)
			}
			resolveAll(t, ctx, tn.live(), []directory.Record{r})
			conns := tn.nodes[1].Host.Network().Conns()
			if len(conns) == 0 {
				t.Fatal("no connections")
			}
			for _, cn := range conns {
				st := cn.ConnState()
				if !strings.HasPrefix(string(st.Transport), c.tr) {
					t.Fatalf("connection over %q, want %q", st.Transport, c.tr)
				}
				if c.wantSec != "" && string(st.Security) != c.wantSec {
					t.Fatalf("connection secured by %q, want %q", st.Security, c.wantSec)
				}
			}
		})
	}
}

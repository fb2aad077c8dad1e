package dht

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p"
	kad "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	noise "github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/nicpath/nicpath/directory"
)

// Config configures one node.
type Config struct {
	// Key is the node's identity; its peer ID must be among Peers.
	Key crypto.PrivKey
	// Listen lists multiaddrs, e.g. /ip4/127.0.0.1/tcp/0 or
	// /ip4/127.0.0.1/udp/0/quic-v1.
	Listen []string
	// Transports names the transports: "tcp", "quic" (default both).
	Transports []string
	// Security names the secure channels in order of preference: "noise",
	// "tls" (default both, noise first).
	Security []string
	// Bootstrap lists peers to join through, with their addresses
	// (/ip4/…/tcp/…/p2p/ID). No public bootstrap is ever used.
	Bootstrap []peer.AddrInfo
	// Peers pins the deployment: a node talks to these peer IDs only.
	Peers []peer.ID
	// ProtocolPrefix of the private DHT (default "/nicpath").
	ProtocolPrefix string
	// Trusted lists the VM managers' keys records must be signed with.
	Trusted []ed25519.PublicKey
	// Quorum is how many answers a lookup collects before it returns the
	// best (default 3, at least 2; this node's own copy counts);
	// Replication the DHT's bucket size, the number of nodes each record
	// is stored on (default 20).
	Quorum, Replication int
	// Concurrency is how many peers a lookup queries at once (Kademlia's
	// alpha; default Quorum+1, where kad's default is 10): every answer
	// carries up to Replication peers and their addresses, which the
	// asking node decodes and stores, and a lookup that needs Quorum
	// answers from peers that all hold the record gains nothing from ten.
	// A peer that left is given up after DialTimeout and the next one
	// asked.
	Concurrency int
	// DialTimeout bounds a dial to a peer (default 1s; libp2p's is 5s on
	// local networks, 15s elsewhere): a lookup that dials a peer that left
	// holds one of its Concurrency slots until the dial gives up, and a
	// QUIC dial to a port nobody listens on gets no answer at all.
	DialTimeout time.Duration

	// validator replaces the record validator (tests: a rogue node that
	// stores anything).
	validator interface {
		Validate(string, []byte) error
		Select(string, [][]byte) (int, error)
	}
}

// Node is one host's DHT node.
type Node struct {
	cfg  Config
	Host host.Host
	DHT  *kad.IpfsDHT
	v    directory.Verifier
	ds   ds.Batching

	closeOnce sync.Once
}

// gater admits the pinned peers only. A dial is refused before it starts;
// an inbound connection once its security handshake proved the peer's key.
type gater struct{ peers map[peer.ID]bool }

func (g gater) InterceptPeerDial(p peer.ID) bool                 { return g.peers[p] }
func (g gater) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return g.peers[p] }
func (g gater) InterceptAccept(network.ConnMultiaddrs) bool      { return true }
func (g gater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.peers[p]
}
func (g gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

// validator adapts directory.Verifier to libp2p's record.Validator.
type validator struct{ v directory.Verifier }

func (v validator) Validate(key string, b []byte) error { _, err := v.v.Verify(key, b); return err }
func (v validator) Select(key string, vals [][]byte) (int, error) {
	return v.v.Select(key, vals)
}

func hostOptions(cfg Config) ([]libp2p.Option, error) {
	if cfg.Key == nil {
		return nil, errors.New("dht: no key")
	}
	id, err := peer.IDFromPrivateKey(cfg.Key)
	if err != nil {
		return nil, err
	}
	g := gater{peers: map[peer.ID]bool{}}
	for _, p := range cfg.Peers {
		g.peers[p] = true
	}
	if !g.peers[id] {
		return nil, fmt.Errorf("dht: own peer ID %s not among the deployment's peers", id)
	}
	opts := []libp2p.Option{libp2p.Identity(cfg.Key), libp2p.ListenAddrStrings(cfg.Listen...),
		libp2p.ConnectionGater(g), libp2p.DisableRelay(), libp2p.DisableMetrics(), libp2p.DisableIdentifyAddressDiscovery()}
	dt := cfg.DialTimeout
	if dt <= 0 {
		dt = time.Second
	}
	// Below libp2p's timeout for local addresses, it applies to them too.
	opts = append(opts, libp2p.WithDialTimeout(dt))
	ts := cfg.Transports
	if len(ts) == 0 {
		ts = []string{"tcp", "quic"}
	}
	for _, t := range ts {
		switch t {
		case "tcp":
			opts = append(opts, libp2p.Transport(tcp.NewTCPTransport))
		case "quic":
			opts = append(opts, libp2p.Transport(quic.NewTransport))
		default:
			return nil, fmt.Errorf("dht: unknown transport %q (tcp, quic)", t)
		}
	}
	ss := cfg.Security
	if len(ss) == 0 {
		ss = []string{"noise", "tls"}
	}
	for _, s := range ss {
		switch s {
		case "noise":
			opts = append(opts, libp2p.Security(noise.ID, noise.New))
		case "tls":
			opts = append(opts, libp2p.Security(libp2ptls.ID, libp2ptls.New))
		default:
			return nil, fmt.Errorf("dht: unknown security %q (noise, tls)", s)
		}
	}
	return opts, nil
}

// New starts a node: its libp2p host listening on cfg.Listen and its DHT
// in server mode. Join connects it to the bootstrap peers.
func New(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.ProtocolPrefix == "" {
		cfg.ProtocolPrefix = "/nicpath"
	}
	if cfg.Quorum <= 0 {
		cfg.Quorum = 3
	}
	opts, err := hostOptions(cfg)
	if err != nil {
		return nil, err
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("dht: host: %w", err)
	}
	n := &Node{cfg: cfg, Host: h, v: directory.Verifier{Trusted: cfg.Trusted}, ds: dssync.MutexWrap(ds.NewMapDatastore())}
	var val interface {
		Validate(string, []byte) error
		Select(string, [][]byte) (int, error)
	} = validator{n.v}
	if cfg.validator != nil {
		val = cfg.validator
	}
	dopts := []kad.Option{kad.Mode(kad.ModeServer), kad.ProtocolPrefix(protocol.ID(cfg.ProtocolPrefix)),
		kad.NamespacedValidator(directory.Namespace, val), kad.DisableProviders(), kad.Datastore(n.ds),
		kad.BootstrapPeers(cfg.Bootstrap...)}
	if cfg.Replication > 0 {
		dopts = append(dopts, kad.BucketSize(cfg.Replication))
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = cfg.Quorum + 1
	}
	dopts = append(dopts, kad.Concurrency(cfg.Concurrency))
	d, err := kad.New(h, dopts...)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("dht: %w", err)
	}
	n.DHT = d
	return n, nil
}

// AddrInfo is how other nodes reach this one (for their Bootstrap).
func (n *Node) AddrInfo() peer.AddrInfo {
	return peer.AddrInfo{ID: n.Host.ID(), Addrs: n.Host.Addrs()}
}

// Join connects to the bootstrap peers that answer and fills the routing
// table; it fails only if none answers (a first node with no bootstrap
// peers joins alone). A dial, security handshake included, is bounded by
// DialTimeout, which a loaded machine can overrun with every peer at once:
// a round in which none answered is tried again, up to joinRounds rounds
// while ctx lasts, past the swarm's dial backoff.
func (n *Node) Join(ctx context.Context) error {
	var errs []error
	for round := range joinRounds {
		if round > 0 {
			select {
			case <-ctx.Done():
				errs = append(errs, ctx.Err())
				return fmt.Errorf("dht: no bootstrap peer answered: %w", errors.Join(errs...))
			case <-time.After(time.Duration(round) * 100 * time.Millisecond):
			}
		}
		errs = errs[:0]
		ok := 0
		for _, b := range n.cfg.Bootstrap {
			if b.ID == n.Host.ID() {
				continue
			}
			if sw, isSwarm := n.Host.Network().(*swarm.Swarm); isSwarm && round > 0 {
				sw.Backoff().Clear(b.ID)
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := n.Host.Connect(cctx, b)
			cancel()
			if err != nil {
				errs = append(errs, err)
				continue
			}
			ok++
		}
		if ok > 0 || len(errs) == 0 {
			return n.DHT.Bootstrap(ctx)
		}
	}
	return fmt.Errorf("dht: no bootstrap peer answered: %w", errors.Join(errs...))
}

// joinRounds bounds Join's rounds of bootstrap dials.
const joinRounds = 5

// Publish stores signed records (directory.Sign) in the DHT, a few at a
// time.
func (n *Node) Publish(ctx context.Context, recs []directory.Record) error {
	const parallel = 16
	errs := make([]error, len(recs))
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := range recs {
		b, err := recs[i].Encode()
		if err != nil {
			return err
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := n.DHT.PutValue(ctx, recs[i].Key(), b); err != nil {
				errs[i] = fmt.Errorf("dht: publish %s: %w", recs[i].Key(), err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Resolve looks up the record of (vni, ca) (directory.Resolver).
func (n *Node) Resolve(ctx context.Context, vni uint32, ca netip.Addr) (directory.Record, error) {
	key := directory.Key(vni, ca)
	// kad's Quorum(q) returns after q+1 answers (this node's own copy
	// among them): ask for one fewer, so that a lookup collects Quorum
	// answers (at least 2).
	b, err := n.DHT.GetValue(ctx, key, kad.Quorum(max(1, n.cfg.Quorum-1)))
	if err != nil {
		if errors.Is(err, routing.ErrNotFound) && ctx.Err() == nil {
			return directory.Record{}, directory.ErrNotFound
		}
		if ctx.Err() != nil {
			return directory.Record{}, ctx.Err()
		}
		return directory.Record{}, err
	}
	// The DHT validated it already; decode it under the same rules.
	return n.v.Verify(key, b)
}

// Stored returns how many records this node stores for the DHT and their
// size in bytes (keys and values).
func (n *Node) Stored(ctx context.Context) (count, bytes int, err error) {
	res, err := n.ds.Query(ctx, query.Query{})
	if err != nil {
		return 0, 0, err
	}
	defer res.Close()
	for e := range res.Next() {
		if e.Error != nil {
			return count, bytes, e.Error
		}
		count++
		bytes += len(e.Key) + len(e.Value)
	}
	return count, bytes, nil
}

// Peers returns the peers this node is connected to.
func (n *Node) Peers() []peer.ID {
	ps := n.Host.Network().Peers()
	slices.Sort(ps)
	return ps
}

// Close stops the node.
func (n *Node) Close() error {
	var err error
	n.closeOnce.Do(func() { err = errors.Join(n.DHT.Close(), n.Host.Close()) })
	return err
}

var (
	_ directory.Resolver  = (*Node)(nil)
	_ directory.Publisher = (*Node)(nil)
)

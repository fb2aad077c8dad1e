// Package lease is the lease broker of a relocated subnet: it hands the
// subnet's addresses to the nodes at the remote site, each lease with an
// expiry, and keeps the leases in the store (any store.KV: the in-process
// store.Memory, or etcd through store/etcd) so that a tether that restarts
// finds them again and hands every node the address it had.
//
// The nodes ask over DHCPv4: Server answers DHCP messages with the
// broker's leases. It is built on github.com/insomniacslk/dhcp's dhcpv4
// package (message encoding, options), the DHCP library Go programs
// commonly use (CoreDHCP and u-root are built on it); it is maintained,
// has no cgo, and its client (nclient4) is what the tests' nodes run, so
// both ends are code nobody here wrote. The server takes and returns
// messages, not sockets: the tether owns its ports (raw sockets, no address
// on them) and frames the answers itself.
//
// Keys: PREFIX + "leases/" + subnet + "/" + address; values are JSON Leases.
package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nicpath/nicpath/store"
)

// Lease is one address handed to one node.
type Lease struct {
	Subnet   string     `json:"subnet"`
	Addr     netip.Addr `json:"addr"`
	MAC      string     `json:"mac"`
	Port     string     `json:"port"` // the tether's port the node is on
	Hostname string     `json:"hostname,omitempty"`
	Granted  time.Time  `json:"granted"`
	Expiry   time.Time  `json:"expiry"`
}

// Expired reports whether the lease ran out at now.
func (l Lease) Expired(now time.Time) bool { return !now.Before(l.Expiry) }

// Config configures a Broker.
type Config struct {
	Subnet    string     // the relocated subnet's name
	First     netip.Addr // the pool: First…Last
	Last      netip.Addr
	LeaseTime time.Duration // how long a lease lasts before it must be renewed
	Prefix    string        // key prefix in the store
	Now       func() time.Time
}

// Errors.
var (
	// ErrPoolExhausted: every address is leased and none has expired.
	ErrPoolExhausted = errors.New("lease: no free address in the pool")
	// ErrNotOffered: a node asked for an address that is not free for it
	// (leased to another node, or outside the pool).
	ErrNotOffered = errors.New("lease: address not available to this node")
)

// Broker hands out a pool's addresses and keeps the leases in a store.
type Broker struct {
	cfg Config
	kv  store.KV

	mu     sync.Mutex
	byAddr map[netip.Addr]Lease
}

// Open loads the subnet's leases from kv and returns the broker.
func Open(ctx context.Context, kv store.KV, cfg Config) (*Broker, error) {
	if !cfg.First.Is4() || !cfg.Last.Is4() || cfg.Last.Less(cfg.First) {
		return nil, fmt.Errorf("lease: bad pool %v-%v", cfg.First, cfg.Last)
	}
	if cfg.LeaseTime <= 0 {
		return nil, fmt.Errorf("lease: lease time %v", cfg.LeaseTime)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	b := &Broker{cfg: cfg, kv: kv, byAddr: map[netip.Addr]Lease{}}
	kvs, _, err := kv.Get(ctx, b.dir())
	if err != nil {
		return nil, fmt.Errorf("lease: load: %w", err)
	}
	for _, e := range kvs {
		var l Lease
		if err := json.Unmarshal(e.Value, &l); err != nil {
			return nil, fmt.Errorf("lease: %s: %w", e.Key, err)
		}
		if b.inPool(l.Addr) {
			b.byAddr[l.Addr] = l
		}
	}
	return b, nil
}

func (b *Broker) dir() string { return b.cfg.Prefix + "leases/" + b.cfg.Subnet + "/" }

func (b *Broker) key(a netip.Addr) string { return b.dir() + a.String() }

func (b *Broker) inPool(a netip.Addr) bool {
	return a.Is4() && !a.Less(b.cfg.First) && !b.cfg.Last.Less(a)
}

// LeaseTime is how long a lease lasts.
func (b *Broker) LeaseTime() time.Duration { return b.cfg.LeaseTime }

// Offer picks the address for the node with mac: the address it holds (even
// expired, if nobody took it since), the one it asks for if free, or the
// first free one.
func (b *Broker) Offer(mac net.HardwareAddr, want netip.Addr) (netip.Addr, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.cfg.Now()
	m := mac.String()
	for a, l := range b.byAddr {
		if l.MAC == m {
			return a, nil
		}
	}
	if b.inPool(want) {
		if l, ok := b.byAddr[want]; !ok || l.Expired(now) {
			return want, nil
		}
	}
	for a := b.cfg.First; !b.cfg.Last.Less(a); a = a.Next() {
		if l, ok := b.byAddr[a]; !ok || l.Expired(now) {
			return a, nil
		}
	}
	return netip.Addr{}, ErrPoolExhausted
}

// Acquire grants (or renews) addr to the node with mac on port, and stores
// the lease before returning it.
func (b *Broker) Acquire(ctx context.Context, mac net.HardwareAddr, addr netip.Addr, port, hostname string) (Lease, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.cfg.Now()
	m := mac.String()
	if !b.inPool(addr) {
		return Lease{}, fmt.Errorf("%w: %s is outside the pool", ErrNotOffered, addr)
	}
	if l, ok := b.byAddr[addr]; ok && l.MAC != m && !l.Expired(now) {
		return Lease{}, fmt.Errorf("%w: %s is leased to %s until %s", ErrNotOffered, addr, l.MAC, l.Expiry.Format(time.RFC3339))
	}
	var ops []store.Op
	for a, l := range b.byAddr {
		if l.MAC == m && a != addr {
			ops = append(ops, store.Op{Key: b.key(a), Delete: true}) // one address per node
		}
	}
	l := Lease{Subnet: b.cfg.Subnet, Addr: addr, MAC: m, Port: port, Hostname: hostname, Granted: now, Expiry: now.Add(b.cfg.LeaseTime)}
	if old, ok := b.byAddr[addr]; ok && old.MAC == m && !old.Expired(now) {
		l.Granted = old.Granted
	}
	v, _ := json.Marshal(l)
	ops = append(ops, store.Op{Key: b.key(addr), Value: v})
	if _, err := b.kv.Txn(ctx, ops); err != nil {
		return Lease{}, fmt.Errorf("lease: store: %w", err)
	}
	for _, op := range ops[:len(ops)-1] {
		delete(b.byAddr, netip.MustParseAddr(op.Key[strings.LastIndexByte(op.Key, '/')+1:]))
	}
	b.byAddr[addr] = l
	return l, nil
}

// Release ends the lease of addr held by mac.
func (b *Broker) Release(ctx context.Context, mac net.HardwareAddr, addr netip.Addr) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	l, ok := b.byAddr[addr]
	if !ok || l.MAC != mac.String() {
		return nil
	}
	if _, err := b.kv.Txn(ctx, []store.Op{{Key: b.key(addr), Delete: true}}); err != nil {
		return fmt.Errorf("lease: store: %w", err)
	}
	delete(b.byAddr, addr)
	return nil
}

// Lookup returns the live lease of addr.
func (b *Broker) Lookup(addr netip.Addr) (Lease, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	l, ok := b.byAddr[addr]
	if !ok || l.Expired(b.cfg.Now()) {
		return Lease{}, false
	}
	return l, true
}

// Leases returns every lease, expired ones included, by address.
func (b *Broker) Leases() []Lease {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]Lease, 0, len(b.byAddr))
	for _, l := range b.byAddr {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr.Less(out[j].Addr) })
	return out
}

// List reads every lease stored under prefix (all subnets), for tools
// that show them without running a broker.
func List(ctx context.Context, kv store.KV, prefix string) ([]Lease, error) {
	kvs, _, err := kv.Get(ctx, prefix+"leases/")
	if err != nil {
		return nil, err
	}
	out := make([]Lease, 0, len(kvs))
	for _, e := range kvs {
		var l Lease
		if err := json.Unmarshal(e.Value, &l); err != nil {
			return nil, fmt.Errorf("lease: %s: %w", e.Key, err)
		}
		out = append(out, l)
	}
	return out, nil
}

package vswitch

import (
	"encoding/binary"
	"math/rand/v2"
	"unsafe"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
)

// connKey names one direction of a tracked connection at one ACL layer: a
// packet with these addresses, protocol and ports passes layer (vm, dir)
// without an ACL check. It is policy.ConnTable's key, so the switch and the
// reference tracker agree on what "the reply" is, in a compact form: the
// VM by its interned id (stable across policy versions, as its name is)
// and the addresses as 16 bytes (IPv4 mapped, which no IPv6 address that
// reaches an ACL layer is: the walk drops IPv4-mapped IPv6 as malformed).
// It has no pointers and no padding, so the connection table hashes it as
// plain memory (a string and two netip.Addr made every first packet's
// lookup hash field by field).
type connKey struct {
	src, dst         [16]byte
	vm               uint32
	srcPort, dstPort uint16
	dir              policy.Direction
	proto            uint8
	// pad fills the struct's tail: a key with padding would be hashed
	// field by field. Always zero.
	pad [2]uint8
}

func connKeyOf(vm uint32, dir policy.Direction, p *policy.Packet) connKey {
	k := connKey{vm: vm, dir: dir, src: p.Src.As16(), dst: p.Dst.As16(), proto: p.Protocol}
	if hasPorts(p.Protocol) {
		k.srcPort, k.dstPort = p.SrcPort, p.DstPort
	}
	return k
}

// outConnKey is connKeyOf(vm, policy.Out, &p) for the packet p that a
// walk makes of the IPv4 or IPv6 key k (packetOf), made from k directly:
// a batch prefetches what the walk's sender layer will read with it.
func outConnKey(vm uint32, k *hal.FlowKey) connKey {
	ck := connKey{vm: vm, dir: policy.Out, src: k.IPSrc, dst: k.IPDst, proto: k.Proto}
	if hasPorts(k.Proto) {
		ck.srcPort, ck.dstPort = k.L4Src, k.L4Dst
	}
	return ck
}

// conn is one tracked connection entry. It is kept alive by the traffic of
// the flows that opened it or rely on it (their counters, read from the NIC
// when they are offloaded) and removed, with the flows that relied on it,
// after ConnIdle without traffic.
type conn struct {
	key      connKey
	lastSeen int64 // unix nanoseconds
	// users are the flows whose verdict depends on this entry (they passed
	// a layer as established); they go when the entry goes.
	users map[*flow]struct{}
}

// conntrack is the connection table. Every ACL layer of every first
// packet asks it whether the packet's connection is established, and
// almost always it is not: a summary of the keys (a blocked Bloom filter:
// two bits in one 64-bit word per key, some 16 bits per entry, read from
// one cache line the size of a few kilobytes per thousand connections)
// answers those without probing the map, whose slots are spread over
// memory far larger than the caches.
type conntrack struct {
	conns map[connKey]*conn
	// filter has, for every key in conns, the two bits of filterBits set
	// (and some of removed keys until the next rebuild); its length is a
	// power of two.
	filter []uint64
	// pairs is the same kind of filter over the keys with their ports
	// zeroed: for every key in conns, its endpoints' bits are set (and
	// some of removed keys' until the next rebuild). The walk memo asks it
	// whether any connection, whatever its ports, passes a layer between
	// two endpoints (walkmemo.go). Same length as filter.
	pairs   []uint64
	removed int // keys removed since the filters were rebuilt
	seed    [2]uint64
}

func newConntrack() *conntrack {
	return &conntrack{conns: map[connKey]*conn{}, filter: make([]uint64, filterMinWords),
		pairs: make([]uint64, filterMinWords), seed: [2]uint64{rand.Uint64() | 1, rand.Uint64() | 1}}
}

// filterMinWords is the filter's smallest size; it grows to hold 16 bits
// per connection.
const filterMinWords = 64

func (t *conntrack) established(k connKey) bool {
	if !t.mayHave(&k) {
		return false
	}
	_, ok := t.conns[k]
	return ok
}

// add records c under its key.
func (t *conntrack) add(c *conn) {
	t.conns[c.key] = c
	if len(t.conns) > len(t.filter)*4 {
		t.rebuild(2 * len(t.filter))
		return
	}
	w, b := t.filterBits(&c.key)
	t.filter[w] |= b
	w, b = t.pairBits(&c.key)
	t.pairs[w] |= b
}

// remove forgets the connection with key k.
func (t *conntrack) remove(k connKey) {
	delete(t.conns, k)
	// The filter keeps its bits: it answers "maybe" for them, and the map
	// "no". Rebuilt once the removed outnumber the live.
	if t.removed++; t.removed > len(t.conns)+len(t.filter) {
		t.rebuild(len(t.filter))
	}
}

func (t *conntrack) rebuild(words int) {
	for words > filterMinWords && len(t.conns) < words {
		words /= 2 // shrink to what the live connections need
	}
	for len(t.conns) > words*4 {
		words *= 2
	}
	if words == len(t.filter) {
		clear(t.filter)
		clear(t.pairs)
	} else {
		t.filter = make([]uint64, words)
		t.pairs = make([]uint64, words)
	}
	for k := range t.conns {
		w, b := t.filterBits(&k)
		t.filter[w] |= b
		w, b = t.pairBits(&k)
		t.pairs[w] |= b
	}
	t.removed = 0
}

// mayHave reports whether k may be in the table; false is certain.
func (t *conntrack) mayHave(k *connKey) bool {
	w, b := t.filterBits(k)
	return t.filter[w]&b == b
}

// filterAddr is the address of the filter word that mayHave reads for k,
// for prefetching (nothing is read or written through it).
func (t *conntrack) filterAddr(k *connKey) uintptr {
	w, _ := t.filterBits(k)
	return uintptr(unsafe.Pointer(&t.filter[w]))
}

// mayHavePair reports whether a key that differs from k at most in its
// ports may be in the table; false is certain.
func (t *conntrack) mayHavePair(k *connKey) bool {
	w, b := t.pairBits(k)
	return t.pairs[w]&b == b
}

// pairBits is k's word and bits in pairs: filterBits of k with its ports
// zeroed.
func (t *conntrack) pairBits(k *connKey) (int, uint64) {
	p := *k
	p.srcPort, p.dstPort = 0, 0
	return t.filterBits(&p)
}

// filterBits is k's word in the filter and its two bits in it.
func (t *conntrack) filterBits(k *connKey) (int, uint64) {
	le := binary.LittleEndian
	h := mum(le.Uint64(k.src[0:8])^t.seed[0], le.Uint64(k.src[8:16])^t.seed[1])
	h = mum(le.Uint64(k.dst[0:8])^h, le.Uint64(k.dst[8:16])^t.seed[1])
	h = mum(uint64(k.vm)|uint64(k.srcPort)<<32|uint64(k.dstPort)<<48^h,
		uint64(k.dir)|uint64(k.proto)<<8^t.seed[1])
	w := int(h & uint64(len(t.filter)-1))
	return w, 1<<(h>>52&63) | 1<<(h>>58)
}

package xdp

import (
	"hash/maphash"
	"iter"
	"unsafe"
)

// entryIndex finds the entry of a masked flow key. A Go map keyed by the
// 96-byte bpfKey itself stores every key inline in its slots (a table of
// a million entries is over 100 MiB) and costs a few cold cache lines per
// probe: about 500 ns an insert on a bulk load of 128k rules, more than
// the kernel's own batch update of the entry. This index keys a map by a
// seeded 64-bit hash of the key instead (16-byte slots), and keeps the
// rare entries whose hashes collide on a chain; the key itself is read
// from the entry's rules only when a hash matches.
type entryIndex struct {
	m    map[uint64]*entryState
	n    int
	seed maphash.Seed
}

// bpfKey is hashed as its bytes: it has no padding, so equal keys have
// equal bytes.
const bpfKeySize = 96

var _ [bpfKeySize - unsafe.Sizeof(bpfKey{})]byte
var _ [unsafe.Sizeof(bpfKey{}) - bpfKeySize]byte

func newEntryIndex(hint int) entryIndex {
	return entryIndex{m: make(map[uint64]*entryState, hint), seed: maphash.MakeSeed()}
}

func (x *entryIndex) hash(k *bpfKey) uint64 {
	return maphash.Bytes(x.seed, unsafe.Slice((*byte)(unsafe.Pointer(k)), bpfKeySize))
}

func (x *entryIndex) len() int { return x.n }

// get returns the entry of k, or nil.
func (x *entryIndex) get(k *bpfKey) *entryState { return x.getHashed(k, x.hash(k)) }

// getHashed is get with the hash of k already computed.
func (x *entryIndex) getHashed(k *bpfKey, h uint64) *entryState {
	for e := x.m[h]; e != nil; e = e.next {
		if ek, ok := e.key(); ok && ek == *k {
			return e
		}
	}
	return nil
}

// putHashed indexes e under the key whose hash is h, which no other entry
// has. e must hold a rule with that key before the next get.
func (x *entryIndex) putHashed(h uint64, e *entryState) {
	e.hash, e.next = h, x.m[h]
	x.m[h] = e
	x.n++
}

// del removes e, found by identity: it may already hold no rule.
func (x *entryIndex) del(e *entryState) {
	p, ok := x.m[e.hash]
	if !ok {
		return
	}
	if p == e {
		if e.next == nil {
			delete(x.m, e.hash)
		} else {
			x.m[e.hash] = e.next
		}
	} else {
		for ; p.next != nil && p.next != e; p = p.next {
		}
		if p.next != e {
			return
		}
		p.next = e.next
	}
	e.next = nil
	x.n--
}

// all yields every entry with its key, in no particular order.
func (x *entryIndex) all() iter.Seq2[bpfKey, *entryState] {
	return func(yield func(bpfKey, *entryState) bool) {
		for _, e := range x.m {
			for ; e != nil; e = e.next {
				if k, ok := e.key(); ok && !yield(k, e) {
					return
				}
			}
		}
	}
}

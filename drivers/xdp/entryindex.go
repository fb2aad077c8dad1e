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
// the kernel's own batch update of the entry. This index keys by a seeded
// 64-bit hash of the key instead, in an open-addressing table (linear
// probing, backward-shift deletion, as ruleIndex) of 16-byte cells, so
// that a probe is one cache line where a Go map's is its directory, its
// group's control word and a slot; the rare entries whose hashes collide
// share a cell, on a chain. The key itself is read from the entry's rules
// only when a hash matches.
type entryIndex struct {
	cells []entryCell // a power of two; a nil e is an empty cell
	used  int         // cells in use
	n     int         // entries, chained ones included
	seed  maphash.Seed
}

// entryCell is the entries whose keys hash to h: e and its chain.
type entryCell struct {
	h uint64
	e *entryState
}

// bpfKey is hashed as its bytes: it has no padding, so equal keys have
// equal bytes.
const bpfKeySize = 96

var _ [bpfKeySize - unsafe.Sizeof(bpfKey{})]byte
var _ [unsafe.Sizeof(bpfKey{}) - bpfKeySize]byte

func newEntryIndex(hint int) entryIndex {
	size := 16
	for size < 2*hint {
		size *= 2
	}
	x := entryIndex{cells: make([]entryCell, size), seed: maphash.MakeSeed()}
	prefault(x.cells)
	return x
}

func (x *entryIndex) hash(k *bpfKey) uint64 {
	return maphash.Bytes(x.seed, unsafe.Slice((*byte)(unsafe.Pointer(k)), bpfKeySize))
}

func (x *entryIndex) len() int { return x.n }

// cell returns the cell of hash h, or nil.
func (x *entryIndex) cell(h uint64) *entryCell {
	mask := uint64(len(x.cells) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		c := &x.cells[i]
		if c.e == nil {
			return nil
		}
		if c.h == h {
			return c
		}
	}
}

// probe reads the first cell of hash h, for warm: whether it is in use.
func (x *entryIndex) probe(h uint64) bool { return x.cells[h&uint64(len(x.cells)-1)].e != nil }

// get returns the entry of k, or nil.
func (x *entryIndex) get(k *bpfKey) *entryState { return x.getHashed(k, x.hash(k)) }

// getHashed is get with the hash of k already computed.
func (x *entryIndex) getHashed(k *bpfKey, h uint64) *entryState {
	c := x.cell(h)
	if c == nil {
		return nil
	}
	for e := c.e; e != nil; e = e.next {
		if ek, ok := e.key(); ok && ek == *k {
			return e
		}
	}
	return nil
}

// putHashed indexes e under the key whose hash is h, which no other entry
// has. e must hold a rule with that key before the next get.
func (x *entryIndex) putHashed(h uint64, e *entryState) {
	e.hash = h
	x.n++
	if c := x.cell(h); c != nil {
		e.next, c.e = c.e, e
		return
	}
	e.next = nil
	if 2*(x.used+1) > len(x.cells) {
		x.grow()
	}
	mask := uint64(len(x.cells) - 1)
	i := h & mask
	for x.cells[i].e != nil {
		i = (i + 1) & mask
	}
	x.cells[i] = entryCell{h, e}
	x.used++
}

func (x *entryIndex) grow() {
	old := x.cells
	x.cells = make([]entryCell, 2*len(old))
	prefault(x.cells)
	mask := uint64(len(x.cells) - 1)
	for _, c := range old {
		if c.e == nil {
			continue
		}
		i := c.h & mask
		for x.cells[i].e != nil {
			i = (i + 1) & mask
		}
		x.cells[i] = c
	}
}

// del removes e, found by identity: it may already hold no rule.
func (x *entryIndex) del(e *entryState) {
	c := x.cell(e.hash)
	if c == nil {
		return
	}
	if c.e == e {
		if e.next != nil {
			c.e = e.next
		} else {
			x.delCell(c)
		}
	} else {
		p := c.e
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

// delCell empties cell c: the cells after it in its run move back over
// the gap, so that no search stops short of them.
func (x *entryIndex) delCell(c *entryCell) {
	mask := uint64(len(x.cells) - 1)
	i := uint64(uintptr(unsafe.Pointer(c))-uintptr(unsafe.Pointer(&x.cells[0]))) / uint64(unsafe.Sizeof(entryCell{}))
	x.used--
	for j := (i + 1) & mask; ; j = (j + 1) & mask {
		d := x.cells[j]
		if d.e == nil {
			break
		}
		// d may fill the gap at i when its home is not in (i, j].
		if (j-d.h&mask)&mask >= (j-i)&mask {
			x.cells[i] = d
			i = j
		}
	}
	x.cells[i] = entryCell{}
}

// all yields every entry with its key, in no particular order.
func (x *entryIndex) all() iter.Seq2[bpfKey, *entryState] {
	return func(yield func(bpfKey, *entryState) bool) {
		for i := range x.cells {
			for e := x.cells[i].e; e != nil; e = e.next {
				if k, ok := e.key(); ok && !yield(k, e) {
					return
				}
			}
		}
	}
}

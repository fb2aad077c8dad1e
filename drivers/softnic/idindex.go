package softnic

import (
	"iter"

	"github.com/nicpath/nicpath/hal"
)

// idIndex maps rule IDs to entry indices for the writer. Controllers hand
// out IDs in sequence (the vswitch does), so IDs below idDenseLimit live in
// pages (idPage, a run or a dense array): an add touches one slot next to the previous
// add's, where a Go map would probe a cold bucket and keep growing. Other
// IDs (sparse, huge) fall back to a map. A page that empties is freed, so
// memory follows the live IDs even when they march upward forever.
type idIndex struct {
	pages  []*idPage
	sparse map[hal.RuleID]uint32
	// spare holds up to idSpareMax emptied pages for reuse: a controller
	// that deletes a run of rules and adds the next (IDs counted up)
	// empties and starts pages at the same pace, and reusing them spares
	// an allocation per page, and the collector the garbage.
	spare []*idPage
}

// idSpareMax bounds idIndex.spare: 64 pages (10 KiB), a batch of 64K
// rules' worth.
const idSpareMax = 64

const (
	idPageShift = 10
	idPageSize  = 1 << idPageShift
	// idDenseLimit bounds the page directory at 64K pointers (512 KiB) for
	// the largest dense ID; IDs above go to the map.
	idDenseLimit = 1 << 26
)

// idPage maps the IDs of one page. Controllers program rules in runs (a
// batch of mappings with IDs counted up, which the writer gives entries in
// order), so a page starts as a run: ID i of the page maps to entry
// first+i for every i set in has, 1/32 of the memory of a slot per ID.
// The first ID that breaks the run (a modify, which moves a rule to a new
// entry; an ID given an entry out of order) turns the page into slot:
// entry index+1 per ID (0: no rule). n counts the IDs set.
type idPage struct {
	slot  *[idPageSize]uint32
	has   [idPageSize / 64]uint64
	first uint32
	n     int
}

func (pg *idPage) in(i uint64) bool { return pg.has[i>>6]&(1<<(i&63)) != 0 }

func (x *idIndex) get(id hal.RuleID) (uint32, bool) {
	if id < idDenseLimit {
		if p := int(id >> idPageShift); p < len(x.pages) && x.pages[p] != nil {
			pg, i := x.pages[p], uint64(id&(idPageSize-1))
			if pg.slot != nil {
				v := pg.slot[i]
				return v - 1, v != 0
			}
			return pg.first + uint32(i), pg.in(i)
		}
		return 0, false
	}
	idx, ok := x.sparse[id]
	return idx, ok
}

// set maps id to idx, replacing any previous mapping.
func (x *idIndex) set(id hal.RuleID, idx uint32) {
	if id >= idDenseLimit {
		if x.sparse == nil {
			x.sparse = map[hal.RuleID]uint32{}
		}
		x.sparse[id] = idx
		return
	}
	p := int(id >> idPageShift)
	if p >= len(x.pages) {
		x.pages = append(x.pages, make([]*idPage, p+1-len(x.pages))...)
	}
	pg := x.pages[p]
	if pg == nil {
		if k := len(x.spare); k > 0 {
			pg = x.spare[k-1]
			x.spare = x.spare[:k-1]
		} else {
			pg = new(idPage)
		}
		x.pages[p] = pg
	}
	i := uint64(id & (idPageSize - 1))
	if pg.slot == nil {
		if pg.n == 0 {
			pg.first = idx - uint32(i) // mod 2^32: first+i is idx
		}
		if pg.first+uint32(i) == idx {
			if !pg.in(i) {
				pg.has[i>>6] |= 1 << (i & 63)
				pg.n++
			}
			return
		}
		pg.slot = new([idPageSize]uint32)
		for j := range pg.slot {
			if pg.in(uint64(j)) {
				pg.slot[j] = pg.first + uint32(j) + 1
			}
		}
	}
	s := &pg.slot[i]
	if *s == 0 {
		pg.n++
	}
	*s = idx + 1
}

func (x *idIndex) del(id hal.RuleID) {
	if id >= idDenseLimit {
		delete(x.sparse, id)
		return
	}
	p := int(id >> idPageShift)
	if p >= len(x.pages) || x.pages[p] == nil {
		return
	}
	pg, i := x.pages[p], uint64(id&(idPageSize-1))
	if pg.slot != nil {
		if pg.slot[i] == 0 {
			return
		}
		pg.slot[i] = 0
	} else {
		if !pg.in(i) {
			return
		}
		pg.has[i>>6] &^= 1 << (i & 63)
	}
	if pg.n--; pg.n == 0 {
		x.pages[p] = nil
		if len(x.spare) < idSpareMax {
			// A page's has bits stay as they were once it turned
			// to slots: all cleared. A slot array goes, memory
			// follows the live IDs.
			*pg = idPage{}
			x.spare = append(x.spare, pg)
		}
	}
}

// all yields every mapping, dense IDs in increasing order, then the others
// in no particular order.
func (x *idIndex) all() iter.Seq2[hal.RuleID, uint32] {
	return func(yield func(hal.RuleID, uint32) bool) {
		for p, pg := range x.pages {
			if pg == nil {
				continue
			}
			for i := uint64(0); i < idPageSize; i++ {
				idx, ok := pg.first+uint32(i), pg.in(i)
				if pg.slot != nil {
					idx, ok = pg.slot[i]-1, pg.slot[i] != 0
				}
				if ok && !yield(hal.RuleID(uint64(p)<<idPageShift|i), idx) {
					return
				}
			}
		}
		for id, idx := range x.sparse {
			if !yield(id, idx) {
				return
			}
		}
	}
}

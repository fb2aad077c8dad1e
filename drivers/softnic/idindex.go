package softnic

import (
	"iter"

	"github.com/nicpath/nicpath/hal"
)

// idIndex maps rule IDs to entry indices for the writer. Controllers hand
// out IDs in sequence (the vswitch does), so IDs below idDenseLimit live in
// pages of a dense array: an add touches one slot next to the previous
// add's, where a Go map would probe a cold bucket and keep growing. Other
// IDs (sparse, huge) fall back to a map. A page that empties is freed, so
// memory follows the live IDs even when they march upward forever.
type idIndex struct {
	pages  []*idPage
	sparse map[hal.RuleID]uint32
}

const (
	idPageShift = 10
	idPageSize  = 1 << idPageShift
	// idDenseLimit bounds the page directory at 64K pointers (512 KiB) for
	// the largest dense ID; IDs above go to the map.
	idDenseLimit = 1 << 26
)

// idPage holds entry index+1 per ID (0: no rule) and how many are set.
type idPage struct {
	slot [idPageSize]uint32
	n    int
}

func (x *idIndex) get(id hal.RuleID) (uint32, bool) {
	if id < idDenseLimit {
		if p := int(id >> idPageShift); p < len(x.pages) && x.pages[p] != nil {
			v := x.pages[p].slot[id&(idPageSize-1)]
			return v - 1, v != 0
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
		pg = new(idPage)
		x.pages[p] = pg
	}
	s := &pg.slot[id&(idPageSize-1)]
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
	pg := x.pages[p]
	s := &pg.slot[id&(idPageSize-1)]
	if *s == 0 {
		return
	}
	*s = 0
	if pg.n--; pg.n == 0 {
		x.pages[p] = nil
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
			for s, v := range pg.slot {
				if v != 0 && !yield(hal.RuleID(p<<idPageShift|s), v-1) {
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

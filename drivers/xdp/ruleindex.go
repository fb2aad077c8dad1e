package xdp

import (
	"iter"

	"github.com/nicpath/nicpath/hal"
)

// ruleIndex finds the state of an installed rule by its ID: an
// open-addressing table (linear probing, backward-shift deletion) of
// 16-byte cells. A Go map scatters consecutive IDs over its whole table,
// so each add of a bulk load (a vswitch numbers its rules in order) is a
// cold cache line or two of the map; here the IDs of a run of ruleGroup
// consecutive IDs (their low bits) stay next to each other and only the
// group number is hashed, so a run of adds walks a few lines of the table
// in order. IDs that do not come in runs hash like a map's.
type ruleIndex struct {
	cells []ruleCell // a power of two; a nil rs is an empty cell
	n     int
}

type ruleCell struct {
	id hal.RuleID
	rs *ruleState
}

// ruleGroup consecutive IDs share a hash: four cache lines of cells.
const ruleGroupBits = 4

func newRuleIndex(hint int) ruleIndex {
	size := 16
	for size < 2*hint {
		size *= 2
	}
	x := ruleIndex{cells: make([]ruleCell, size)}
	prefault(x.cells)
	return x
}

func (x *ruleIndex) home(id hal.RuleID) uint64 {
	g := uint64(id) >> ruleGroupBits
	g ^= g >> 33
	g *= 0xff51afd7ed558ccd
	g ^= g >> 33
	return (g<<ruleGroupBits | uint64(id)&(1<<ruleGroupBits-1)) & uint64(len(x.cells)-1)
}

func (x *ruleIndex) len() int { return x.n }

// get returns the state of rule id, or nil.
func (x *ruleIndex) get(id hal.RuleID) *ruleState {
	if x.cells == nil {
		return nil
	}
	mask := uint64(len(x.cells) - 1)
	for i := x.home(id); ; i = (i + 1) & mask {
		c := &x.cells[i]
		if c.rs == nil {
			return nil
		}
		if c.id == id {
			return c.rs
		}
	}
}

// put sets the state of rule id, replacing any.
func (x *ruleIndex) put(id hal.RuleID, rs *ruleState) {
	if 2*(x.n+1) > len(x.cells) {
		x.grow()
	}
	mask := uint64(len(x.cells) - 1)
	for i := x.home(id); ; i = (i + 1) & mask {
		c := &x.cells[i]
		if c.rs == nil {
			c.id, c.rs = id, rs
			x.n++
			return
		}
		if c.id == id {
			c.rs = rs
			return
		}
	}
}

func (x *ruleIndex) grow() {
	old := x.cells
	size := 2 * len(old)
	if size < 16 {
		size = 16
	}
	x.cells, x.n = make([]ruleCell, size), 0
	prefault(x.cells)
	for i := range old {
		if old[i].rs != nil {
			x.put(old[i].id, old[i].rs)
		}
	}
}

// del removes rule id, if present: the cells after it in its run move
// back over the gap, so that no search stops short of them.
func (x *ruleIndex) del(id hal.RuleID) {
	if x.cells == nil {
		return
	}
	mask := uint64(len(x.cells) - 1)
	i := x.home(id)
	for {
		c := &x.cells[i]
		if c.rs == nil {
			return
		}
		if c.id == id {
			break
		}
		i = (i + 1) & mask
	}
	x.n--
	for j := (i + 1) & mask; ; j = (j + 1) & mask {
		c := x.cells[j]
		if c.rs == nil {
			break
		}
		// c may fill the gap at i when its home is not in (i, j].
		h := x.home(c.id)
		if (j-h)&mask >= (j-i)&mask {
			x.cells[i] = c
			i = j
		}
	}
	x.cells[i] = ruleCell{}
}

// all yields every rule's ID and state, in no particular order. The index
// must not change while it runs.
func (x *ruleIndex) all() iter.Seq2[hal.RuleID, *ruleState] {
	return func(yield func(hal.RuleID, *ruleState) bool) {
		for i := range x.cells {
			if c := &x.cells[i]; c.rs != nil && !yield(c.id, c.rs) {
				return
			}
		}
	}
}

//go:build linux

package xdp

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/nicpath/nicpath/hal"
	"golang.org/x/sys/unix"
)

// Rules: Validate, Apply and Dump over the rule table (table.go), whose writes
// land in the BPF maps through mapBackend.

// Validate says whether the NIC can take r; see hal.RuleTable.
func (n *NIC) Validate(r *hal.Rule) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.closedErr(); err != nil {
		return err
	}
	return n.validate(r)
}

func (n *NIC) validate(r *hal.Rule) error {
	if err := hal.CheckRule(&n.caps, r); err != nil {
		return err
	}
	return n.tab.validate(r, false)
}

// Apply runs a batch of operations; see hal.RuleTable. Adds are written
// with BPF batch updates; each result says whether its operation landed.
func (n *NIC) Apply(ctx context.Context, ops []hal.Op, results []hal.OpResult) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := hal.CheckApply(ctx, &n.caps, n.closed, ops, results); err != nil {
		return err
	}
	bc := batchCheck{n: n, c: hal.NewChecker(&n.caps)}
	n.tab.apply(ops, results[:len(ops)], bc.check)
	return hal.Summarize(results[:len(ops)])
}

// batchCheck is validate for the operations of one Apply, with the
// answers it can carry from one rule to the next. A hal.Checker skips
// the field checks for a mask that passed (the rules of a batch mostly
// share one); and an action list equal (sameActions) to the last one
// that passed every check, in a rule whose match has the same
// hal.TraitsOf, passes the checks of actions again: hal's (so
// CheckKnownActions) and the table's (its ports cannot change while the
// NIC's mutex is held). Controllers give the flows toward one host one
// list, so a bulk load checks each list about once. Every answer is
// validate's, error for error.
type batchCheck struct {
	n      *NIC
	c      *hal.Checker
	acts   []hal.Action // the last list that passed; the caller's, unchanged until Apply returns
	traits hal.ActionTraits
}

func (b *batchCheck) check(r *hal.Rule) error {
	b.n.tab.knownActs = false
	traits := hal.TraitsOf(&r.Match)
	known := b.acts != nil && traits == b.traits && sameActions(r.Actions, b.acts)
	var err error
	if known {
		err = b.c.CheckKnownActions(r)
	} else {
		err = b.c.Check(r)
	}
	if err != nil {
		return err
	}
	if err := b.n.tab.validate(r, known); err != nil {
		return err
	}
	if !known {
		b.acts, b.traits = r.Actions, traits
	} else if src := b.n.tab.lastSrc; len(src) == len(b.acts) && unsafe.SliceData(src) == unsafe.SliceData(b.acts) {
		// r's list is equal to b.acts, which is the list the table
		// kept and encoded last: the add need not compare it again.
		b.n.tab.knownActs = true
	}
	return nil
}

// Dump reports every installed rule, with its counters when it counts.
func (n *NIC) Dump(ctx context.Context, fn func(*hal.RuleInfo) error) error {
	n.mu.Lock()
	if err := n.closedErr(); err != nil {
		n.mu.Unlock()
		return err
	}
	infos := make([]hal.RuleInfo, 0, n.tab.rules.len())
	for _, rs := range n.tab.rules.all() {
		ri := hal.RuleInfo{Rule: rs.rule.clone(), Location: n.caps.Location,
			Live: n.active[rs.rule.Scope] == rs.rule.Generation}
		if rs.enc.Flags&actCount != 0 {
			ri.Counters, _ = n.readCounter(rs.enc.Counter)
		}
		infos = append(infos, ri)
	}
	n.mu.Unlock()
	sort.Slice(infos, func(i, j int) bool { return infos[i].Rule.ID < infos[j].Rule.ID })
	for i := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(&infos[i]); err != nil {
			return err
		}
	}
	return nil
}

// mapBackend writes the table into the BPF maps.
type mapBackend struct {
	n *NIC
	// t4 is table4 through its mmap; over holds the compact keys whose
	// entries overflowed into flows4.
	t4   *table4
	over map[bpfKey4]struct{}
}

func fullErr(err error) error {
	if errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.ENOMEM) {
		return fmt.Errorf("%w: %v", errFull, err)
	}
	return err
}

// putEntries writes each run of keys to its map: table4 (or its overflow,
// flows4) for the keys marked inFlows4, under their compact key; flows for
// the others, in batch updates.
func (b *mapBackend) putEntries(keys []bpfKey, vals []bpfFlowVal) (int, error) {
	done := 0
	for done < len(keys) {
		if keys[done].Pad == inFlows4 {
			if err := b.put4(&keys[done], &vals[done]); err != nil {
				return done, err
			}
			done++
			continue
		}
		end := done + 1
		for end < len(keys) && keys[end].Pad != inFlows4 {
			end++
		}
		n, err := putBatch(b.n.maps["flows"], keys[done:end], vals[done:end])
		done += n
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// put4 writes an exact IPv4 entry: into table4 when its window has room (or
// it is there already), else into flows4, published before the slot that
// held it, if any, is retired.
func (b *mapBackend) put4(k *bpfKey, v *bpfFlowVal) error {
	b.t4.commit()
	k4 := key4(k)
	if _, ok := b.over[k4]; !ok && b.t4.put(&k4, v) {
		return nil
	}
	return b.putOver(&k4, v)
}

// putOver writes an exact IPv4 entry into flows4, table4's overflow, and
// then retires the slot of table4 that held it, if any.
func (b *mapBackend) putOver(k *bpfKey4, v *bpfFlowVal) error {
	k4 := *k
	if len(b.over) == 0 {
		// The program looks in flows4 from now on: before the entry
		// is there.
		if err := b.n.maps["config"].Update(uint32(1), uint32(1), ebpf.UpdateAny); err != nil {
			return err
		}
	}
	// A copy for Update, which keeps its key argument (an interface): k4
	// itself stays on the stack for the table4 path.
	uk := k4
	if err := b.n.maps["flows4"].Update(&uk, v, ebpf.UpdateAny); err != nil {
		if len(b.over) == 0 {
			b.n.maps["config"].Update(uint32(1), uint32(0), ebpf.UpdateAny)
		}
		return fullErr(err)
	}
	b.over[k4] = struct{}{}
	b.t4.del(&k4)
	return nil
}

// stage4 stages an exact IPv4 entry's write into table4 (see table4.stage)
// when its window has room; otherwise it writes the entry now, as put4.
// When the window is full and no staged write replaces an older version
// of its entry, it writes the entry into flows4 without committing the
// staged writes first: none of them is k's (the table stages a key only
// while no write of it is pending), and committing would free no slot
// (only the retirement of a replaced version does). A bulk load of 128k
// rules overflows about 600 keys; committing at each cut the staged run
// into short ones, written in little slot order, with a sort each.
func (b *mapBackend) stage4(k *bpfKey, v *bpfFlowVal) (bool, error) {
	k4 := key4(k)
	if _, ok := b.over[k4]; !ok {
		if b.t4.stage(&k4, v) {
			return true, nil
		}
		if base, _ := b.t4.base(&k4); b.t4.free(base) < 0 && b.t4.stagedOld == 0 {
			return false, b.putOver(&k4, v)
		}
	}
	// In flows4 already, or room that committing may make: a slot that
	// a replaced version frees, a program that it releases.
	return false, b.put4(k, v)
}

// commit4 makes the staged writes.
func (b *mapBackend) commit4() { b.t4.commit() }

// warm4 reads the tags of the windows of keys' entries in table4, which
// stage4 will read and write: the hashes first, then the reads.
func (b *mapBackend) warm4(keys []bpfKey) int {
	var bases [warmAhead]uint32
	for i := range keys[:min(len(keys), warmAhead)] {
		k4 := key4(&keys[i])
		bases[i], _ = b.t4.base(&k4)
	}
	n := 0
	for _, base := range bases[:min(len(keys), warmAhead)] {
		n += int(b.t4.tags[base])
	}
	return n
}

// putBatch writes keys[i]→vals[i] into m, in BPF batch updates (one
// system call for as many entries as the kernel takes at a time).
func putBatch[K any](m *ebpf.Map, keys []K, vals []bpfFlowVal) (int, error) {
	if len(keys) == 1 {
		if err := m.Update(&keys[0], &vals[0], ebpf.UpdateAny); err != nil {
			return 0, fullErr(err)
		}
		return 1, nil
	}
	done := 0
	for done < len(keys) {
		c, err := m.BatchUpdate(keys[done:], vals[done:], &ebpf.BatchOptions{ElemFlags: uint64(ebpf.UpdateAny)})
		done += c
		if err != nil {
			return done, fullErr(err)
		}
		if c == 0 {
			return done, errors.New("batch update made no progress")
		}
	}
	return done, nil
}

func (b *mapBackend) deleteEntry(k *bpfKey) error {
	if k.Pad != inFlows4 {
		return b.n.maps["flows"].Delete(k)
	}
	b.t4.commit()
	k4 := key4(k)
	if _, ok := b.over[k4]; !ok {
		if !b.t4.del(&k4) {
			return fmt.Errorf("table4 has no entry for the key: %w", unix.ENOENT)
		}
		return nil
	}
	uk := k4 // as in put4
	if err := b.n.maps["flows4"].Delete(&uk); err != nil {
		return err
	}
	delete(b.over, k4)
	if len(b.over) == 0 {
		return b.n.maps["config"].Update(uint32(1), uint32(0), ebpf.UpdateAny)
	}
	return nil
}

func (b *mapBackend) putMasks(bank uint32, s *bpfMaskSet) error {
	if err := b.n.maps["mask_sets"].Update(bank, s, ebpf.UpdateAny); err != nil {
		return err
	}
	return b.n.maps["config"].Update(uint32(0), bank, ebpf.UpdateAny)
}

func (b *mapBackend) resetCounter(idx uint32) error {
	return b.n.maps["rule_counters"].Update(idx, make([]bpfCounters, b.n.ncpu), ebpf.UpdateAny)
}

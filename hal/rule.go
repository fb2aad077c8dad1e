package hal

import (
	"fmt"
	"strings"
)

// Rule is one entry of a NIC's flow table.
type Rule struct {
	ID         RuleID
	Priority   uint16 // higher wins; equal priorities: lower ID wins
	Match      Match
	Actions    []Action
	Cookie     Cookie
	Scope      Scope
	Generation Generation
}

func (r *Rule) String() string {
	acts := make([]string, len(r.Actions))
	for i, a := range r.Actions {
		acts[i] = a.String()
	}
	s := fmt.Sprintf("rule %d prio=%d %s actions=%s", r.ID, r.Priority, r.Match.String(), strings.Join(acts, ","))
	if r.Scope != 0 || r.Generation != 0 {
		s += fmt.Sprintf(" scope=%d gen=%d", r.Scope, r.Generation)
	}
	if r.Cookie != 0 {
		s += fmt.Sprintf(" cookie=%#x", uint64(r.Cookie))
	}
	return s
}

// Terminal returns the rule's terminal action, or nil if it has none.
func (r *Rule) Terminal() *Action {
	if n := len(r.Actions); n > 0 && r.Actions[n-1].Kind.Terminal() {
		return &r.Actions[n-1]
	}
	return nil
}

// Clone returns a deep copy of r: its action list and every action's Geneve
// options are the copy's own, so a driver that keeps a rule is not changed
// by what the caller later does to its slices, and a Dump that hands a rule
// out does not expose the driver's.
func (r *Rule) Clone() Rule {
	c := *r
	c.Actions = CloneActions(r.Actions)
	return c
}

// CloneActions returns a deep copy of acts (nil for an empty list), as
// Rule.Clone copies a rule's actions.
func CloneActions(acts []Action) []Action {
	if len(acts) == 0 {
		return nil
	}
	out := append([]Action(nil), acts...)
	for i := range out {
		if o := out[i].Encap.GeneveOptions; o != nil {
			out[i].Encap.GeneveOptions = append([]byte(nil), o...)
		}
	}
	return out
}

// OpKind is what an Op does.
type OpKind uint8

const (
	OpAdd    OpKind = iota + 1 // install Rule; ErrExists if its ID is taken
	OpModify                   // replace the rule with Rule.ID in one step; ErrNotFound if absent
	OpDelete                   // remove the rule with Rule.ID; ErrNotFound if absent
)

func (k OpKind) String() string {
	switch k {
	case OpAdd:
		return "add"
	case OpModify:
		return "modify"
	case OpDelete:
		return "delete"
	}
	return fmt.Sprintf("op(%d)", uint8(k))
}

// Op is one operation of an Apply batch. Delete reads only Rule.ID.
type Op struct {
	Kind OpKind
	Rule Rule
}

// AddOp, ModifyOp and DeleteOp build operations.
func AddOp(r Rule) Op       { return Op{Kind: OpAdd, Rule: r} }
func ModifyOp(r Rule) Op    { return Op{Kind: OpModify, Rule: r} }
func DeleteOp(id RuleID) Op { return Op{Kind: OpDelete, Rule: Rule{ID: id}} }

// OpResult is the outcome of one Op: nil Err means it landed.
type OpResult struct {
	Err error
}

// Counters are a rule's or a direction's packet and byte counts.
type Counters struct {
	Packets uint64
	Bytes   uint64
}

// Location is where a rule really lives.
type Location uint8

const (
	LocationUnknown  Location = iota
	LocationHardware          // in the NIC's hardware tables
	LocationKernel            // in kernel software (tc software path, XDP on the host CPU)
	LocationUser              // in user-space software (softnic)
)

func (l Location) String() string {
	switch l {
	case LocationHardware:
		return "hardware"
	case LocationKernel:
		return "kernel"
	case LocationUser:
		return "user"
	}
	return "unknown"
}

// RuleInfo is one rule as Dump reports it.
type RuleInfo struct {
	Rule     Rule
	Location Location // where this rule really is (tc reports in_hw per filter)
	Live     bool     // its generation is the active one of its scope
	Counters Counters // zero unless the NIC counts this rule
}

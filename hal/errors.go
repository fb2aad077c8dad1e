package hal

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrNotSupported means the NIC cannot do what was asked: a match field, an
	// action, an encapsulation or a feature it does not have. The caller keeps
	// the work in software; it must not treat the refusal as a reason to drop.
	ErrNotSupported = errors.New("not supported")

	// ErrTableFull means the NIC has no room for another rule. Nothing was
	// added for the operation that got it; existing rules are untouched.
	ErrTableFull = errors.New("rule table full")

	// ErrClosed means the NIC was closed; no call after Close succeeds.
	ErrClosed = errors.New("NIC closed")

	// ErrExists means an add named a RuleID that is already installed.
	ErrExists = errors.New("rule exists")

	// ErrNotFound means a modify or delete named a RuleID that is not installed,
	// or a port that the NIC does not have.
	ErrNotFound = errors.New("not found")

	// ErrInvalidRule means a rule is malformed whatever the NIC (no terminal
	// action, actions out of order, a mask without its key, …). It is a bug in
	// the caller, unlike ErrNotSupported.
	ErrInvalidRule = errors.New("invalid rule")

	// ErrNotApplied marks the operations of an atomic batch that were valid
	// but did not land because another operation of the batch failed.
	ErrNotApplied = errors.New("not applied: batch rolled back")

	// ErrBatchTooLarge means an Apply batch had more operations than
	// Capabilities.MaxBatch: nothing of it was applied. The caller splits
	// it; it is a bug in the caller, not a refusal of the rules.
	ErrBatchTooLarge = errors.New("batch larger than MaxBatch")

	// ErrShortResults means Apply was given fewer results than operations:
	// nothing was applied. It is a bug in the caller.
	ErrShortResults = errors.New("fewer results than operations")
)

// UnsupportedError is a refusal by Validate (or Apply) of something the NIC
// cannot do. Field names the match field or action, e.g. "match.vlan" or
// "actions[2] encap geneve". errors.Is(err, ErrNotSupported) is true.
type UnsupportedError struct {
	Driver string
	Field  string
	Reason string
}

func (e *UnsupportedError) Error() string {
	var b strings.Builder
	if e.Driver != "" {
		b.WriteString(e.Driver)
		b.WriteString(": ")
	}
	b.WriteString(e.Field)
	b.WriteString(": not supported")
	if e.Reason != "" {
		b.WriteString(": ")
		b.WriteString(e.Reason)
	}
	return b.String()
}

// Is reports that an UnsupportedError is an ErrNotSupported.
func (e *UnsupportedError) Is(target error) bool { return target == ErrNotSupported }

// Unsupported builds an *UnsupportedError.
func Unsupported(driver, field, format string, args ...any) error {
	return &UnsupportedError{Driver: driver, Field: field, Reason: fmt.Sprintf(format, args...)}
}

// RuleError says why a rule is malformed independent of any NIC.
// errors.Is(err, ErrInvalidRule) is true.
type RuleError struct {
	Field  string
	Reason string
}

func (e *RuleError) Error() string { return "invalid rule: " + e.Field + ": " + e.Reason }

// Is reports that a RuleError is an ErrInvalidRule.
func (e *RuleError) Is(target error) bool { return target == ErrInvalidRule }

// OpError is a failure of the device or the kernel while doing Op. It unwraps
// to the underlying error (a netlink error, an errno, …) so that callers can
// still test for it.
type OpError struct {
	Driver string
	Op     string // e.g. "add", "delete", "activate", "attach"
	Rule   RuleID // 0 when the operation is not about one rule
	Err    error
}

func (e *OpError) Error() string {
	s := e.Driver + ": " + e.Op
	if e.Rule != 0 {
		s += fmt.Sprintf(" rule %d", e.Rule)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *OpError) Unwrap() error { return e.Err }

// BatchError is what Apply returns when not every operation landed. Results
// carry the per-operation detail; BatchError summarises it.
type BatchError struct {
	Total  int   // operations in the batch
	Failed int   // operations that did not land
	Index  int   // index of the first failed operation
	First  error // its error
}

func (e *BatchError) Error() string {
	return fmt.Sprintf("%d of %d operations failed; first, op %d: %v", e.Failed, e.Total, e.Index, e.First)
}

// Unwrap returns the first failure, so errors.Is(err, ErrTableFull) works on
// a batch.
func (e *BatchError) Unwrap() error { return e.First }

// Summarize builds the error Apply returns from its results: nil when every
// operation in results landed.
func Summarize(results []OpResult) error {
	var be *BatchError
	for i := range results {
		if results[i].Err == nil {
			continue
		}
		if be == nil {
			be = &BatchError{Total: len(results), Index: i, First: results[i].Err}
		}
		be.Failed++
	}
	if be == nil {
		return nil
	}
	return be
}

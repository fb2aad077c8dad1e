package hal

import (
	"context"
	"fmt"
)

// CheckApply is the precondition check every driver's Apply and ApplyAtomic
// start with, so that every NIC refuses a batch it cannot run in the same
// way. It returns nil when the batch may run. Otherwise nothing of the batch
// may be applied, and it returns a *BatchError whose Total and Failed are
// len(ops), having filled every result with the same error, which
// errors.Is matches to:
//
//   - ErrShortResults when results is shorter than ops (the results there
//     are are filled);
//   - ErrBatchTooLarge when ops has more than caps.MaxBatch operations (a
//     MaxBatch of 0 or less sets no bound);
//   - ErrClosed when closed is true: the driver passes its own state, read
//     under the lock that its Close takes;
//   - ctx.Err() (context.Canceled, context.DeadlineExceeded) when ctx is done.
//
// The first that holds, in that order, is the one reported. A driver whose
// operations are long (a kernel round trip each) still checks ctx between
// them; CheckApply only refuses a batch that is already too late.
func CheckApply(ctx context.Context, caps *Capabilities, closed bool, ops []Op, results []OpResult) error {
	var err error
	switch {
	case len(results) < len(ops):
		err = fmt.Errorf("%s: apply: %d results for %d operations: %w", caps.Driver, len(results), len(ops), ErrShortResults)
	case caps.MaxBatch > 0 && len(ops) > caps.MaxBatch:
		err = fmt.Errorf("%s: apply: %d operations, at most %d: %w", caps.Driver, len(ops), caps.MaxBatch, ErrBatchTooLarge)
	case closed:
		err = ErrClosed
	default:
		err = ctx.Err()
	}
	if err == nil {
		return nil
	}
	n := min(len(ops), len(results))
	for i := range results[:n] {
		results[i].Err = err
	}
	return &BatchError{Total: len(ops), Failed: len(ops), Index: 0, First: err}
}

package store

import "context"

// KV is a revisioned key-value store with prefix reads, watches and
// transactions: the subset of etcd's API that KVStore needs. Revisions are
// store-wide and increase with every committed transaction; all the events of
// one transaction carry its revision.
type KV interface {
	// Get returns every key under prefix, in key order, as of one revision,
	// which it returns too (the store's current one).
	Get(ctx context.Context, prefix string) ([]KeyValue, int64, error)
	// Watch delivers the events under prefix from revision from on (from ≤ 0:
	// every revision committed after Watch returns), in
	// order, all events of one revision in the same response. It ends, after
	// a response with Err set, when from is compacted (ErrCompacted) or the
	// store is lost (ErrUnavailable); the channel closes then, or when ctx
	// is done.
	Watch(ctx context.Context, prefix string, from int64) <-chan WatchResponse
	// Txn applies ops atomically, or none of them, and returns the new
	// revision.
	Txn(ctx context.Context, ops []Op) (int64, error)
	// Close releases the client (not the server).
	Close() error
}

// KeyValue is one stored key.
type KeyValue struct {
	Key         string
	Value       []byte
	ModRevision int64
}

// Op is one write of a transaction: a put, or a delete when Delete is set.
type Op struct {
	Key    string
	Value  []byte
	Delete bool
}

// KVEvent is one change seen by a watch. Value is nil for a delete.
type KVEvent struct {
	Key      string
	Value    []byte
	Delete   bool
	Revision int64
}

// WatchResponse is one batch of a watch: the events of one or more whole
// revisions, or Err.
type WatchResponse struct {
	Events []KVEvent
	Err    error
}

package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nicpath/nicpath/policy"
)

// KVStore is a Store, Writer and StatusReader over any KV, with the layout
// described in the package documentation.
type KVStore struct {
	kv     KV
	prefix string
	// TxnOps bounds the operations of one transaction when Publish writes a
	// large state in batches. etcd refuses transactions of more than
	// --max-txn-ops (128 by default) operations.
	TxnOps int
}

var (
	_ Store        = (*KVStore)(nil)
	_ Writer       = (*KVStore)(nil)
	_ StatusReader = (*KVStore)(nil)
)

// DefaultTxnOps is etcd's default limit on the operations of a transaction.
const DefaultTxnOps = 128

// NewKV returns a store keeping its keys in kv under prefix (DefaultPrefix
// when empty).
func NewKV(kv KV, prefix string) *KVStore {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &KVStore{kv: kv, prefix: prefix, TxnOps: DefaultTxnOps}
}

// KV returns the backend.
func (s *KVStore) KV() KV { return s.kv }

// Close closes the backend.
func (s *KVStore) Close() error { return s.kv.Close() }

func (s *KVStore) statePrefix() string  { return s.prefix + stateDir }
func (s *KVStore) statusPrefix() string { return s.prefix + statusDir }

// Load reads every object at one revision and builds the state.
func (s *KVStore) Load(ctx context.Context) (Snapshot, error) {
	kvs, rev, err := s.kv.Get(ctx, s.statePrefix())
	if err != nil {
		return Snapshot{}, err
	}
	m := newMirror()
	n := len(s.statePrefix())
	for _, kv := range kvs {
		m.set(kv.Key[n:], kv.Value, false)
	}
	m.rev = rev
	st, err := m.build()
	if err != nil {
		return Snapshot{Revision: rev}, fmt.Errorf("store: revision %d: %w", rev, err)
	}
	m.st = st
	return Snapshot{Revision: rev, State: st, m: m}, nil
}

// Watch follows the state from snapshot from, which must come from this
// store's Load or Watch.
func (s *KVStore) Watch(ctx context.Context, from Snapshot) (<-chan Event, error) {
	if from.m == nil {
		return nil, errors.New("store: watch needs a snapshot from this store's Load")
	}
	m := from.m.clone()
	wch := s.kv.Watch(ctx, s.statePrefix(), from.Revision+1)
	out := make(chan Event)
	n := len(s.statePrefix())
	go func() {
		defer close(out)
		for {
			var resp WatchResponse
			var ok bool
			select {
			case resp, ok = <-wch:
			case <-ctx.Done():
				return
			}
			if !ok {
				return
			}
			if resp.Err != nil {
				send(ctx, out, Event{Err: resp.Err})
				return
			}
			// Coalesce what has already arrived: whole revisions each, so the
			// result is still one consistent revision, and a burst of changes
			// costs one build.
			events := resp.Events
		drain:
			for {
				select {
				case more, ok := <-wch:
					if !ok {
						break drain
					}
					if more.Err != nil {
						wch = closedAfter(more)
						break drain
					}
					events = append(events, more.Events...)
				default:
					break drain
				}
			}
			if len(events) == 0 {
				continue
			}
			st, err := m.apply(events, n)
			ev := Event{Snapshot: Snapshot{Revision: m.rev}}
			if err != nil {
				ev.Invalid = fmt.Errorf("store: revision %d: %w", m.rev, err)
			} else {
				// No mirror: watching again starts from a fresh Load, and a
				// copy of a million objects per event would cost more than
				// the activation it carries.
				ev.Snapshot.State = st
			}
			if !send(ctx, out, ev) {
				return
			}
		}
	}()
	return out, nil
}

// closedAfter returns a channel that yields resp and closes: the error a
// drain ran into is delivered after the events before it.
func closedAfter(resp WatchResponse) <-chan WatchResponse {
	c := make(chan WatchResponse, 1)
	c <- resp
	close(c)
	return c
}

func send[T any](ctx context.Context, c chan<- T, v T) bool {
	select {
	case c <- v:
		return true
	case <-ctx.Done():
		return false
	}
}

// Ping reads one key to check that the store answers.
func (s *KVStore) Ping(ctx context.Context) error {
	_, _, err := s.kv.Get(ctx, s.prefix+"ping/")
	return err
}

// Change is one atomic change of the desired state: puts and deletes of
// policy objects (policy.Host, policy.VM, policy.Shadow, policy.Activation,
// …, or the router's policy.MAC).
type Change struct {
	ops []Op
	err error
}

// Put stores obj, replacing the object with the same key.
func (c *Change) Put(obj any) *Change {
	key, _, err := objectKey(obj)
	if err != nil {
		c.err = errors.Join(c.err, err)
		return c
	}
	val, err := json.Marshal(obj)
	if err != nil {
		c.err = errors.Join(c.err, err)
		return c
	}
	c.ops = append(c.ops, Op{Key: key, Value: val})
	return c
}

// Delete removes the object with obj's key (only its key fields matter, e.g.
// policy.Shadow{VM: "vm1"}).
func (c *Change) Delete(obj any) *Change {
	key, _, err := objectKey(obj)
	if err != nil {
		c.err = errors.Join(c.err, err)
		return c
	}
	c.ops = append(c.ops, Op{Key: key, Delete: true})
	return c
}

// Len is the number of operations.
func (c *Change) Len() int { return len(c.ops) }

// Commit applies c in one transaction.
func (s *KVStore) Commit(ctx context.Context, c *Change) (int64, error) {
	if c.err != nil {
		return 0, c.err
	}
	ops := make([]Op, len(c.ops))
	for i, op := range c.ops {
		op.Key = s.statePrefix() + op.Key
		ops[i] = op
	}
	return s.kv.Txn(ctx, ops)
}

// Publish makes the stored state st. When the difference fits in TxnOps
// operations it is one transaction; otherwise it is written in batches in
// build order (hosts, tenants and VNETs before the VMs that name them;
// deletions last, in reverse), so that readers in between see states that
// are mostly valid and an invalid one is never applied (it does not build).
// Unchanged objects are not written again.
func (s *KVStore) Publish(ctx context.Context, st *policy.State) (int64, error) {
	kvs, _, err := s.kv.Get(ctx, s.statePrefix())
	if err != nil {
		return 0, err
	}
	n := len(s.statePrefix())
	have := make(map[string][]byte, len(kvs))
	for _, kv := range kvs {
		have[kv.Key[n:]] = kv.Value
	}
	var puts, dels []Op
	for _, obj := range stateObjects(st) {
		key, _, err := objectKey(obj)
		if err != nil {
			return 0, err
		}
		val, err := json.Marshal(obj)
		if err != nil {
			return 0, err
		}
		old, ok := have[key]
		delete(have, key)
		if ok && string(old) == string(val) {
			continue
		}
		puts = append(puts, Op{Key: s.statePrefix() + key, Value: val})
	}
	for _, kv := range kvs { // key order; reversed below
		if _, ok := have[kv.Key[n:]]; ok {
			dels = append(dels, Op{Key: kv.Key, Delete: true})
		}
	}
	for i, j := 0, len(dels)-1; i < j; i, j = i+1, j-1 {
		dels[i], dels[j] = dels[j], dels[i]
	}
	ops := append(puts, dels...)
	limit := max(s.TxnOps, 1)
	var rev int64
	if len(ops) == 0 {
		_, rev, err = s.kv.Get(ctx, s.prefix+"ping/")
		return rev, err
	}
	for len(ops) > 0 {
		k := min(limit, len(ops))
		if rev, err = s.kv.Txn(ctx, ops[:k]); err != nil {
			return rev, err
		}
		ops = ops[k:]
	}
	return rev, nil
}

// ReportStatus writes a host's status record.
func (s *KVStore) ReportStatus(ctx context.Context, st Status) error {
	if st.Host == "" {
		return errors.New("store: status without a host")
	}
	val, err := json.Marshal(st)
	if err != nil {
		return err
	}
	_, err = s.kv.Txn(ctx, []Op{{Key: s.statusPrefix() + esc(st.Host), Value: val}})
	return err
}

// Statuses reads every host's status record.
func (s *KVStore) Statuses(ctx context.Context) (map[string]Status, int64, error) {
	kvs, rev, err := s.kv.Get(ctx, s.statusPrefix())
	if err != nil {
		return nil, 0, err
	}
	out := make(map[string]Status, len(kvs))
	for _, kv := range kvs {
		var st Status
		if err := json.Unmarshal(kv.Value, &st); err != nil {
			return nil, rev, fmt.Errorf("store: status %q: %w", kv.Key, err)
		}
		out[st.Host] = st
	}
	return out, rev, nil
}

// WatchStatuses delivers the status records written after revision after.
// Records that do not decode are skipped.
func (s *KVStore) WatchStatuses(ctx context.Context, after int64) (<-chan Status, error) {
	from := after + 1
	if after <= 0 {
		from = 0
	}
	wch := s.kv.Watch(ctx, s.statusPrefix(), from)
	out := make(chan Status, 16)
	go func() {
		defer close(out)
		for resp := range wch {
			if resp.Err != nil {
				return
			}
			for _, ev := range resp.Events {
				if ev.Delete {
					continue
				}
				var st Status
				if json.Unmarshal(ev.Value, &st) != nil || !strings.HasPrefix(ev.Key, s.statusPrefix()) {
					continue
				}
				if !send(ctx, out, st) {
					return
				}
			}
		}
	}()
	return out, nil
}

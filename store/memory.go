package store

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
)

// Memory is an in-process KV with etcd's semantics: one revision counter
// for the whole store, all-or-nothing transactions, ordered prefix watches
// that deliver whole revisions, and compaction of old revisions. Tests use
// its fault switches (SetAvailable, Compact) to play partitions and
// compactions; a program that holds every host in one process uses it as
// the embedded store.
type Memory struct {
	mu        sync.Mutex
	rev       int64
	compacted int64 // revisions ≤ compacted are gone from the history
	data      map[string]KeyValue
	history   []KVEvent     // events after compacted, in revision order
	changed   chan struct{} // closed and replaced at every change
	down      bool
	closed    bool
}

var _ KV = (*Memory)(nil)

// NewMemory returns an empty store at revision 1 (etcd's first revision).
func NewMemory() *Memory {
	return &Memory{rev: 1, data: map[string]KeyValue{}, changed: make(chan struct{})}
}

func (m *Memory) check() error {
	if m.closed {
		return fmt.Errorf("store: memory store closed: %w", ErrUnavailable)
	}
	if m.down {
		return fmt.Errorf("store: memory store made unavailable: %w", ErrUnavailable)
	}
	return nil
}

// Get returns the keys under prefix at the current revision.
func (m *Memory) Get(ctx context.Context, prefix string) ([]KeyValue, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(); err != nil {
		return nil, 0, err
	}
	var out []KeyValue
	for k, kv := range m.data {
		if strings.HasPrefix(k, prefix) {
			out = append(out, kv)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, m.rev, nil
}

// Txn applies ops atomically at a new revision.
func (m *Memory) Txn(ctx context.Context, ops []Op) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(); err != nil {
		return 0, err
	}
	seen := map[string]bool{}
	for _, op := range ops {
		if seen[op.Key] {
			// etcd refuses a transaction that writes one key twice.
			return 0, fmt.Errorf("store: key %q written twice in one transaction", op.Key)
		}
		seen[op.Key] = true
	}
	m.rev++
	for _, op := range ops {
		if op.Delete {
			if _, ok := m.data[op.Key]; !ok {
				continue
			}
			delete(m.data, op.Key)
			m.history = append(m.history, KVEvent{Key: op.Key, Delete: true, Revision: m.rev})
			continue
		}
		val := slices.Clone(op.Value)
		m.data[op.Key] = KeyValue{Key: op.Key, Value: val, ModRevision: m.rev}
		m.history = append(m.history, KVEvent{Key: op.Key, Value: val, Revision: m.rev})
	}
	m.notify()
	return m.rev, nil
}

func (m *Memory) notify() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// Revision returns the current revision.
func (m *Memory) Revision() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rev
}

// Compact forgets the history up to and including rev, as etcd's
// compaction does: watches that still need it end with ErrCompacted.
func (m *Memory) Compact(rev int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rev = min(rev, m.rev)
	if rev <= m.compacted {
		return
	}
	i := sort.Search(len(m.history), func(i int) bool { return m.history[i].Revision > rev })
	m.history = slices.Clone(m.history[i:])
	m.compacted = rev
	m.notify()
}

// SetAvailable makes the store unreachable (false: every call fails with
// ErrUnavailable and every watch ends with it) or reachable again.
func (m *Memory) SetAvailable(up bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.down = !up
	m.notify()
}

// Close makes the store unavailable for good.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.closed = true
		m.notify()
	}
	return nil
}

// Watch delivers the events under prefix from revision from on.
func (m *Memory) Watch(ctx context.Context, prefix string, from int64) <-chan WatchResponse {
	out := make(chan WatchResponse)
	next := from
	if next <= 0 {
		// From now on: fixed before returning, as the KV contract says.
		m.mu.Lock()
		next = m.rev + 1
		m.mu.Unlock()
	}
	go func() {
		defer close(out)
		for {
			m.mu.Lock()
			if err := m.check(); err != nil {
				m.mu.Unlock()
				send(ctx, out, WatchResponse{Err: err})
				return
			}
			if next <= m.compacted {
				err := fmt.Errorf("store: watch from revision %d, compacted up to %d: %w", next, m.compacted, ErrCompacted)
				m.mu.Unlock()
				send(ctx, out, WatchResponse{Err: err})
				return
			}
			i := sort.Search(len(m.history), func(i int) bool { return m.history[i].Revision >= next })
			var evs []KVEvent
			for _, ev := range m.history[i:] {
				if strings.HasPrefix(ev.Key, prefix) {
					evs = append(evs, ev)
				}
			}
			wait := m.changed
			if m.rev >= next {
				next = m.rev + 1
			}
			m.mu.Unlock()
			if len(evs) > 0 && !send(ctx, out, WatchResponse{Events: evs}) {
				return
			}
			select {
			case <-wait:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

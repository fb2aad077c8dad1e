package lease

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/nicpath/nicpath/store"
)

// FileKV is a store.KV kept in one JSON file, rewritten atomically (a
// temporary file renamed over it) by every transaction: the store of a
// tether that runs without etcd, so that its leases survive a restart of
// the process. It is for one process at a time; it keeps no history, so
// its watches deliver nothing.
type FileKV struct {
	path string

	mu   sync.Mutex
	rev  int64
	data map[string]fileEntry
}

type fileEntry struct {
	Value []byte `json:"value"`
	Rev   int64  `json:"rev"`
}

type fileDoc struct {
	Revision int64                `json:"revision"`
	Keys     map[string]fileEntry `json:"keys"`
}

var _ store.KV = (*FileKV)(nil)

// OpenFile opens (or creates, at the first transaction) the file at path.
func OpenFile(path string) (*FileKV, error) {
	f := &FileKV{path: path, data: map[string]fileEntry{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return nil, err
	}
	var d fileDoc
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, err
	}
	f.rev = d.Revision
	if d.Keys != nil {
		f.data = d.Keys
	}
	return f, nil
}

// Get implements store.KV.
func (f *FileKV) Get(_ context.Context, prefix string) ([]store.KeyValue, int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []store.KeyValue
	for k, e := range f.data {
		if strings.HasPrefix(k, prefix) {
			out = append(out, store.KeyValue{Key: k, Value: e.Value, ModRevision: e.Rev})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, f.rev, nil
}

// Txn implements store.KV: all of ops land in the file, or none.
func (f *FileKV) Txn(_ context.Context, ops []store.Op) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	next := make(map[string]fileEntry, len(f.data)+len(ops))
	for k, e := range f.data {
		next[k] = e
	}
	rev := f.rev + 1
	for _, op := range ops {
		if op.Delete {
			delete(next, op.Key)
		} else {
			next[op.Key] = fileEntry{Value: op.Value, Rev: rev}
		}
	}
	b, err := json.MarshalIndent(fileDoc{Revision: rev, Keys: next}, "", " ")
	if err != nil {
		return 0, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(f.path), ".leases-*")
	if err != nil {
		return 0, err
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), f.path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return 0, err
	}
	f.rev, f.data = rev, next
	return rev, nil
}

// Watch implements store.KV: the file has no history to watch; the channel
// closes when ctx is done.
func (f *FileKV) Watch(ctx context.Context, _ string, _ int64) <-chan store.WatchResponse {
	c := make(chan store.WatchResponse)
	context.AfterFunc(ctx, func() { close(c) })
	return c
}

// Close implements store.KV.
func (f *FileKV) Close() error { return nil }

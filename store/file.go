package store

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nicpath/nicpath/policy"
)

// File is the single-host store: one policy document on disk, read with
// policy's loader and watched by polling (a document is replaced, edited in
// place or renamed over; polling sees all three). Its revision counts the
// distinct contents it has read, starting at 1. It is read-only; status
// reports are kept in memory (one host: nobody else reads them).
type File struct {
	path     string
	interval time.Duration

	mu       sync.Mutex
	rev      int64
	last     []byte
	statuses map[string]Status
}

var (
	_ Store        = (*File)(nil)
	_ StatusReader = (*File)(nil)
)

// NewFile returns a store for the document at path, checked for changes
// every interval (default 1s).
func NewFile(path string, interval time.Duration) *File {
	if interval <= 0 {
		interval = time.Second
	}
	return &File{path: path, interval: interval, statuses: map[string]Status{}}
}

// read reads the document and returns its contents and revision.
func (f *File) read() ([]byte, int64, error) {
	data, err := os.ReadFile(f.path)
	if err != nil {
		return nil, 0, fmt.Errorf("store: %w: %w", ErrUnavailable, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.last == nil || !bytes.Equal(data, f.last) {
		f.rev++
		f.last = data
	}
	return data, f.rev, nil
}

// Load parses the document as it is now.
func (f *File) Load(ctx context.Context) (Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return Snapshot{}, err
	}
	data, rev, err := f.read()
	if err != nil {
		return Snapshot{}, err
	}
	st, err := policy.Parse(f.path, data)
	if err != nil {
		return Snapshot{Revision: rev}, err
	}
	return Snapshot{Revision: rev, State: st, m: fileMark}, nil
}

// fileMark stands in for a KV mirror: File snapshots carry no objects, but a
// watch needs to know its snapshot came from a Load.
var fileMark = &mirror{}

// Watch polls the document and delivers a snapshot whenever its contents
// change; a document that does not parse is delivered as Invalid (the
// follower keeps its state) and a file that cannot be read ends the watch
// with ErrUnavailable.
func (f *File) Watch(ctx context.Context, from Snapshot) (<-chan Event, error) {
	out := make(chan Event)
	go func() {
		defer close(out)
		seen := from.Revision
		t := time.NewTicker(f.interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			data, rev, err := f.read()
			if err != nil {
				send(ctx, out, Event{Err: err})
				return
			}
			if rev <= seen {
				continue
			}
			seen = rev
			ev := Event{Snapshot: Snapshot{Revision: rev}}
			if st, err := policy.Parse(f.path, data); err != nil {
				ev.Invalid = err
			} else {
				ev.Snapshot.State = st
			}
			if !send(ctx, out, ev) {
				return
			}
		}
	}()
	return out, nil
}

// Ping checks that the document can be read.
func (f *File) Ping(ctx context.Context) error {
	_, err := os.Stat(f.path)
	if err != nil {
		return fmt.Errorf("store: %w: %w", ErrUnavailable, err)
	}
	return nil
}

// ReportStatus keeps the host's report in memory.
func (f *File) ReportStatus(ctx context.Context, st Status) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statuses[st.Host] = st
	return nil
}

// Statuses returns the reports made through this File.
func (f *File) Statuses(ctx context.Context) (map[string]Status, int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]Status, len(f.statuses))
	for k, v := range f.statuses {
		out[k] = v
	}
	return out, f.rev, nil
}

// WatchStatuses is not supported by the file store: one host has nobody to
// wait for. The channel closes when ctx is done.
func (f *File) WatchStatuses(ctx context.Context, after int64) (<-chan Status, error) {
	c := make(chan Status)
	go func() { <-ctx.Done(); close(c) }()
	return c, nil
}

// Close does nothing: the document is not held open.
func (f *File) Close() error { return nil }

// Open returns the store a vswitchd's store option names: a path (or
// file:PATH) is a File watched every interval; mem: is a fresh in-process
// store. Other schemes (etcd://…) belong to their own modules, which a
// program registers with Register; a scheme:// nobody registered is an
// error, never a file name.
func Open(spec string, interval time.Duration) (Store, error) {
	openersMu.Lock()
	defer openersMu.Unlock()
	for scheme, open := range openers {
		if len(spec) > len(scheme) && spec[:len(scheme)+1] == scheme+":" {
			return open(spec)
		}
	}
	if i := strings.Index(spec, "://"); i > 0 && !strings.ContainsAny(spec[:i], "/.") {
		return nil, fmt.Errorf("store: no %q store in this program (the etcd store is in module github.com/nicpath/nicpath/store/etcd: build a program that imports it, such as store/etcd/cmd/vswitchd)", spec[:i])
	}
	switch {
	case spec == "mem:":
		return NewKV(NewMemory(), ""), nil
	case len(spec) > 5 && spec[:5] == "file:":
		return NewFile(spec[5:], interval), nil
	case spec != "":
		return NewFile(spec, interval), nil
	}
	return nil, fmt.Errorf("store: empty store name")
}

var (
	openersMu sync.Mutex
	openers   = map[string]func(spec string) (Store, error){}
)

// Register makes Open hand specs of the form scheme:… to open (the etcd
// module registers "etcd").
func Register(scheme string, open func(spec string) (Store, error)) {
	openersMu.Lock()
	defer openersMu.Unlock()
	openers[scheme] = open
}

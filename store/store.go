package store

import (
	"context"
	"errors"
	"time"

	"github.com/nicpath/nicpath/policy"
)

// ErrCompacted: a watch asked for revisions the store no longer keeps (etcd
// compacted them, or the in-memory store did). The watcher must resync from a
// fresh Load; nothing is lost, since a snapshot holds every earlier change.
var ErrCompacted = errors.New("store: revision compacted")

// ErrUnavailable: the store cannot be reached (a partition, a stopped server).
// A follower keeps its last applied state and reports itself stale.
var ErrUnavailable = errors.New("store: unavailable")

// ErrReadOnly: the store cannot be written through this interface (the file
// store: its file is the writer's).
var ErrReadOnly = errors.New("store: read only")

// Snapshot is one complete, checked desired state as of one store revision.
// State is nil only for the zero Snapshot.
type Snapshot struct {
	Revision int64
	State    *policy.State

	// m is the object mirror the snapshot was built from, so that a watch can
	// continue from it without reading everything again (KV stores only).
	m *mirror
}

// Event is what a watch delivers: the next snapshot, or why the watch ended.
//
// Exactly one of three things holds. Err != nil: the watch is over (the
// channel closes after this event) and the watcher resyncs with Load: Err is
// ErrCompacted, ErrUnavailable or the store's own error. Invalid != nil: the
// objects at Snapshot.Revision do not build into a valid state (a writer
// stored an inconsistent change); Snapshot.State is nil and the watcher keeps
// the state it has, while the watch goes on. Otherwise Snapshot is the new
// complete state. Revisions only increase.
type Event struct {
	Snapshot Snapshot
	Invalid  error
	Err      error
}

// Store is where a host's vswitch gets its desired state. Every
// implementation hands out complete, validated states built from one
// consistent revision: never a half-written change.
type Store interface {
	// Load reads the whole desired state at the store's current revision.
	// It fails with a wrapped ErrUnavailable when the store cannot be reached
	// and with a *policy.ErrorList (or a decoding error) when what is stored
	// does not build into a valid state.
	Load(ctx context.Context) (Snapshot, error)
	// Watch delivers a snapshot for every change after from, in revision
	// order (changes that arrive together may be coalesced into their last
	// revision), until ctx is done or an Event with Err ends it. from must
	// come from this store's Load: watching again after an Err starts with
	// a fresh Load.
	Watch(ctx context.Context, from Snapshot) (<-chan Event, error)
	// Ping checks that the store answers; followers call it to notice a
	// partition that a quiet watch would hide.
	Ping(ctx context.Context) error
	// ReportStatus publishes what a host has applied.
	ReportStatus(ctx context.Context, st Status) error
	Close() error
}

// Writer is the writing side of a store, for the VM manager and tools.
// Every Commit is one atomic change: readers see all of it or none of it.
type Writer interface {
	// Publish makes the stored state equal to st: it writes every object of
	// st and deletes the stored objects st does not have. A state that fits
	// in one transaction is published atomically; a larger one in batches
	// (see KVStore.Publish).
	Publish(ctx context.Context, st *policy.State) (int64, error)
	// Commit applies one change atomically and returns its revision.
	Commit(ctx context.Context, c *Change) (int64, error)
}

// StatusReader reads the hosts' status records.
type StatusReader interface {
	// Statuses returns every host's last report, by host name, and the
	// store revision they were read at.
	Statuses(ctx context.Context) (map[string]Status, int64, error)
	// WatchStatuses delivers the status reports written after revision
	// after (0: from now on), until ctx is done or the channel closes (on an
	// error: read Statuses again and watch again). Watching from now on and
	// then reading Statuses misses nothing and is the fast order with etcd,
	// whose watches from a past revision catch up in 100ms steps.
	WatchStatuses(ctx context.Context, after int64) (<-chan Status, error)
}

// Status is what a host reports after each change it applied, and whenever it
// loses or regains the store. The VM manager waits on these records.
type Status struct {
	Host string `json:"host"`
	// Revision is the store revision of the state the host applies.
	Revision int64 `json:"revision"`
	// Installed is the shadow generation installed (inactive or active) for
	// every VM with a shadow in the applied state.
	Installed map[string]uint64 `json:"installed,omitempty"`
	// Active is the live generation of every VM with a shadow.
	Active map[string]uint64 `json:"active,omitempty"`
	// Stale is set while the host cannot reach the store; it keeps forwarding
	// on the state of Revision since StaleSince.
	Stale      bool      `json:"stale,omitempty"`
	StaleSince time.Time `json:"stale_since,omitzero"`
	// Error is the last problem: a revision that did not build, an update the
	// vswitch refused, the store's error while stale.
	Error string `json:"error,omitempty"`
	// Time is when the report was made.
	Time time.Time `json:"time"`
}

// HasInstalled reports whether the host applies a state of at least revision
// rev that holds vm's shadow of generation gen.
func (s Status) HasInstalled(rev int64, vm string, gen uint64) bool {
	return s.Revision >= rev && s.Installed[vm] == gen
}

// HasActivated reports whether the host applies a state of at least revision
// rev in which vm's live generation is gen.
func (s Status) HasActivated(rev int64, vm string, gen uint64) bool {
	return s.Revision >= rev && s.Active[vm] == gen
}

// StatusOf describes a state the way a host reports it.
func StatusOf(host string, snap Snapshot) Status {
	st := Status{Host: host, Revision: snap.Revision, Time: time.Now()}
	if snap.State == nil {
		return st
	}
	for _, sh := range snap.State.Shadows() {
		if st.Installed == nil {
			st.Installed, st.Active = map[string]uint64{}, map[string]uint64{}
		}
		st.Installed[sh.VM] = sh.Generation
		st.Active[sh.VM], _ = snap.State.ActiveGeneration(sh.VM)
	}
	return st
}

package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nicpath/nicpath/policy"
)

// Target is what a Follower drives: a *vswitch.Switch, or anything that takes
// complete desired states. Update must apply a state atomically (the vswitch
// does: a packet sees the old state or the new one).
type Target interface {
	Update(ctx context.Context, st *policy.State) error
}

// FollowerConfig configures a Follower.
type FollowerConfig struct {
	Store  Store
	Host   string // this host's name, for its status record
	Target Target
	Logger *slog.Logger
	// Heartbeat is how often the follower pings the store while its watch is
	// quiet, to notice a partition that a silent watch would hide. Default 1s.
	Heartbeat time.Duration
	// Timeout bounds one store call (load, ping, status). Default 5s.
	Timeout time.Duration
	// Retry is the pause between two attempts to reach the store. Default
	// 200ms.
	Retry time.Duration
	// OnApply, when set, is called after every state the target took, in
	// order (tests record the sequence), before Applied reports it.
	OnApply func(Snapshot)
	// Initial, when its State is set, is the snapshot the target was built
	// with (a daemon that loads the store before it starts its switch): the
	// follower starts from it and does not hand the same revision to the
	// target again.
	Initial Snapshot
}

// Follower keeps a Target on the store's desired state: it loads and applies
// a snapshot, then applies the snapshot of every change the watch delivers,
// and reports a Status after each. When the store cannot be reached it keeps
// the state it has (the target goes on forwarding with it), says so (Stale,
// and its status once it can write it again), and resyncs from a fresh Load
// as soon as the store answers. A compaction that overtakes the watch is
// resynced the same way, without going stale.
type Follower struct {
	cfg FollowerConfig
	log *slog.Logger

	mu         sync.Mutex
	applied    Snapshot
	staleSince time.Time // zero while fresh
	lastErr    error
	resyncs    int
}

// NewFollower returns a follower; Run starts it.
func NewFollower(cfg FollowerConfig) *Follower {
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Retry <= 0 {
		cfg.Retry = 200 * time.Millisecond
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Follower{cfg: cfg, log: log.With("host", cfg.Host), applied: cfg.Initial}
}

// Applied returns the snapshot the target applies now (zero before the first
// one).
func (f *Follower) Applied() Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied
}

// Stale reports whether the store is unreachable, and since when.
func (f *Follower) Stale() (since time.Time, stale bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.staleSince, !f.staleSince.IsZero()
}

// Resyncs counts the loads after the first (reconnections and compactions).
func (f *Follower) Resyncs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.resyncs
}

// Status is the follower's status report as of now.
func (f *Follower) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := StatusOf(f.cfg.Host, f.applied)
	if !f.staleSince.IsZero() {
		st.Stale, st.StaleSince = true, f.staleSince
	}
	if f.lastErr != nil {
		st.Error = f.lastErr.Error()
	}
	return st
}

// Run follows the store until ctx is done; it returns ctx's error.
func (f *Follower) Run(ctx context.Context) error {
	first := true
	pause := f.cfg.Retry
	for ctx.Err() == nil {
		if !first {
			f.mu.Lock()
			f.resyncs++
			f.mu.Unlock()
		}
		began := time.Now()
		err := f.follow(ctx)
		first = false
		if err == nil || ctx.Err() != nil || time.Since(began) > maxRetry {
			// A compaction, or a session that lasted: start over quickly.
			pause = f.cfg.Retry
		}
		if err == nil || ctx.Err() != nil {
			continue
		}
		f.log.Warn("store lost or unusable; keeping the last state", "revision", f.Applied().Revision, "err", err)
		if !sleep(ctx, pause) {
			break
		}
		// Back off while it lasts: every attempt reads the whole state.
		pause = min(2*pause, maxRetry)
	}
	return ctx.Err()
}

// Sync loads the store once and applies what it holds (for callers that do
// not Run, and for the first state before a target starts forwarding).
func (f *Follower) Sync(ctx context.Context) error {
	snap, err := f.load(ctx)
	if err == nil {
		f.apply(ctx, snap)
	}
	return err
}

// load reads a snapshot; the caller applies it.
func (f *Follower) load(ctx context.Context) (Snapshot, error) {
	lctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	snap, err := f.cfg.Store.Load(lctx)
	cancel()
	if err != nil {
		if errors.Is(err, ErrUnavailable) || lctx.Err() != nil {
			f.setStale(err)
		} else {
			f.setErr(err)
		}
		return Snapshot{}, err
	}
	f.setFresh()
	return snap, nil
}

// follow is one session with the store: load, apply, then watch until the
// watch ends or a heartbeat fails. It returns the reason the session ended
// (nil for a compaction, which resyncs at once).
func (f *Follower) follow(ctx context.Context) error {
	from, err := f.load(ctx)
	if err != nil {
		return err
	}
	// Watch before applying: the status report that follows the apply is a
	// write, and a watch from a revision already passed starts behind (etcd
	// catches such watches up in 100ms steps).
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := f.cfg.Store.Watch(wctx, from)
	if err != nil {
		f.setStale(err)
		return err
	}
	f.apply(ctx, from)
	tick := time.NewTicker(f.cfg.Heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-events:
			if !ok {
				return ctx.Err()
			}
			if ev.Err != nil {
				if errors.Is(ev.Err, ErrCompacted) {
					f.log.Info("watch overtaken by a compaction; resyncing", "err", ev.Err)
					return nil
				}
				f.setStale(ev.Err)
				return ev.Err
			}
			if ev.Invalid != nil {
				f.log.Warn("a stored revision does not build; keeping the last state", "revision", ev.Snapshot.Revision, "err", ev.Invalid)
				f.setErr(ev.Invalid)
				f.report(ctx)
				continue
			}
			f.apply(ctx, ev.Snapshot)
		case <-tick.C:
			pctx, pcancel := context.WithTimeout(ctx, min(f.cfg.Timeout, f.cfg.Heartbeat))
			err := f.cfg.Store.Ping(pctx)
			pcancel()
			if err != nil {
				f.setStale(err)
				return err
			}
		}
	}
}

// apply hands a snapshot to the target unless the target already applies
// that revision or a later one.
func (f *Follower) apply(ctx context.Context, snap Snapshot) {
	f.mu.Lock()
	cur := f.applied
	f.mu.Unlock()
	if cur.State != nil && snap.Revision <= cur.Revision {
		f.report(ctx)
		return
	}
	if err := f.cfg.Target.Update(ctx, snap.State); err != nil {
		f.log.Error("the switch refused a state; keeping the last one", "revision", snap.Revision, "err", err)
		f.setErr(fmt.Errorf("update to revision %d: %w", snap.Revision, err))
		f.report(ctx)
		return
	}
	// OnApply before Applied shows the revision: whoever sees it applied
	// finds what OnApply recorded.
	if f.cfg.OnApply != nil {
		f.cfg.OnApply(snap)
	}
	f.mu.Lock()
	f.applied = snap
	f.lastErr = nil
	f.mu.Unlock()
	f.report(ctx)
}

func (f *Follower) report(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	if err := f.cfg.Store.ReportStatus(rctx, f.Status()); err != nil && ctx.Err() == nil {
		f.log.Debug("status not written", "err", err)
	}
}

func (f *Follower) setStale(err error) {
	f.mu.Lock()
	if f.staleSince.IsZero() {
		f.staleSince = time.Now()
	}
	f.lastErr = err
	f.mu.Unlock()
}

func (f *Follower) setErr(err error) {
	f.mu.Lock()
	f.lastErr = err
	f.mu.Unlock()
}

func (f *Follower) setFresh() {
	f.mu.Lock()
	if !f.staleSince.IsZero() {
		f.log.Info("store reachable again; resynced", "stale_for", time.Since(f.staleSince))
	}
	f.staleSince = time.Time{}
	f.lastErr = nil
	f.mu.Unlock()
}

// maxRetry bounds the pause between attempts to reach the store: short
// enough that a host resyncs within seconds of the store's return.
const maxRetry = 5 * time.Second

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

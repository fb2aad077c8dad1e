package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nicpath/nicpath/control"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/store"
)

// A daemon whose configuration names a store follows it instead of a policy
// file: the first state is loaded before the switch starts (so the switch
// reconciles the NIC against it), then a store.Follower applies every later
// revision through Update and reports the host's status to the store.

// openStore opens the configured store and loads its first state, trying
// again until cfg.StoreTimeout while the store cannot be reached: a host
// whose control plane comes up after it must not give up at once, but with
// no state at all there is nothing to run.
func openStore(ctx context.Context, cfg *Config) (store.Store, store.Snapshot, error) {
	s, err := store.Open(cfg.Store, cfg.WatchInterval)
	if err != nil {
		return nil, store.Snapshot{}, err
	}
	lctx, cancel := context.WithTimeout(ctx, cfg.StoreTimeout)
	defer cancel()
	pause := 100 * time.Millisecond
	for {
		snap, err := s.Load(lctx)
		if err == nil {
			return s, snap, nil
		}
		if !errors.Is(err, store.ErrUnavailable) && lctx.Err() == nil {
			// What is stored does not build: waiting will not help.
			s.Close()
			return nil, store.Snapshot{}, fmt.Errorf("store %s: %w", cfg.Store, err)
		}
		select {
		case <-lctx.Done():
			s.Close()
			return nil, store.Snapshot{}, fmt.Errorf("store %s: no state within %s: %w", cfg.Store, cfg.StoreTimeout, err)
		case <-time.After(pause):
		}
		pause = min(2*pause, 2*time.Second)
	}
}

// storeTarget is what the follower drives: the daemon, which checks a state
// as it checks a policy file before the switch applies it.
type storeTarget struct{ d *Agent }

func (t storeTarget) Update(ctx context.Context, st *policy.State) error {
	d := t.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.checkPolicy(st); err != nil {
		return d.reject(err, [32]byte{}, "rejected")
	}
	if err := d.applyState(ctx, st); err != nil {
		return d.reject(err, [32]byte{}, "failed")
	}
	d.state, d.loadedAt = st, time.Now()
	d.syncSealKeys(ctx, st)
	d.accept()
	d.updates++
	d.metrics.policy.WithLabelValues("applied").Inc()
	d.log.Info("state applied from the store", "store", d.cfg.Store, "vms", len(st.VMs()), "mappings", st.MappingCount())
	return nil
}

// storeStatus is what show says of the store.
func (d *Agent) storeStatus() *control.StoreStatus {
	if d.follower == nil {
		return nil
	}
	st := d.follower.Status()
	return &control.StoreStatus{Spec: d.cfg.Store, Revision: st.Revision, Stale: st.Stale, StaleSince: st.StaleSince,
		Resyncs: d.follower.Resyncs(), Error: st.Error}
}

// Follower is the follower of the daemon's store, nil when the daemon runs
// a policy file.
func (d *Agent) Follower() *store.Follower { return d.follower }

// errFromStore refuses what a daemon following a store must not do by
// itself: the store holds the desired state, and a local change would be
// undone by its next revision.
func (d *Agent) errFromStore(what string) error {
	return fmt.Errorf("%s: this vswitchd follows the store %s; change the desired state there (for a migration, the VM manager writes the activation)", what, d.cfg.Store)
}

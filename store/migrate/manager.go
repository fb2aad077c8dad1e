package migrate

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"time"

	"github.com/nicpath/nicpath/directory"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/store"
)

// Store is what the manager needs of a store: reading the state, writing
// changes and reading the hosts' reports (store.KVStore has all three).
type Store interface {
	store.Store
	store.Writer
	store.StatusReader
}

// Manager publishes the desired state and migrates VMs.
type Manager struct {
	s   Store
	log *slog.Logger
	dir directory.Publisher
	key ed25519.PrivateKey
}

// SetDirectory makes the manager publish every VM's mapping records, signed
// with key, to p as well as to the store: on Publish, and at each step of a
// migration (the shadow's record before the shadow is written, the new
// location's before it becomes the VM's own; see directory.Version). Hosts
// that resolve mappings on demand find them there; the activation is the
// store's record still, so it flips every host in one step.
func (m *Manager) SetDirectory(p directory.Publisher, key ed25519.PrivateKey) {
	m.dir, m.key = p, key
}

// publishVM signs and publishes vm's records of st, their versions raised
// by bump.
func (m *Manager) publishVM(ctx context.Context, st *policy.State, vm string, bump uint64) error {
	if m.dir == nil {
		return nil
	}
	rs := directory.RecordsOf(st, vm)
	for i := range rs {
		rs[i].Version += bump
		if _, err := directory.Sign(&rs[i], m.key); err != nil {
			return err
		}
	}
	if err := m.dir.Publish(ctx, rs); err != nil {
		return fmt.Errorf("migrate: directory: %w", err)
	}
	return nil
}

// withVM returns st with vm's location and shadow replaced (a state the
// store is about to hold), for its records.
func withVM(st *policy.State, v policy.VM, sh *policy.Shadow) (*policy.State, error) {
	b := policy.NewBuilder()
	b.SetRouterMAC(st.RouterMAC())
	for _, h := range st.Hosts() {
		b.AddHost(h)
	}
	for _, t := range st.Tenants() {
		b.AddTenant(t)
	}
	for _, n := range st.VNETs() {
		if n.Tenant == v.Tenant && n.Name == v.VNET {
			b.AddVNET(n)
		}
	}
	b.AddVM(v)
	if sh != nil {
		b.AddShadow(*sh)
	}
	return b.Build()
}

// New returns a manager writing to s.
func New(s Store, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{s: s, log: log}
}

// Publish makes the stored desired state st (see store.KVStore.Publish).
func (m *Manager) Publish(ctx context.Context, st *policy.State) (int64, error) {
	rev, err := m.s.Publish(ctx, st)
	if err != nil || m.dir == nil {
		return rev, err
	}
	// Every VM's records in one call: the directory may publish them
	// concurrently.
	var rs []directory.Record
	for _, v := range st.VMs() {
		rs = append(rs, directory.RecordsOf(st, v.Name)...)
	}
	for i := range rs {
		if _, err := directory.Sign(&rs[i], m.key); err != nil {
			return rev, err
		}
	}
	if err := m.dir.Publish(ctx, rs); err != nil {
		return rev, fmt.Errorf("migrate: directory: %w", err)
	}
	return rev, nil
}

// Options tune one migration.
type Options struct {
	// Hosts whose reports are awaited; default every host of the state.
	Hosts []string
	// InstallTimeout bounds the wait for the shadow on every host (step 2).
	// A migration whose shadow is not everywhere by then is abandoned: the
	// shadow record is removed and Migrate fails. Default 30s.
	InstallTimeout time.Duration
	// ActivateTimeout bounds the wait for the activation reports (step 4);
	// hosts that did not report by then are named in Migration.Lagging and
	// catch up from the store. Default 30s.
	ActivateTimeout time.Duration
	// BeforeActivate runs after every host installed the shadow and just
	// before the activation record is written: the VM moves then.
	BeforeActivate func()
}

// Migration says what one migration did and how long each step took.
type Migration struct {
	VM, From, To  string
	Generation    uint64 // the VM's generation at its new location
	ShadowRev     int64
	ActivationRev int64
	FinishRev     int64
	// Install is the time from writing the shadow to the last host's report;
	// Activate from writing the activation to the last host's report.
	Install, Activate time.Duration
	// ActivatedAt is when the activation record was committed.
	ActivatedAt time.Time
	// Lagging names the hosts that had not reported the activation within
	// ActivateTimeout.
	Lagging []string
}

// Migrate moves vm to host to (see the package documentation for the steps).
func (m *Manager) Migrate(ctx context.Context, vm, to string, opt Options) (Migration, error) {
	opt.InstallTimeout = cmpOr(opt.InstallTimeout, 30*time.Second)
	opt.ActivateTimeout = cmpOr(opt.ActivateTimeout, 30*time.Second)
	snap, err := m.s.Load(ctx)
	if err != nil {
		return Migration{}, err
	}
	st := snap.State
	v, ok := st.VM(vm)
	if !ok {
		return Migration{}, fmt.Errorf("migrate: no VM %q", vm)
	}
	if _, busy := st.Shadow(vm); busy {
		return Migration{}, fmt.Errorf("migrate: %s is already migrating", vm)
	}
	if _, ok := st.Host(to); !ok {
		return Migration{}, fmt.Errorf("migrate: no host %q", to)
	}
	if v.Host == to {
		return Migration{}, fmt.Errorf("migrate: %s already runs on %s", vm, to)
	}
	hosts := opt.Hosts
	if len(hosts) == 0 {
		for _, h := range st.Hosts() {
			hosts = append(hosts, h.Name)
		}
	}
	mig := Migration{VM: vm, From: v.Host, To: to, Generation: max(v.Generation, 1) + 1}

	// 1. The shadow: the VM's next location, inactive everywhere. Its
	// directory record first, so that a host that learns of the shadow
	// from the store finds it there.
	start := time.Now()
	shadow := policy.Shadow{VM: vm, Host: to, Generation: mig.Generation}
	if m.dir != nil {
		next, err := withVM(st, v, &shadow)
		if err == nil {
			err = m.publishVM(ctx, next, vm, 0)
		}
		if err != nil {
			return mig, fmt.Errorf("migrate: publish shadow: %w", err)
		}
	}
	mig.ShadowRev, err = m.s.Commit(ctx, new(store.Change).Put(policy.Shadow{VM: vm, Host: to, Generation: mig.Generation}))
	if err != nil {
		return mig, fmt.Errorf("migrate: write shadow: %w", err)
	}
	// 2. Every host has it installed.
	ictx, cancel := context.WithTimeout(ctx, opt.InstallTimeout)
	missing, err := m.wait(ictx, hosts, func(s store.Status) bool { return s.HasInstalled(mig.ShadowRev, vm, mig.Generation) })
	cancel()
	if err != nil {
		if _, derr := m.s.Commit(ctx, new(store.Change).Delete(policy.Shadow{VM: vm})); derr != nil {
			err = errors.Join(err, derr)
		}
		// The directory's record goes back to the VM's own location, at a
		// version above the shadow's.
		if derr := m.publishVM(ctx, st, vm, 2); derr != nil {
			err = errors.Join(err, derr)
		}
		return mig, fmt.Errorf("migrate: shadow of %s not installed on %v: %w", vm, missing, err)
	}
	mig.Install = time.Since(start)
	m.log.Info("shadow installed everywhere", "vm", vm, "to", to, "generation", mig.Generation, "took", mig.Install)

	// 3. The VM moves; one activation record flips every host.
	if opt.BeforeActivate != nil {
		opt.BeforeActivate()
	}
	mig.ActivatedAt = time.Now()
	mig.ActivationRev, err = m.s.Commit(ctx, new(store.Change).Put(policy.Activation{VM: vm, Generation: mig.Generation}))
	if err != nil {
		return mig, fmt.Errorf("migrate: write activation: %w", err)
	}
	actx, cancel := context.WithTimeout(ctx, opt.ActivateTimeout)
	mig.Lagging, err = m.wait(actx, hosts, func(s store.Status) bool { return s.HasActivated(mig.ActivationRev, vm, mig.Generation) })
	cancel()
	mig.Activate = time.Since(mig.ActivatedAt)
	if err != nil && ctx.Err() != nil {
		return mig, err
	}
	if len(mig.Lagging) > 0 {
		m.log.Warn("hosts did not report the activation; they catch up from the store", "vm", vm, "hosts", mig.Lagging)
	}

	// 4. The new location becomes the VM's own; the shadow and the
	// activation go, and with them the old host's rules.
	v.Host, v.Generation = to, mig.Generation
	if m.dir != nil {
		next, err := withVM(st, v, nil)
		if err == nil {
			err = m.publishVM(ctx, next, vm, 0)
		}
		if err != nil {
			return mig, fmt.Errorf("migrate: publish new location: %w", err)
		}
	}
	mig.FinishRev, err = m.s.Commit(ctx, new(store.Change).Put(v).
		Delete(policy.Shadow{VM: vm}).Delete(policy.Activation{VM: vm}))
	if err != nil {
		return mig, fmt.Errorf("migrate: finish: %w", err)
	}
	return mig, nil
}

// wait blocks until every host's status satisfies ok, or ctx ends; it
// returns the hosts that did not.
func (m *Manager) wait(ctx context.Context, hosts []string, ok func(store.Status) bool) ([]string, error) {
	missing := func(sts map[string]store.Status) []string {
		var out []string
		for _, h := range hosts {
			if s, found := sts[h]; !found || !ok(s) {
				out = append(out, h)
			}
		}
		return out
	}
	last := map[string]store.Status{}
	for {
		// Watch first, then read: a report written in between is seen twice
		// (harmless) rather than missed, and the watch starts at the head of
		// the store's history (etcd serves such watches at once).
		wctx, cancel := context.WithCancel(ctx)
		ch, err := m.s.WatchStatuses(wctx, 0)
		if err == nil {
			var sts map[string]store.Status
			sts, _, err = m.s.Statuses(ctx)
			if err == nil {
				maps.Copy(last, sts)
			}
		}
		if err == nil {
			if len(missing(last)) == 0 {
				cancel()
				return nil, nil
			}
			for s := range ch {
				last[s.Host] = s
				if len(missing(last)) == 0 {
					cancel()
					return nil, nil
				}
			}
		}
		cancel()
		if ctx.Err() != nil {
			return missing(last), ctx.Err()
		}
		// The store is unreachable or the watch ended (a compaction, a lost
		// store): try again shortly.
		select {
		case <-ctx.Done():
			return missing(last), ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

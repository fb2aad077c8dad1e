package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nicpath/nicpath/control"
	"github.com/nicpath/nicpath/directory/ondemand"
	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/store"
	"github.com/nicpath/nicpath/vswitch"
)

// Agent is one running agent (vswitchd is one): the NIC it opened, the
// switch programming it, the policy it watches, its control socket and its
// metrics.
type Agent struct {
	cfg    *Config
	log    *slog.Logger
	plan   portPlan
	opened *opened
	nic    hal.NIC // the opened NIC as the observers see it
	sw     *vswitch.Switch
	// swp is sw once it exists, for the driver's reconnect callback,
	// which may fire on the driver's goroutine before the switch is built.
	swp     atomic.Pointer[vswitch.Switch]
	metrics *metrics
	capture *capturer
	started time.Time

	ep *endpoints // the control socket and the metrics endpoint

	// mu guards the policy the switch runs and what the watcher knows of
	// the file.
	mu         sync.Mutex
	state      *policy.State
	policyHash [32]byte // of the file the running state was loaded from
	policyMod  time.Time
	policySize int64
	loadedAt   time.Time
	rejected   uint64
	updates    uint64
	// rejection is set while the policy file is one the daemon refused
	// (it does not load, this host cannot run it, or the switch failed
	// to apply it), until a file that is applied, or the running
	// policy's own file, replaces it: reload, show and the metrics say
	// so all along.
	rejection    *rejection
	lastRejected time.Time // the last rejection, for the metrics

	// With a store instead of a policy file (cfg.Store).
	store    store.Store
	follower *store.Follower
	initial  store.Snapshot

	seal sealKeys // VM sealing keys registered with the NIC (seal.go)

	od *ondemand.Layer // with cfg.Directory (ondemand.go)
}

// reconnected is the driver's reconnect callback: the NIC may have lost
// or kept its table, and the switch reconciles with what it holds now.
func (d *Agent) reconnected() {
	sw := d.swp.Load()
	if sw == nil {
		return // the switch reconciles when it is built
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := sw.Reconcile(ctx)
	if err != nil {
		d.log.Warn("reconcile after the NIC reconnected", "err", err)
		return
	}
	d.log.Info("reconciled after the NIC reconnected", "rules", rep.Rules, "added", rep.Added,
		"removed", rep.Removed, "modified", rep.Modified, "foreign", rep.Foreign)
	d.resyncSealKeys(ctx)
}

// New checks the policy, opens the NIC, binds its ports, builds the switch
// (which reconciles the NIC's table: rules of an earlier run are found and
// dealt with) and listens on the control socket and the metrics address.
// Nothing is opened when the policy does not load. ctx bounds the start
// (the wait for a store's first state, the opening of the NIC); Run takes
// the context the agent runs under.
func New(ctx context.Context, cfg *Config) (*Agent, error) {
	return start(ctx, cfg, nil)
}

// NewWithNIC is New on a NIC the caller opened (a vendor's own driver, or a
// NIC that outlives the daemon): its ports are matched to the
// configuration's interfaces by hal.Port.Name, and Close leaves it open.
// A second daemon started on the same NIC reconciles with the rules the
// first one left, as a restarted vswitchd does on a NIC that kept its table.
func NewWithNIC(ctx context.Context, nic hal.NIC, cfg *Config) (*Agent, error) {
	if nic == nil {
		return nil, errors.New("NewWithNIC: no NIC")
	}
	return start(ctx, cfg, nic)
}

func start(ctx context.Context, cfg *Config, nic hal.NIC) (_ *Agent, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	}
	d := &Agent{cfg: cfg, log: log.With("host", cfg.Host), started: time.Now(), plan: planPorts(cfg)}
	var st *policy.State
	if cfg.Store != "" {
		if d.store, d.initial, err = openStore(ctx, cfg); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil && d.opened == nil {
				d.store.Close() // d.Close does, once the NIC is open
			}
		}()
		st = d.initial.State
		if err := d.checkPolicy(st); err != nil {
			return nil, err
		}
		d.log.Info("first state loaded from the store", "store", cfg.Store, "revision", d.initial.Revision)
	} else {
		fi, err := os.Stat(cfg.Policy)
		if err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
		if st, d.policyHash, err = loadPolicy(cfg.Policy); err != nil {
			return nil, err
		}
		if err := d.checkPolicy(st); err != nil {
			return nil, err
		}
		d.policyMod, d.policySize = fi.ModTime(), fi.Size()
	}
	d.state, d.loadedAt = st, time.Now()

	d.metrics = newMetrics(d)
	d.capture = &capturer{d: d}
	var o *opened
	if nic != nil {
		if d.plan, err = planFromNIC(cfg, nic); err != nil {
			return nil, err
		}
		// Not ours to close.
		o = &opened{nic: nil}
		o.external = nic
	} else {
		n, err := openNIC(ctx, cfg, st, d.plan, d.log, d.reconnected)
		if err != nil {
			return nil, fmt.Errorf("opening %s: %w", cfg.Driver, err)
		}
		o = &opened{nic: n}
		if !d.plan.matches(n) {
			// A NIC that names its own ports (remote: the NIC side
			// does): the configured interfaces are matched by name.
			if d.plan, err = planFromNIC(cfg, n); err != nil {
				n.Close()
				return nil, err
			}
		}
	}
	d.opened = o
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	d.nic = observe(o.device(), d.metrics, d.capture)
	swc := vswitch.Config{NIC: d.nic, Host: cfg.Host, State: st, Ports: d.plan.vmPort,
		Uplink: d.plan.uplink, NextHopMAC: cfg.NextHopMAC, Logger: d.log, FlowIdle: cfg.FlowIdle}
	if cfg.Directory != nil {
		if cfg.Directory.Resolver == nil {
			return nil, errors.New("directory: no resolver")
		}
		// The switch starts on this host's part of the state; the layer
		// sets it (startOnDemand) before any packet is read.
		if swc.State, err = ondemand.Local(st, cfg.Host); err != nil {
			return nil, err
		}
		swc.Handler = d.handleExceptions
	}
	sw, err := vswitch.New(swc)
	if err != nil {
		return nil, fmt.Errorf("starting the switch: %w", err)
	}
	d.sw = sw
	if cfg.Directory != nil {
		if err := d.startOnDemand(ctx, st); err != nil {
			return nil, err
		}
	}
	d.swp.Store(sw)
	d.syncSealKeys(ctx, st)
	if err := d.publishSealKey(); err != nil {
		return nil, err
	}
	if d.store != nil {
		d.follower = store.NewFollower(store.FollowerConfig{Store: d.store, Host: cfg.Host, Target: storeTarget{d},
			Logger: log, Initial: d.initial})
	}
	s := sw.Stats()
	d.log.Info("switch started", "driver", d.nic.Capabilities().Driver, "device", d.nic.Capabilities().Device,
		"ports", len(d.plan.vms)+1, "reconciled_removed", s.ReconcileRemoved, "reconciled_added", s.ReconcileAdded,
		"foreign_rules", s.ForeignRules)

	if d.ep, err = listenEndpoints(d.log, cfg.Control, cfg.Metrics, d.MetricsHandler()); err != nil {
		return nil, err
	}
	releaseMemory()
	return d, nil
}

// checkPolicy refuses a policy this daemon cannot run: its host must be in
// it, and the VMs of its ports should be (a VM that is not is warned about:
// its port carries nothing until a policy names it).
func (d *Agent) checkPolicy(st *policy.State) error {
	if _, ok := st.Host(d.cfg.Host); !ok {
		return fmt.Errorf("%s: host %q (from %s) is not in the policy's hosts", d.source(), d.cfg.Host, d.cfg.File)
	}
	for _, vm := range d.plan.vms {
		if _, ok := st.VM(vm); !ok {
			d.log.Warn("a configured port's VM is not in the policy", "vm", vm, "policy", d.source())
		}
	}
	for _, vm := range st.LocalVMs(d.cfg.Host) {
		if _, ok := d.plan.vmPort[vm.Name]; !ok {
			d.log.Warn("a VM the policy puts on this host has no port in the configuration", "vm", vm.Name, "config", d.cfg.File)
		}
	}
	return nil
}

// source names where the desired state comes from: the policy file or the
// store.
func (d *Agent) source() string {
	if d.cfg.Store != "" {
		return d.cfg.Store
	}
	return d.cfg.Policy
}

// Run runs the switch, the control server, the metrics server and the
// policy watcher until ctx is done, then shuts down gracefully: the control
// socket stops answering, a running capture is finished, the switch and the
// NIC are closed.
func (d *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	wg.Add(2)
	if d.od != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.runOnDemand(ctx)
		}()
	}
	go func() {
		defer wg.Done()
		if err := d.sw.Run(ctx); err != nil {
			errc <- fmt.Errorf("switch: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		if d.follower != nil {
			d.follower.Run(ctx)
			return
		}
		d.watch(ctx)
	}()
	d.ep.serve(ctx, &wg, d.answer, errc)
	d.log.Info("running", "control", d.cfg.Control, "metrics", d.cfg.Metrics, "policy", d.source())
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		d.log.Error("stopping", "err", err)
	}
	cancel()
	d.ep.stop()
	wg.Wait()
	d.log.Info("stopped")
	return err
}

// Close releases everything: the capture, the switch, the NIC and its
// bindings, the sockets. Run's caller calls it after Run returns.
func (d *Agent) Close() error {
	if d.capture != nil {
		if file, n, err := d.capture.stop(); err == nil {
			d.log.Info("capture finished at shutdown", "file", file, "packets", n)
		}
	}
	var errs []error
	if d.sw != nil {
		d.swp.Store(nil) // no reconcile on a closed switch
		errs = append(errs, d.sw.Close())
	}
	if d.opened != nil {
		errs = append(errs, d.opened.close())
	}
	if d.store != nil {
		errs = append(errs, d.store.Close())
	}
	d.ep.close()
	return errors.Join(errs...)
}

// Switch is the running switch.
func (d *Agent) Switch() *vswitch.Switch { return d.sw }

// NIC is the NIC the switch programs.
func (d *Agent) NIC() hal.NIC { return d.nic }

// SoftPort returns the far side of a softnic port (a VM's name, or "uplink"),
// for programs that embed the daemon with the softnic driver and binding
// none and play the VMs and the wire themselves.
func (d *Agent) SoftPort(name string) (*softnic.Port, bool) {
	if d.opened == nil {
		return nil, false
	}
	soft, ok := d.opened.device().(interface {
		Port(hal.PortID) (*softnic.Port, error)
	})
	if !ok {
		return nil, false
	}
	id, ok := d.plan.vmPort[name]
	if name == "uplink" {
		id, ok = d.plan.uplink, true
	}
	if !ok {
		return nil, false
	}
	p, err := soft.Port(id)
	return p, err == nil
}

// MetricsHandler serves the Prometheus metrics.
func (d *Agent) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(d.metrics.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelWarn)})
}

// portLabel names a port for metrics and captures: the VM behind it, or
// "uplink".
func (d *Agent) portLabel(p hal.Port) string {
	if p.ID == d.plan.uplink {
		return "uplink"
	}
	if vm, ok := d.plan.vmOf[p.ID]; ok {
		return vm
	}
	return p.Name
}

// State is the policy the switch runs.
func (d *Agent) State() *policy.State {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state
}

// Reload checks the policy file and, when it changed and loads, applies it.
// A file that does not load is reported (the error names file, line and
// field) and changes nothing: the switch keeps the state it runs.
func (d *Agent) Reload(ctx context.Context) (changed bool, err error) {
	if d.cfg.Store != "" {
		return false, d.errFromStore("reload")
	}
	d.mu.Lock()
	changed, err = d.reloadLocked(ctx, true)
	d.mu.Unlock()
	if changed {
		releaseMemory()
	}
	return changed, err
}

// releaseMemory returns the memory of what a new policy replaced (the old
// state and the loading's garbage: hundreds of megabytes at a million
// mappings) to the system now, rather than over minutes as the runtime
// would. It costs one garbage collection; policy files change seldom.
func releaseMemory() { debug.FreeOSMemory() }

func (d *Agent) reloadLocked(ctx context.Context, force bool) (bool, error) {
	fi, err := os.Stat(d.cfg.Policy)
	if err != nil {
		return false, d.reject(fmt.Errorf("policy: %w", err), [32]byte{}, "rejected")
	}
	if !force && fi.ModTime().Equal(d.policyMod) && fi.Size() == d.policySize {
		return false, nil
	}
	h, err := hashFile(d.cfg.Policy)
	if err != nil {
		return false, d.reject(fmt.Errorf("policy: %w", err), [32]byte{}, "rejected")
	}
	d.policyMod, d.policySize = fi.ModTime(), fi.Size()
	if h == d.policyHash {
		d.accept()
		return false, nil
	}
	if r := d.rejection; r != nil && r.hash == h && r.result == "rejected" {
		// The file refused already: refused again, not counted twice.
		return false, r.err
	}
	st, h, err := loadPolicy(d.cfg.Policy)
	if err == nil {
		err = d.checkPolicy(st)
	}
	if err != nil {
		return false, d.reject(err, h, "rejected")
	}
	if h == d.policyHash {
		// Changed back while it was read.
		d.accept()
		return false, nil
	}
	if err := d.applyState(ctx, st); err != nil {
		return false, d.reject(fmt.Errorf("applying %s: %w", d.cfg.Policy, err), h, "failed")
	}
	d.state, d.loadedAt, d.policyHash = st, time.Now(), h
	d.syncSealKeys(ctx, st)
	d.accept()
	d.updates++
	d.metrics.policy.WithLabelValues("applied").Inc()
	d.log.Info("policy applied", "policy", d.cfg.Policy, "vms", len(st.VMs()), "mappings", st.MappingCount())
	return true, nil
}

// rejection is a policy file the daemon refused.
type rejection struct {
	err  error
	at   time.Time
	hash [32]byte // of the file refused (zero if it could not be read)
	// result is "rejected" (the file does not load, or this host cannot
	// run it: reloading the same file reports the same error without
	// reading it again) or "failed" (the switch failed to apply it: a
	// reload tries again).
	result string
}

// reject records that the policy file (or the store's state) was refused,
// with the result the metrics count it under, and returns err. The same
// refusal again (the watcher looking at a file that is not there, say) is
// counted and logged once.
func (d *Agent) reject(err error, hash [32]byte, result string) error {
	if r := d.rejection; r != nil && r.hash == hash && r.result == result && r.err.Error() == err.Error() && result == "rejected" {
		return err
	}
	d.metrics.policy.WithLabelValues(result).Inc()
	if result == "rejected" {
		d.rejected++
		d.logPolicyError(err)
	} else {
		d.log.Error("policy update failed; the running state is kept", "policy", d.source(), "err", err)
	}
	d.rejection = &rejection{err: err, at: time.Now(), hash: hash, result: result}
	d.lastRejected = d.rejection.at
	return err
}

// accept records that the policy file (or the store's state) is the
// running policy.
func (d *Agent) accept() {
	if d.rejection != nil {
		d.log.Info("the policy is no longer rejected", "policy", d.source())
	}
	d.rejection = nil
}

// loadPolicy loads a policy file, streaming, and returns the SHA-256 of
// what it read.
func loadPolicy(path string) (*policy.State, [32]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, [32]byte{}, fmt.Errorf("policy: %w", err)
	}
	defer f.Close()
	hr := &hashingReader{f: f, h: sha256.New()}
	st, err := policy.LoadReader(path, hr)
	var sum [32]byte
	hr.h.Sum(sum[:0])
	return st, sum, err
}

// hashingReader hashes what is read from a file; seeking back to the
// start (the loader reads some documents twice) starts the hash again.
type hashingReader struct {
	f *os.File
	h hash.Hash
}

func (r *hashingReader) Read(p []byte) (int, error) {
	n, err := r.f.Read(p)
	r.h.Write(p[:n])
	return n, err
}

func (r *hashingReader) Seek(off int64, whence int) (int64, error) {
	if off != 0 || whence != io.SeekStart {
		return 0, errors.New("hashingReader: only seeks back to the start")
	}
	r.h.Reset()
	return r.f.Seek(0, io.SeekStart)
}

func hashFile(path string) ([32]byte, error) {
	var sum [32]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, err
	}
	h.Sum(sum[:0])
	return sum, nil
}

// PolicyRejection describes the policy file while the daemon refuses it:
// the error (file, line, field and message of the first problem when the
// file did not load) and when. ok is false while the file on disk is the
// running policy's, or has not been looked at since it changed.
func (d *Agent) PolicyRejection() (r control.PolicyRejection, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.rejection == nil {
		return r, false
	}
	return rejectionInfo(d.source(), d.rejection), true
}

func rejectionInfo(file string, rj *rejection) control.PolicyRejection {
	r := control.PolicyRejection{File: file, Error: rj.err.Error(), At: rj.at, Problems: 1}
	var l policy.ErrorList
	if errors.As(rj.err, &l) && len(l) > 0 {
		r.File, r.Line, r.Field, r.Msg, r.Problems = l[0].File, l[0].Line, l[0].Field, l[0].Msg, len(l)
	} else {
		r.Msg = rj.err.Error()
	}
	return r
}

func (d *Agent) logPolicyError(err error) {
	var l policy.ErrorList
	if errors.As(err, &l) {
		for _, e := range l {
			d.log.Error("policy rejected; the running state is kept", "file", e.File, "line", e.Line, "field", e.Field, "problem", e.Msg)
		}
		return
	}
	d.log.Error("policy rejected; the running state is kept", "err", err)
}

// watch polls the policy file (no inotify dependency, and it works on any
// file system): a change is checked first and applied only when it loads.
func (d *Agent) watch(ctx context.Context) {
	every(ctx, d.cfg.WatchInterval, func() {
		d.mu.Lock()
		changed, _ := d.reloadLocked(ctx, false)
		d.mu.Unlock()
		if changed {
			releaseMemory()
		}
	})
}

// every calls f every interval until ctx is done.
func every(ctx context.Context, interval time.Duration, f func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// runAndClose runs a started daemon until ctx is done, closes it, and
// returns Main's exit code: 1 if running or closing failed (said on
// stderr), 0 otherwise.
func runAndClose(ctx context.Context, run func(context.Context) error, release func() error, stderr io.Writer) int {
	err := run(ctx)
	if cerr := release(); err == nil {
		err = cerr
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(stderr, "vswitchd:", err)
		return 1
	}
	return 0
}

// ActivateShadow makes vm's shadow location live (see
// vswitch.Switch.ActivateShadow) and records the activation in the running
// state. The policy file should record it too: a later change of the file
// that does not is a rollback.
func (d *Agent) ActivateShadow(ctx context.Context, vm string) error {
	if d.cfg.Store != "" {
		return d.errFromStore("activate")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	sh, ok := d.state.Shadow(vm)
	if !ok {
		return fmt.Errorf("VM %q has no shadow location in the policy", vm)
	}
	if err := d.sw.ActivateShadow(ctx, vm); err != nil {
		return err
	}
	st, err := d.state.Activate(vm, sh.Generation)
	if err != nil {
		return err
	}
	d.state = st
	d.log.Info("shadow activated", "vm", vm, "host", sh.Host, "generation", sh.Generation)
	return nil
}

// CheckPolicy loads the configuration's policy and checks it as New would,
// without opening anything (vswitchd -check).
//
// With a store, the store's current state is loaded and checked.
func CheckPolicy(cfg *Config) error {
	d := &Agent{cfg: cfg, plan: planPorts(cfg), log: slog.New(slog.DiscardHandler)}
	if cfg.Store != "" {
		s, snap, err := openStore(context.Background(), cfg)
		if err != nil {
			return err
		}
		defer s.Close()
		return d.checkPolicy(snap.State)
	}
	st, err := policy.LoadFile(cfg.Policy)
	if err != nil {
		return err
	}
	return d.checkPolicy(st)
}

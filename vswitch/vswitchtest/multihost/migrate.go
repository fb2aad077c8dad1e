package multihost

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/nicpath/nicpath/store/migrate"
)

// Result is what the streaming VM saw during one migration.
//
//   - Sent: stream packets sent, from the start of the migration until Tail
//     after the last host reported the activation.
//   - Delivered: packets that reached the migrating VM where it was at the
//     moment of delivery (its old host before the move, its new host after),
//     once each.
//   - Lost: Sent − Delivered.
//   - Stale: of the lost, those delivered to the old host's vport after the
//     VM had left but before that host applied the activation (the VM is
//     not there any more, yet the host did as its state said).
//   - Misdelivered: packets delivered to a wrong place after activation: to
//     the old host's vport after that host applied the activation, to the
//     new host's vport before the VM moved there, to any other VM, or twice.
//   - Downtime: the gap in delivery across the move: from the last packet
//     the VM received on its old host to the first it received on its new
//     one (so it includes one ordinary interval between packets).
//   - MaxGap: the longest gap between two deliveries over the whole run,
//     and SenderStall the longest gap between two sends: the bed's own
//     jitter (the sender's goroutine shares the machine's cores with the
//     followers and the store), which bounds how precise Downtime is.
type Result struct {
	Sent, Delivered, Lost, Stale, Misdelivered int
	Downtime, MaxGap, SenderStall              time.Duration
	Interval                                   time.Duration
	// LostRun is the longest run of consecutive sequence numbers that never
	// arrived: LostRun × Interval is the downtime a constant-rate sender
	// would see, free of the bed's scheduling jitter.
	LostRun int
	// Wrong counts the misdelivered packets by kind.
	Wrong     map[string]int
	Migration migrate.Migration
}

func (r *Result) wrong(why string) {
	r.Misdelivered++
	if r.Wrong == nil {
		r.Wrong = map[string]int{}
	}
	r.Wrong[why]++
}

func (r Result) String() string {
	return fmt.Sprintf("sent %d delivered %d lost %d (stale %d, longest run %d) misdelivered %d %v downtime %v (max gap %v, sender stall %v, interval %v; install %v, activate %v, lagging %v)",
		r.Sent, r.Delivered, r.Lost, r.Stale, r.LostRun, r.Misdelivered, r.Wrong, r.Downtime, r.MaxGap, r.SenderStall, r.Interval,
		r.Migration.Install, r.Migration.Activate, r.Migration.Lagging)
}

// MigrateOptions say what to migrate and how to stream.
type MigrateOptions struct {
	VM     string // the migrating VM
	From   string // its host now
	To     string // its new host
	Sender string // the streaming VM
	SendOn string // the sender's host
	// Interval between stream packets; default 50µs (20k packets/s).
	Interval time.Duration
	// Warmup packets before the migration starts, which must all arrive (so
	// that flows are on the NICs when it starts); default 50.
	Warmup int
	// Tail: how long the stream goes on after the migration returned.
	// Default 20ms.
	Tail    time.Duration
	Manager migrate.Options
}

// defaults fills the options a bed leaves to its own defaults.
func (o *MigrateOptions) defaults(interval time.Duration, warmup int, tail time.Duration) {
	o.Interval = cmp.Or(max(o.Interval, 0), interval)
	o.Warmup = cmp.Or(max(o.Warmup, 0), warmup)
	o.Tail = cmp.Or(max(o.Tail, 0), tail)
}

// Migrate streams from the sender to the VM while mgr migrates it, and says
// what the stream saw.
func (fb *Fabric) Migrate(ctx context.Context, mgr *migrate.Manager, o MigrateOptions) (Result, error) {
	o.defaults(50*time.Microsecond, 50, 20*time.Millisecond)
	src, from, to := fb.byNm[o.SendOn], fb.byNm[o.From], fb.byNm[o.To]
	if src == nil || from == nil || to == nil {
		return Result{}, fmt.Errorf("unknown host among %s, %s, %s", o.SendOn, o.From, o.To)
	}
	res := Result{Interval: o.Interval}
	// The generation the manager gives the new location (store/migrate: the
	// VM's own plus one).
	cur := from.Follower.Applied().State
	if cur == nil {
		return res, fmt.Errorf("%s has applied no state", from.Name)
	}
	vm, ok := cur.VM(o.VM)
	if !ok {
		return res, fmt.Errorf("no VM %q", o.VM)
	}
	newGen := max(vm.Generation, 1) + 1
	var seq uint64
	send := func() ([]Delivery, error) {
		seq++
		fr, err := fb.StreamFrame(o.Sender, o.VM, seq)
		if err != nil {
			return nil, err
		}
		return fb.Send(src, o.Sender, fr)
	}
	for range o.Warmup {
		ds, err := send()
		if err != nil {
			return res, err
		}
		if len(ds) != 1 || ds[0].Host != from || ds[0].VM != o.VM {
			return res, fmt.Errorf("the stream does not reach %s on %s before the migration (packet %d landed %d times)", o.VM, o.From, seq, len(ds))
		}
	}

	// The VM's location as the hypervisor sees it: the old host until the
	// manager moves it, just before the activation record.
	var mu sync.Mutex
	var moved time.Time
	o.Manager.BeforeActivate = chainBefore(o.Manager.BeforeActivate, func() {
		mu.Lock()
		moved = time.Now()
		mu.Unlock()
	})
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mig *background
	// The migration starts once the stream is flowing in the loop below
	// (migrationStart packets in), so that there is a delivery at the old
	// location right before it however the goroutines are scheduled.
	const migrationStart = 10

	t := newTally(seq + 1)
	var lastSend time.Time
	var stopAt time.Time
	next := time.Now()
	for {
		now := time.Now()
		if mig == nil && res.Sent >= migrationStart {
			mig = startMigration(mctx, mgr, o)
		}
		if mig != nil && stopAt.IsZero() && mig.poll(&res) {
			stopAt = now.Add(o.Tail)
		}
		// Stop Tail after the migration, once the stream has been seen at
		// the new location for a while (a descheduled sender may need
		// longer than Tail for that), or 10s after the migration at most.
		if !stopAt.IsZero() && now.After(stopAt) && (t.newCount >= o.Warmup || now.After(stopAt.Add(10*time.Second))) {
			break
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		for time.Now().Before(next) {
			runtime.Gosched()
		}
		// A sender that fell behind (descheduled) does not catch up with a
		// burst: the gap stays visible, as it would to a real receiver.
		next = next.Add(o.Interval)
		if now := time.Now(); next.Before(now) {
			next = now
		}
		t0 := time.Now()
		if !lastSend.IsZero() && t0.Sub(lastSend) > res.SenderStall {
			res.SenderStall = t0.Sub(lastSend)
		}
		lastSend = t0
		ds, err := send()
		if err != nil {
			return res, err
		}
		res.Sent++
		at := time.Now()
		mu.Lock()
		mv := moved
		mu.Unlock()
		for _, d := range ds {
			s, ok := streamSeq(d.Frame)
			switch {
			case d.VM != o.VM || !ok:
				res.wrong("another VM or no host") // another VM, or an uplink toward no host
			// The send carries the packet to the end of its walk, so it was
			// delivered at some moment between t0 and at: judge the old
			// host by t0, the benefit of the doubt going to the host (a
			// packet sent before the move may land after it; one sent after
			// the old host applied the activation has no excuse).
			case d.Host == from && (mv.IsZero() || t0.Before(mv)):
				ok = true
			case d.Host == from:
				if fromActivated(from, newGen, t0) {
					res.wrong("old host after its activation")
				} else {
					res.Stale++
				}
				ok = false
			case d.Host == to && !mv.IsZero():
				ok = true
			default:
				res.wrong("new host before the move")
				ok = false
			}
			if ok {
				t.deliver(&res, s, at, d.Host == from)
			}
		}
	}
	if err := t.finish(&res, seq); err != nil {
		return res, err
	}
	if mig.err != nil {
		return res, mig.err
	}
	if moved.IsZero() {
		return res, errors.New("the VM never moved")
	}
	return res, nil
}

// background is a migration running on its own goroutine while the stream
// flows.
type background struct {
	done     chan struct{}
	m        migrate.Migration
	err      error
	finished bool
}

func startMigration(ctx context.Context, mgr *migrate.Manager, o MigrateOptions) *background {
	g := &background{done: make(chan struct{})}
	go func() {
		g.m, g.err = mgr.Migrate(ctx, o.VM, o.To, o.Manager)
		close(g.done)
	}()
	return g
}

// poll reports whether the migration has returned (once it has, its
// outcome is in res.Migration and g.err).
func (g *background) poll(res *Result) bool {
	if g.finished {
		return true
	}
	select {
	case <-g.done:
		g.finished, res.Migration = true, g.m
	default:
	}
	return g.finished
}

// tally counts the packets that reached the VM where it was, in the order
// they landed.
type tally struct {
	start                   uint64 // the first sequence number of the run
	got                     map[uint64]bool
	last, lastOld, firstNew time.Time
	newCount                int
}

func newTally(start uint64) *tally { return &tally{start: start, got: map[uint64]bool{}} }

// deliver counts packet seq, landed at at on the VM's old location (old)
// or its new one; a packet seen before is misdelivered.
func (t *tally) deliver(res *Result, seq uint64, at time.Time, old bool) {
	if t.got[seq] {
		res.wrong("twice")
		return
	}
	t.got[seq] = true
	res.Delivered++
	if !t.last.IsZero() && at.Sub(t.last) > res.MaxGap {
		res.MaxGap = at.Sub(t.last)
	}
	t.last = at
	if old {
		t.lastOld = at
		return
	}
	t.newCount++
	if t.firstNew.IsZero() {
		t.firstNew = at
	}
}

// finish computes Lost, LostRun and Downtime once the stream ended at
// sequence number end.
func (t *tally) finish(res *Result, end uint64) error {
	res.Lost = res.Sent - res.Delivered
	run := 0
	for q := t.start; q <= end; q++ {
		if t.got[q] {
			run = 0
			continue
		}
		run++
		res.LostRun = max(res.LostRun, run)
	}
	if t.lastOld.IsZero() || t.firstNew.IsZero() {
		return fmt.Errorf("the stream never reached the VM at its new location: %v", res)
	}
	res.Downtime = t.firstNew.Sub(t.lastOld)
	return nil
}

// fromActivated reports whether h applied a state with generation gen live
// before at.
func fromActivated(h *Host, gen uint64, at time.Time) bool {
	t, ok := h.ActiveSince(gen)
	return ok && t.Before(at)
}

func chainBefore(a, b func()) func() {
	return func() {
		b()
		if a != nil {
			a()
		}
	}
}

package conformance

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nicpath/nicpath/hal"
)

// env is one case's NIC, harness and the ports it plays with.
type env struct {
	t    T
	tg   *Target
	nic  hal.NIC
	h    Harness
	caps hal.Capabilities

	ports   []hal.Port
	vports  []hal.Port
	uplinks []hal.Port
	// in is where the suite's VM traffic enters (a vport when there is one);
	// out is where forwarded traffic leaves (an uplink when there is one,
	// else another port); other is a third port when there is one.
	in, out hal.Port
	other   *hal.Port

	nextID   hal.RuleID
	closed   bool // the case closed the NIC itself
	released bool
}

// open opens a fresh NIC for the case and closes it when the case ends.
func open(t T, tg *Target) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	nic, h, err := tg.Open(ctx)
	if err != nil {
		t.Fatalf("opening %s: %v", tg.Name, err)
	}
	e := &env{t: t, tg: tg, nic: nic, h: h, caps: nic.Capabilities(), nextID: 1}
	if r, ok := t.(*record); ok {
		r.mu.Lock()
		r.notes = e.caps.Notes
		r.mu.Unlock()
	}
	t.Cleanup(e.release)
	e.ports = nic.Ports()
	for _, p := range e.ports {
		switch p.Kind {
		case hal.PortVPort:
			e.vports = append(e.vports, p)
		case hal.PortUplink:
			e.uplinks = append(e.uplinks, p)
		}
	}
	if len(e.ports) < 2 {
		t.Fatalf("the NIC has %d ports; the suite needs at least two", len(e.ports))
	}
	e.in, e.out = e.ports[0], e.ports[1]
	if len(e.vports) > 0 {
		e.in = e.vports[0]
		for _, p := range e.ports {
			if p.ID != e.in.ID {
				e.out = p
				break
			}
		}
		if len(e.uplinks) > 0 {
			e.out = e.uplinks[0]
		}
	}
	for i := range e.ports {
		if e.ports[i].ID != e.in.ID && e.ports[i].ID != e.out.ID {
			e.other = &e.ports[i]
			break
		}
	}
	return e
}

// release closes the NIC (unless the case did) and the harness, once. A
// case that opens a NIC only to look at it releases it before opening
// another: device NICs cannot be opened twice on the same interfaces.
func (e *env) release() {
	if e.released {
		return
	}
	e.released = true
	if !e.closed {
		if err := e.nic.Close(); err != nil {
			e.t.Errorf("Close: %v", err)
		}
	}
	if err := e.h.Close(); err != nil {
		e.t.Errorf("closing the harness: %v", err)
	}
}

// vport returns the first vport, skipping the case when there is none.
func (e *env) vport() hal.Port {
	e.t.Helper()
	if len(e.vports) == 0 {
		need(e.t, needVPort, "the NIC has no vport")
	}
	return e.vports[0]
}

func (e *env) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(e.t.Context(), e.tg.timeout()+10*time.Second)
}

// rule builds a rule with a fresh ID.
func (e *env) rule(prio uint16, m hal.Match, actions ...hal.Action) hal.Rule {
	id := e.nextID
	e.nextID++
	return hal.Rule{ID: id, Priority: prio, Match: m, Actions: actions, Cookie: hal.Cookie(0xc0f0 + id)}
}

// apply runs a batch and returns its error and results.
func (e *env) apply(ops ...hal.Op) ([]hal.OpResult, error) {
	ctx, cancel := e.ctx()
	defer cancel()
	res := make([]hal.OpResult, len(ops))
	err := e.nic.Apply(ctx, ops, res)
	return res, err
}

// add installs rules, failing the case if any does not land.
func (e *env) add(rules ...hal.Rule) {
	e.t.Helper()
	ops := make([]hal.Op, len(rules))
	for i, r := range rules {
		if err := e.nic.Validate(&r); err != nil {
			e.t.Fatalf("%s", e.refusal(&r, err))
		}
		ops[i] = hal.AddOp(r)
	}
	for start := 0; start < len(ops); {
		end := len(ops)
		if mb := e.caps.MaxBatch; mb > 0 && end-start > mb {
			end = start + mb
		}
		res, err := e.apply(ops[start:end]...)
		if err != nil {
			for i, r := range res {
				if r.Err != nil {
					e.t.Errorf("adding %v: %v", &ops[start+i].Rule, r.Err)
				}
			}
			e.t.Fatalf("Apply: %v", err)
		}
		start = end
	}
}

// refusal words a Validate refusal of a rule the case needs. The suite asks
// only for rules within what the NIC advertises (a case that needs more
// skips first, see need), so a refusal fails the case: a variant of an
// advertised capability (IPv6 outer headers, Geneve options, a TTL) is part
// of it.
func (e *env) refusal(r *hal.Rule, err error) string {
	if missing := missingFor(&e.caps, r); len(missing) > 0 {
		return fmt.Sprintf("Validate(%v): %v (suite bug: the rule needs %v, which the NIC does not advertise)", r, err, missing)
	}
	return fmt.Sprintf("Validate refuses %v, which is within the capabilities the NIC advertises: %v", r, err)
}

// refused checks that Validate refuses r with ErrNotSupported.
func (e *env) refused(r hal.Rule, what string) {
	e.t.Helper()
	err := e.nic.Validate(&r)
	if err == nil {
		e.t.Errorf("%s is not advertised, but Validate accepts %v", what, &r)
		return
	}
	if !errors.Is(err, hal.ErrNotSupported) {
		e.t.Errorf("%s is not advertised; Validate refuses %v with %v, which is not ErrNotSupported", what, &r, err)
		return
	}
	var ue *hal.UnsupportedError
	if !errors.As(err, &ue) || ue.Field == "" {
		e.t.Errorf("Validate refusal %v does not name the field (want an *hal.UnsupportedError)", err)
	}
	e.t.Logf("%s refused as expected: %v", what, err)
}

func (e *env) send(port hal.Port, frames ...[]byte) {
	e.t.Helper()
	if err := e.h.Send(port.ID, frames...); err != nil {
		e.t.Fatalf("sending %d frames into port %d (%s): %v", len(frames), port.ID, port.Name, err)
	}
}

// recv collects the suite's frames emitted on port until n arrived or the
// wait ran out.
func (e *env) recv(port hal.Port, n int, wait time.Duration) [][]byte {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), wait)
	defer cancel()
	var got [][]byte
	// At least one Recv, even when the wait ran out before it: a
	// listener scheduled late on a loaded machine still takes the frames
	// already there (Harness.Recv returns what it has when ctx is
	// done).
	for first := true; len(got) < n && (first || ctx.Err() == nil); first = false {
		// Ask for a bounded number at a time: a harness may size its
		// buffers by max.
		fs, err := e.h.Recv(ctx, port.ID, min(n-len(got), 64))
		if err != nil && ctx.Err() == nil {
			e.t.Fatalf("receiving on port %d: %v", port.ID, err)
		}
		for _, f := range fs {
			if ours(f) {
				got = append(got, f)
			}
		}
	}
	return got
}

// expect waits for exactly n frames on port and returns them; a frame more,
// arriving within the quiet time, is an error too.
func (e *env) expect(port hal.Port, n int) [][]byte {
	e.t.Helper()
	got := e.recv(port, n, e.tg.timeout())
	if len(got) < n {
		e.t.Fatalf("port %d (%s): got %d frames, want %d", port.ID, port.Name, len(got), n)
	}
	if extra := e.recv(port, 1, e.tg.quiet()); len(extra) > 0 {
		e.t.Errorf("port %d (%s): a frame more than the %d expected: % x", port.ID, port.Name, n, extra[0])
	}
	return got
}

// expectOne waits for one frame on port and decodes it.
func (e *env) expectOne(port hal.Port) *decoded {
	e.t.Helper()
	f := e.expect(port, 1)[0]
	d, err := decode(f)
	if err != nil {
		e.t.Fatalf("port %d: %v: % x", port.ID, err, f)
	}
	if bad := checkChecksums(d); len(bad) > 0 {
		for _, b := range bad {
			e.t.Errorf("port %d: %s", port.ID, b)
		}
	}
	return d
}

// silent checks that none of the suite's frames leaves any of ports.
func (e *env) silent(ports ...hal.Port) {
	e.t.Helper()
	if len(ports) == 0 {
		ports = e.ports
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var leaks []string
	for _, p := range ports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(e.t.Context(), e.tg.quiet())
			defer cancel()
			for ctx.Err() == nil {
				fs, _ := e.h.Recv(ctx, p.ID, 16)
				for _, f := range fs {
					if ours(f) {
						mu.Lock()
						leaks = append(leaks, fmt.Sprintf("port %d (%s) emitted a frame it must not: % x", p.ID, p.Name, f))
						mu.Unlock()
					}
				}
			}
		}()
	}
	wg.Wait()
	for _, l := range leaks {
		e.t.Errorf("%s", l)
	}
}

// exceptions reads the suite's exception packets until n arrived or the
// wait ran out.
func (e *env) exceptions(n int, wait time.Duration) []hal.Exception {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), wait)
	defer cancel()
	var got []hal.Exception
	batch := make([]hal.Exception, 16)
	for len(got) < n && ctx.Err() == nil {
		for i := range batch {
			batch[i] = hal.Exception{Buf: make([]byte, 2048)}
		}
		k, err := e.nic.ReadExceptions(ctx, batch)
		if err != nil && ctx.Err() == nil {
			e.t.Fatalf("ReadExceptions: %v", err)
		}
		for _, x := range batch[:k] {
			if ours(x.Frame()) {
				got = append(got, x)
			}
		}
	}
	return got
}

// expectExceptions waits for exactly n exception packets.
func (e *env) expectExceptions(n int) []hal.Exception {
	e.t.Helper()
	got := e.exceptions(n, e.tg.timeout())
	if len(got) < n {
		e.t.Fatalf("got %d packets on the exception path, want %d", len(got), n)
	}
	if extra := e.exceptions(1, e.tg.quiet()); len(extra) > 0 {
		e.t.Errorf("an exception packet more than the %d expected: reason %v in-port %d", n, extra[0].Reason, extra[0].InPort)
	}
	return got
}

func (e *env) stats() hal.Stats {
	e.t.Helper()
	ctx, cancel := e.ctx()
	defer cancel()
	s, err := e.nic.Stats(ctx)
	if err != nil {
		e.t.Fatalf("Stats: %v", err)
	}
	return s
}

func (e *env) ruleCounters(ids ...hal.RuleID) []hal.Counters {
	e.t.Helper()
	ctx, cancel := e.ctx()
	defer cancel()
	out := make([]hal.Counters, len(ids))
	if err := e.nic.RuleCounters(ctx, ids, out); err != nil {
		e.t.Fatalf("RuleCounters: %v", err)
	}
	return out
}

func (e *env) dump() map[hal.RuleID]hal.RuleInfo {
	e.t.Helper()
	ctx, cancel := e.ctx()
	defer cancel()
	m := map[hal.RuleID]hal.RuleInfo{}
	err := e.nic.Dump(ctx, func(ri *hal.RuleInfo) error {
		if _, dup := m[ri.Rule.ID]; dup {
			e.t.Errorf("Dump reports rule %d twice", ri.Rule.ID)
		}
		m[ri.Rule.ID] = *ri
		return nil
	})
	if err != nil {
		e.t.Fatalf("Dump: %v", err)
	}
	return m
}

func (e *env) activate(scope hal.Scope, gen hal.Generation) {
	e.t.Helper()
	ctx, cancel := e.ctx()
	defer cancel()
	if err := e.nic.Activate(ctx, scope, gen); err != nil {
		e.t.Fatalf("Activate(%d, %d): %v", scope, gen, err)
	}
}

// l2len is what the NIC's byte counters count of a frame as it matched.
func (e *env) counted(frame []byte) uint64 {
	if e.caps.Counters.BytesIncludeL2 {
		return uint64(len(frame))
	}
	off := 14
	if len(frame) >= 16 && (uint16(frame[12])<<8|uint16(frame[13])) == hal.EtherTypeVLAN {
		off = 18
	}
	return uint64(len(frame) - off)
}

package conformance

import (
	"context"
	"fmt"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"
)

// T is what a case reports to. It is the subset of *testing.T the cases use,
// so that one body of case code serves both go test (Run) and the runner
// binary (RunSuite). Fatalf and Skipf end the calling case's goroutine, as
// they do in package testing, so they must be called from it.
type T interface {
	Name() string
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Failed() bool
	Helper()
	// Context is cancelled when the case times out or the run is cancelled.
	Context() context.Context
	// Cleanup registers fn to run, last registered first, after the case
	// and its subcases end.
	Cleanup(fn func())
	// Run runs f as a subcase named name and reports whether it passed or
	// was skipped.
	Run(name string, f func(T)) bool
}

// record is the T the suite runs every case on. It records instead of
// printing, so that results can be written as reports, replayed into a
// *testing.T, or turned into documented differences.
type record struct {
	name  string
	ctx   context.Context
	start time.Time

	mu       sync.Mutex
	dur      time.Duration
	logs     []string
	failures []string
	failed   bool
	skipped  bool
	skip     string
	missing  string // the capability a skip names (see need)
	// notes are the Capabilities.Notes of the NIC the case opened (see
	// open); subcases inherit them, and need quotes them.
	notes    []string
	children []*record
	cleanups []func()

	// done, when set, is called when the record and its subcases have
	// ended (for progress lines); subcases inherit it.
	done func(*record)
	// filter selects subcases as go test's -run does: element i of the
	// pattern, split at '/', must match the name of a subcase i+1 levels
	// down. Subcases deeper than the pattern all run.
	filter []*regexp.Regexp
	depth  int
}

func newRecord(ctx context.Context, name string) *record {
	return &record{name: name, ctx: ctx}
}

func (r *record) Name() string             { return r.name }
func (r *record) Helper()                  {}
func (r *record) Context() context.Context { return r.ctx }

func (r *record) Logf(format string, args ...any) {
	r.mu.Lock()
	r.logs = append(r.logs, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *record) Errorf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.mu.Lock()
	r.failed = true
	r.failures = append(r.failures, msg)
	r.logs = append(r.logs, "FAIL: "+msg)
	r.mu.Unlock()
}

func (r *record) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}

func (r *record) Skipf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.mu.Lock()
	r.skipped = true
	r.skip = msg
	r.logs = append(r.logs, "SKIP: "+msg)
	r.mu.Unlock()
	runtime.Goexit()
}

func (r *record) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failed {
		return true
	}
	for _, c := range r.children {
		if c.Failed() {
			return true
		}
	}
	return false
}

func (r *record) Cleanup(fn func()) {
	r.mu.Lock()
	r.cleanups = append(r.cleanups, fn)
	r.mu.Unlock()
}

func (r *record) Run(name string, f func(T)) bool {
	name = sanitize(name)
	if d := r.depth + 1; d < len(r.filter) && !r.filter[d].MatchString(name) {
		return true
	}
	c := newRecord(r.ctx, r.name+"/"+name)
	c.done, c.filter, c.depth = r.done, r.filter, r.depth+1
	r.mu.Lock()
	c.notes = r.notes
	r.children = append(r.children, c)
	r.mu.Unlock()
	c.exec(func(t *record) { f(t) }, 0)
	return !c.Failed()
}

// exec runs f on r in its own goroutine, so that Fatalf and Skipf can end
// it, turns a panic into a failure, runs the cleanups, and waits at most
// limit (0: no limit). A case that overruns is failed and abandoned: its
// goroutine cannot be stopped, but the run goes on.
func (r *record) exec(f func(*record), limit time.Duration) {
	r.start = time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer r.runCleanups()
		defer func() {
			if p := recover(); p != nil {
				r.Errorf("panic: %v\n%s", p, debug.Stack())
			}
		}()
		f(r)
	}()
	if limit <= 0 {
		<-done
	} else {
		timer := time.NewTimer(limit)
		select {
		case <-done:
			timer.Stop()
		case <-timer.C:
			r.Errorf("case did not end within %v; abandoned", limit)
		}
	}
	r.mu.Lock()
	r.dur = time.Since(r.start)
	r.mu.Unlock()
	if r.done != nil {
		r.done(r)
	}
}

func (r *record) runCleanups() {
	for {
		r.mu.Lock()
		n := len(r.cleanups)
		if n == 0 {
			r.mu.Unlock()
			return
		}
		fn := r.cleanups[n-1]
		r.cleanups = r.cleanups[:n-1]
		r.mu.Unlock()
		func() {
			defer func() {
				if p := recover(); p != nil {
					r.Errorf("panic in cleanup: %v", p)
				}
			}()
			fn()
		}()
	}
}

// sanitize makes a subcase name a single path element, as package testing
// does with spaces.
func sanitize(name string) string {
	return strings.NewReplacer(" ", "_", "/", "_").Replace(name)
}

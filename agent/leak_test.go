package agent

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/nicpath/nicpath/control"
)

// A daemon that ran, served control connections and shut down leaves no
// goroutine behind, and its control socket is gone.
func TestShutdownLeavesNothing(t *testing.T) {
	before := runtime.NumGoroutine()
	dir := t.TempDir()
	r := startDaemon(t, hostAConfig(t, dir), nil)
	r.send(t, udpFrame(4000))
	for i := 0; i < 3; i++ {
		var s control.Show
		if err := call(t, r, "show", nil, &s); err != nil {
			t.Fatal(err)
		}
	}
	// A client that connects and says nothing must not hold shutdown up.
	idle := &control.Client{Path: r.d.cfg.Control}
	go idle.Call(context.Background(), "stats", nil, nil)
	r.stop()
	deadline := time.Now().Add(30 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines before, %d after shutdown:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
	c := &control.Client{Path: r.d.cfg.Control, Timeout: time.Second}
	if err := c.Call(context.Background(), "show", nil, nil); err == nil {
		t.Fatal("the control socket still answers after shutdown")
	}
}

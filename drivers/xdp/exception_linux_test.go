//go:build linux

package xdp

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// TestReadExceptionsWaits checks how a read of an idle NIC's exceptions
// ends: when its ctx ends (not before, and not only at a periodic
// wake-up), when a record comes (also with a ctx that never ends), and not
// at a flush an earlier call's ctx left behind.
func TestReadExceptionsWaits(t *testing.T) {
	n := openVirtual(t, Config{})
	batch := make([]hal.Exception, 4)
	for i := range batch {
		batch[i].Buf = make([]byte, 2048)
	}

	// Cancelled while it waits: it returns the ctx's error, after the
	// cancel and well before any bound.
	ctx, cancel := context.WithCancel(context.Background())
	start := time.Now()
	time.AfterFunc(200*time.Millisecond, cancel)
	k, err := n.ReadExceptions(ctx, batch)
	if k != 0 || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled read: %d, %v", k, err)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 10*time.Second {
		t.Fatalf("cancelled read returned after %v, want 200ms to 10s", d)
	}

	// A flush left over from an earlier call does not end the next one:
	// it waits for its own deadline.
	if err := n.reader.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start = time.Now()
	k, err = n.ReadExceptions(ctx, batch)
	if k != 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read after a stale flush: %d, %v", k, err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("read after a stale flush returned after %v, before its deadline", d)
	}

	// A ctx that never ends: the read waits for the record a miss hands
	// to the host.
	f := wire.Build(udp4(ca1, ca2, 1000, 2000))
	ran := make(chan RunResult, 1)
	time.AfterFunc(100*time.Millisecond, func() {
		r, err := n.Run(pVM1, f)
		if err != nil {
			t.Error(err)
		}
		ran <- r
	})
	k, err = n.ReadExceptions(context.Background(), batch)
	if r := <-ran; r.Verdict != VerdictToHost || r.Reason != hal.ReasonMiss {
		t.Fatalf("run: %+v", r)
	}
	if err != nil || k != 1 || batch[0].Reason != hal.ReasonMiss || batch[0].InPort != pVM1 {
		t.Fatalf("read with a ctx that never ends: %d, %v (reason %v, port %d)", k, err, batch[0].Reason, batch[0].InPort)
	}
}

package softnic

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
)

// ready reports whether p's wake-up has a value waiting.
func ready(p *Port) bool {
	select {
	case <-p.Ready():
		return true
	default:
		return false
	}
}

// TestPortReady: a port's wake-up fires when frames land in its empty
// transmit ring (through the datapath or Inject), not for every frame while
// it holds some, and again once a reader emptied it.
func TestPortReady(t *testing.T) {
	n := newNIC(t)
	dst := paRem
	mustApply(t, n, hal.AddOp(dstRule(1, caRem, vxlanTo(dst, 7))))
	up := mustPort(t, n, pUplink)
	if ready(up) {
		t.Fatal("ready before any frame")
	}
	send(t, n, pVM1, udp4(caVM1, caRem, 1000, 53, 10), udp4(caVM1, caRem, 1000, 53, 10))
	if !ready(up) {
		t.Fatal("no wake-up for frames in an empty ring")
	}
	send(t, n, pVM1, udp4(caVM1, caRem, 1000, 53, 10))
	if ready(up) {
		t.Fatal("a wake-up for frames added to a ring that was not empty")
	}
	if got := len(recvAll(t, n, pUplink)); got != 3 {
		t.Fatalf("%d frames on the uplink, want 3", got)
	}
	send(t, n, pVM1, udp4(caVM1, caRem, 1000, 53, 10))
	if !ready(up) {
		t.Fatal("no wake-up after the ring was emptied")
	}
	recvAll(t, n, pUplink)
	// Inject wakes the same way.
	if err := n.Inject(context.Background(), pUplink, [][]byte{udp4(caVM1, caRem, 1, 2, 10)}); err != nil {
		t.Fatal(err)
	}
	if !ready(up) {
		t.Fatal("no wake-up for an injected frame")
	}
	// A reader blocked on Ready is woken by a frame sent later.
	recvAll(t, n, pUplink)
	got := make(chan struct{})
	go func() {
		<-up.Ready()
		close(got)
	}()
	time.Sleep(10 * time.Millisecond)
	send(t, n, pVM1, udp4(caVM1, caRem, 1000, 53, 10))
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("a waiting reader was not woken")
	}
}

// TestPortOnReady: with an OnReady function the port calls it, on the
// sender's goroutine, where it would have signalled Ready (frames in an
// empty ring, through the datapath or Inject), and Ready stays quiet; nil
// gives Ready back.
func TestPortOnReady(t *testing.T) {
	n := newNIC(t)
	mustApply(t, n, hal.AddOp(dstRule(1, caRem, vxlanTo(paRem, 7))))
	up := mustPort(t, n, pUplink)
	var calls int // called on this goroutine: no synchronisation needed
	up.OnReady(func() { calls++ })
	send(t, n, pVM1, udp4(caVM1, caRem, 1000, 53, 10), udp4(caVM1, caRem, 1000, 53, 10))
	if calls != 1 {
		t.Fatalf("OnReady called %d times for frames in an empty ring, want 1", calls)
	}
	send(t, n, pVM1, udp4(caVM1, caRem, 1000, 53, 10))
	if calls != 1 {
		t.Fatalf("OnReady called %d times after a frame added to a ring that was not empty, want 1", calls)
	}
	if ready(up) {
		t.Fatal("Ready signalled while an OnReady function is set")
	}
	if got := len(recvAll(t, n, pUplink)); got != 3 {
		t.Fatalf("%d frames on the uplink, want 3", got)
	}
	if err := n.Inject(context.Background(), pUplink, [][]byte{udp4(caVM1, caRem, 1, 2, 10)}); err != nil {
		t.Fatal(err)
	}
	if calls != 2 {
		t.Fatalf("OnReady called %d times after an injected frame, want 2", calls)
	}
	recvAll(t, n, pUplink)
	up.OnReady(nil)
	send(t, n, pVM1, udp4(caVM1, caRem, 1000, 53, 10))
	if r := ready(up); calls != 2 || !r {
		t.Fatalf("after OnReady(nil): %d calls (want 2), Ready signalled %v (want true)", calls, r)
	}
}

// copyFrame copies exactly the frame, whatever its length and the
// alignment of either side: the bytes after it in dst stay as they were.
func TestCopyFrame(t *testing.T) {
	src := make([]byte, 300)
	for i := range src {
		src[i] = byte(i*7 + 1)
	}
	for _, n := range []int{0, 1, 63, 64, 65, 100, 114, 127, 128, 129, 200} {
		for _, a := range []int{0, 1, 3, 8} {
			dst := make([]byte, 260)
			for i := range dst {
				dst[i] = 0xee
			}
			f := src[a : a+n]
			copyFrame(dst[a:], f)
			if !bytes.Equal(dst[a:a+n], f) {
				t.Fatalf("length %d, offset %d: frame not copied", n, a)
			}
			for i, c := range dst {
				if (i < a || i >= a+n) && c != 0xee {
					t.Fatalf("length %d, offset %d: byte %d outside the frame changed", n, a, i)
				}
			}
		}
	}
}

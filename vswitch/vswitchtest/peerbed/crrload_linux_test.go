//go:build linux

package peerbed

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// startCRRServer runs the CPS load's server on the loopback address and
// returns its address and a function that stops it and waits for it.
func startCRRServer(t *testing.T) (addr string, stop func() error) {
	t.Helper()
	lfd, sa, err := crrListen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- crrServe(lfd, int(r.Fd())) }()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		w.Close()
		err := <-errc
		r.Close()
		return err
	}
	t.Cleanup(func() { stop() })
	return fmt.Sprintf("127.0.0.1:%d", sa.Port), stop
}

// fakeCRRServer answers each connection with answer (given the request),
// then closes or, with hold, keeps it open until the test ends.
func fakeCRRServer(t *testing.T, answer func(q byte) []byte, hold bool) string {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var q [1]byte
				if _, err := io.ReadFull(c, q[:]); err != nil {
					return
				}
				c.Write(answer(q[0]))
				if hold {
					<-done
				}
			}()
		}
	}()
	return l.Addr().String()
}

func newTestCRRClient(t *testing.T, addr string) *crrClient {
	t.Helper()
	c, err := newCRRClient(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.close)
	return c
}

// TestCRRLoad checks the CPS load against its own server and against
// servers that get the transaction wrong: only a connection that carried
// the request, the right answer and then the server's close counts as
// done; anything else counts as failed, and nothing hangs.
func TestCRRLoad(t *testing.T) {
	t.Run("server", func(t *testing.T) {
		t.Parallel()
		addr, stop := startCRRServer(t)
		c := newTestCRRClient(t, addr)
		if err := c.warm(); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			done, failed, elapsed, err := c.run(crrWorkers, 100*time.Millisecond, -1, -1)
			if err != nil || done == 0 || failed != 0 {
				t.Fatalf("run: %d done, %d failed, %v", done, failed, err)
			}
			if elapsed < 100*time.Millisecond || elapsed > 100*time.Millisecond+crrTimeout {
				t.Fatalf("a 100ms run took %v", elapsed)
			}
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		// The stopped server's socket is closed: the next connect is refused.
		if _, err := net.Dial("tcp4", addr); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial after stop: %v, want connection refused", err)
		}
	})
	for _, tc := range []struct {
		name   string
		answer func(q byte) []byte
		hold   bool
	}{
		{"wrong answer", func(q byte) []byte { return []byte{q} }, false},
		{"no answer", func(q byte) []byte { return nil }, false},
		{"more than the answer", func(q byte) []byte { return []byte{q ^ 0xff, 0} }, false},
		{"no close", func(q byte) []byte { return []byte{q ^ 0xff} }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newTestCRRClient(t, fakeCRRServer(t, tc.answer, tc.hold))
			start := time.Now()
			done, failed, _, err := c.run(2, 10*crrTimeout, -1, 2)
			if err != nil || done != 0 || failed < 2 {
				t.Fatalf("run: %d done, %d failed, %v; want 0 done, 2 failed", done, failed, err)
			}
			if tc.hold {
				// It fails by crrTimeout; warm would take 10 of them.
				if time.Since(start) < crrTimeout {
					t.Fatalf("a transaction without the server's close failed after %v, before crrTimeout", time.Since(start))
				}
				return
			}
			if err := c.warm(); err == nil {
				t.Fatal("warm succeeded against a server that gets the transaction wrong")
			}
		})
	}
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		addr, stop := startCRRServer(t)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		c := newTestCRRClient(t, addr)
		done, failed, _, err := c.run(crrWorkers, 10*crrTimeout, -1, 20)
		if err != nil || done != 0 || failed < 20 {
			t.Fatalf("run: %d done, %d failed, %v; want 0 done, 20 failed", done, failed, err)
		}
	})
	t.Run("server closes the silent", func(t *testing.T) {
		t.Parallel()
		addr, _ := startCRRServer(t)
		conn, err := net.Dial("tcp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		conn.SetReadDeadline(start.Add(2*crrTimeout + 5*time.Second))
		n, err := conn.Read(make([]byte, 1))
		if n != 0 || err != io.EOF {
			t.Fatalf("read from a connection that sent nothing: %d, %v; want the server's close", n, err)
		}
		if time.Since(start) < 2*crrTimeout-100*time.Millisecond {
			t.Fatalf("the server closed a silent connection after %v, before 2×crrTimeout", time.Since(start))
		}
	})
}

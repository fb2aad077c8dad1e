package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// bulkServer serves bulk requests on a loopback listener of the test's own
// namespace (loopback only), through a relay that may flip one byte in
// either direction, as a datapath that cut a frame wrong would.
func bulkServer(t *testing.T, flipUp, flipDown int) (addr string, verdicts func() []string) {
	t.Helper()
	srv, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	relay, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(); relay.Close() })
	var mu sync.Mutex
	var got []string
	go func() {
		for {
			c, err := srv.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				pc := &progressConn{Conn: c, idle: 10 * time.Second}
				r := bufio.NewReader(pc)
				line, _ := r.ReadString('\n')
				size, seed, ok := parseBulk(strings.TrimSpace(line))
				if !ok {
					return
				}
				v := serveBulk(pc, r, "srv", size, seed)
				mu.Lock()
				got = append(got, v)
				mu.Unlock()
			}()
		}
	}()
	go func() {
		for {
			c, err := relay.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp4", srv.Addr().String())
			if err != nil {
				c.Close()
				return
			}
			go func() { copyFlip(s, c, flipUp); s.(*net.TCPConn).CloseWrite() }()
			go func() { copyFlip(c, s, flipDown); c.Close(); s.Close() }()
		}
	}()
	return relay.Addr().String(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
}

// copyFlip copies src to dst, inverting the byte at offset flip (none when
// negative).
func copyFlip(dst io.Writer, src io.Reader, flip int) {
	buf := make([]byte, 32<<10)
	off := 0
	for {
		n, err := src.Read(buf)
		if flip >= off && flip < off+n {
			buf[flip-off] ^= 0xff
		}
		off += n
		if _, werr := dst.Write(buf[:n]); werr != nil || err != nil {
			return
		}
	}
}

// The bulk exchange checks every byte each way: an intact exchange passes,
// and one wrong byte in either direction fails it, named by its offset.
func TestBulkChecksEveryByte(t *testing.T) {
	const size = 1 << 20
	header := len("bulk 1048576 1\n")
	for _, c := range []struct {
		name          string
		up, down      int
		errHas, srvIs string
	}{
		{name: "intact", up: -1, down: -1, srvIs: "bulk 1048576 bytes intact"},
		{name: "corrupt toward the server", up: header + 700_000, down: -1, errHas: "CORRUPT from byte 700000", srvIs: "bulk 1048576 bytes CORRUPT from byte 700000"},
		{name: "corrupt toward the client", up: -1, down: len("srv got bulk 1048576 bytes intact\n") + 123_456, errHas: "answer is CORRUPT from byte 123456", srvIs: "bulk 1048576 bytes intact"},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr, verdicts := bulkServer(t, c.up, c.down)
			var out bytes.Buffer
			err := bulk(addr, size, 1, 5*time.Second, &out)
			if c.errHas == "" && err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			if c.errHas != "" && (err == nil || !strings.Contains(err.Error(), c.errHas)) {
				t.Fatalf("error %v, want one saying %q\n%s", err, c.errHas, out.String())
			}
			if err == nil && !strings.Contains(out.String(), "srv got bulk 1048576 bytes intact; 1048576 bytes back intact") {
				t.Errorf("the client prints %q", out.String())
			}
			deadline := time.Now().Add(30 * time.Second)
			for len(verdicts()) == 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			// A client that found a wrong byte stops reading: the server's
			// sending back may then fail, and its log says so after the
			// verdict.
			v := verdicts()
			if len(v) != 1 || !strings.HasPrefix(v[0], c.srvIs) || (c.errHas == "" && v[0] != c.srvIs) {
				t.Errorf("the server says %q, want %q", v, c.srvIs)
			}
		})
	}
}

// A server that answers before it has read the whole request (here after
// a few bytes, as one whose read failed would) and closes: the client's
// sending then fails (a reset, a broken pipe), and the client reports the
// server's verdict, which says why, not its own write error.
func TestBulkVerdictOverWriteError(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const verdict = "srv got bulk 33554432 bytes: after 4096 of 33554432 bytes: read timeout"
	served := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		// Unread bytes stay queued: the close resets the connection.
		_, err = io.ReadFull(c, make([]byte, 4096))
		if err == nil {
			_, err = io.WriteString(c, verdict+"\n")
		}
		served <- err
	}()
	// More than the two sockets' buffers hold: the client is still
	// sending when the reset comes.
	var out bytes.Buffer
	err = bulk(l.Addr().String(), 32<<20, 1, 5*time.Second, &out)
	if serr := <-served; serr != nil {
		t.Fatalf("the server: %v", serr)
	}
	if err == nil || !strings.Contains(err.Error(), "the server says: "+verdict) {
		t.Fatalf("error %v, want the server's verdict %q", err, verdict)
	}
	if !strings.Contains(out.String(), verdict) {
		t.Errorf("the client prints %q, want the verdict", out.String())
	}
	t.Logf("%v", err)
}

func TestParseBulk(t *testing.T) {
	for _, c := range []struct {
		in   string
		size int
		seed uint64
		ok   bool
	}{
		{"bulk 4194304 7", 4194304, 7, true},
		{"bulk 1 0", 1, 0, true},
		{"bulk 0 1", 0, 0, false},
		{"bulk 67108865 1", 0, 0, false},
		{"bulk -5 1", 0, 0, false},
		{"bulk 5", 0, 0, false},
		{"SELECT 1 2", 0, 0, false},
		{"bulk 5 x", 0, 0, false},
	} {
		size, seed, ok := parseBulk(c.in)
		if size != c.size || seed != c.seed || ok != c.ok {
			t.Errorf("parseBulk(%q) = %d, %d, %v; want %d, %d, %v", c.in, size, seed, ok, c.size, c.seed, c.ok)
		}
	}
}

// FuzzParseBulk: a request line never panics the server, and a size it
// accepts is within bounds.
func FuzzParseBulk(f *testing.F) {
	for _, s := range []string{"bulk 4194304 1", "bulk 0 0", "bulk 99999999999999999999 1", "bulk 1 18446744073709551616", "ssh 0", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		size, _, ok := parseBulk(s)
		if ok && (size < 1 || size > maxBulk) {
			t.Fatalf("parseBulk(%q) accepts size %d", s, size)
		}
		if !ok && size != 0 {
			t.Fatalf("parseBulk(%q) refuses but returns size %d", s, size)
		}
	})
}

// deadlineConn records the deadline in force at each read and write.
type deadlineConn struct {
	net.Conn // nil: only the methods below are called
	deadline time.Time
	seen     []time.Time
}

func (c *deadlineConn) SetDeadline(t time.Time) error { c.deadline = t; return nil }
func (c *deadlineConn) Read(b []byte) (int, error) {
	c.seen = append(c.seen, c.deadline)
	return len(b), nil
}
func (c *deadlineConn) Write(b []byte) (int, error) {
	c.seen = append(c.seen, c.deadline)
	return len(b), nil
}

// A bulk connection's deadline bounds a stall, not the exchange: every
// read and write starts with a deadline idle from its own start, so an
// exchange that keeps moving outlasts idle (an emulated VM under load took
// over a minute for a few megabytes, and the fixed minute cut it).
func TestProgressConnRenewsItsDeadline(t *testing.T) {
	dc := &deadlineConn{}
	pc := &progressConn{Conn: dc, idle: time.Hour}
	buf := make([]byte, 8)
	for i := range 6 {
		before := time.Now()
		if i%2 == 0 {
			pc.Read(buf)
		} else {
			pc.Write(buf)
		}
		if got := dc.seen[i]; got.Before(before.Add(time.Hour)) {
			t.Fatalf("call %d ran with the deadline %v, want at least %v", i, got, before.Add(time.Hour))
		}
	}
	pc.idle = time.Second
	before := time.Now()
	pc.Read(buf)
	if got := dc.seen[6]; got.Before(before.Add(time.Second)) || got.After(time.Now().Add(time.Second)) {
		t.Fatalf("after idle changed the read ran with %v, want a second from its start", got)
	}
}

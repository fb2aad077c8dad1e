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
				c.SetDeadline(time.Now().Add(10 * time.Second))
				r := bufio.NewReader(c)
				line, _ := r.ReadString('\n')
				size, seed, ok := parseBulk(strings.TrimSpace(line))
				if !ok {
					return
				}
				v := serveBulk(c, r, "srv", size, seed)
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

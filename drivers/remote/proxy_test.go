package remote

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"sync"
	"testing"
)

// mitm sits on the path between the host and the NIC side, as an attacker
// with access to the transport would: it sees securechan frames (it knows
// the 2-byte length framing, nothing else) and may drop, hold, change,
// replay or reorder them.
type mitm struct {
	t      testing.TB
	ln     net.Listener
	addr   string
	target string

	mu    sync.Mutex              // guards the fields below
	c2s   func(f []byte) [][]byte // host → NIC frames; nil forwards
	s2c   func(f []byte) [][]byte // NIC → host frames
	conns []net.Conn
	wg    sync.WaitGroup
}

func newMITM(t testing.TB, target string) *mitm {
	t.Helper()
	path := sockPath(t)
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	m := &mitm{t: t, ln: ln, addr: "unix:" + path, target: target}
	m.wg.Add(1)
	go m.accept()
	t.Cleanup(func() {
		ln.Close()
		m.cut()
		m.wg.Wait()
	})
	return m
}

func (m *mitm) accept() {
	defer m.wg.Done()
	for {
		c, err := m.ln.Accept()
		if err != nil {
			return
		}
		network, where, _ := splitAddress(m.target)
		s, err := net.Dial(network, where)
		if err != nil {
			c.Close()
			continue
		}
		m.mu.Lock()
		m.conns = append(m.conns, c, s)
		m.mu.Unlock()
		m.wg.Add(2)
		go m.pipe(c, s, true)
		go m.pipe(s, c, false)
	}
}

// pipe forwards frames from src to dst through the direction's hook.
func (m *mitm) pipe(src, dst net.Conn, toServer bool) {
	defer m.wg.Done()
	defer dst.Close()
	defer src.Close()
	var pfx [2]byte
	for {
		if _, err := io.ReadFull(src, pfx[:]); err != nil {
			return
		}
		f := make([]byte, binary.BigEndian.Uint16(pfx[:]))
		if _, err := io.ReadFull(src, f); err != nil {
			return
		}
		m.mu.Lock()
		hook := m.s2c
		if toServer {
			hook = m.c2s
		}
		m.mu.Unlock()
		out := [][]byte{f}
		if hook != nil {
			out = hook(f)
		}
		for _, o := range out {
			var p [2]byte
			binary.BigEndian.PutUint16(p[:], uint16(len(o)))
			if _, err := dst.Write(append(p[:], o...)); err != nil {
				return
			}
		}
	}
}

func (m *mitm) setC2S(f func([]byte) [][]byte) { m.mu.Lock(); m.c2s = f; m.mu.Unlock() }
func (m *mitm) setS2C(f func([]byte) [][]byte) { m.mu.Lock(); m.s2c = f; m.mu.Unlock() }

// cut closes every connection through the proxy, as a cable pull would.
func (m *mitm) cut() {
	m.mu.Lock()
	cs := m.conns
	m.conns = nil
	m.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

// isData reports whether f is a sealed data frame (securechan type 3).
func isData(f []byte) bool { return len(f) > 2 && f[1] == 3 }

// once returns a hook that applies fn to the first data frame after it is
// set and forwards everything else as is.
func once(fn func(f []byte) [][]byte) func([]byte) [][]byte {
	var mu sync.Mutex
	used := false
	return func(f []byte) [][]byte {
		mu.Lock()
		defer mu.Unlock()
		if used || !isData(f) {
			return [][]byte{f}
		}
		used = true
		return fn(f)
	}
}

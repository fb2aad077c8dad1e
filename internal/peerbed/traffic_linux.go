//go:build linux

package peerbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/internal/nsexec"
)

// SNMP reads vm's kernel counters (/proc/net/snmp inside its namespace:
// what `nstat -asz` prints there).
func SNMP(vm VM) (Counters, error) {
	var data []byte
	err := nsexec.Do(vm.NS, func() error {
		// thread-self: the calling thread is the one inside the namespace.
		var err error
		data, err = os.ReadFile("/proc/thread-self/net/snmp")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("peerbed: %s's counters: %w", vm.Name, err)
	}
	return parseSNMP(data)
}

// PingOptions shape a Ping.
type PingOptions struct {
	Count int // echo requests, one at a time; default 5
	// Size is the ICMP payload in bytes (at least 8); the IPv4 packet is 28
	// bytes more. Default 56.
	Size int
	// DF sets Don't Fragment: a request that does not fit the path is
	// refused, never fragmented.
	DF bool
	// Wait is how long each request waits for its reply; default 1s.
	Wait time.Duration
}

// PingResult is what a Ping saw.
type PingResult struct {
	Sent, Replies int
	// Damaged counts replies to this ping whose payload is not what was sent.
	Damaged int
}

var pingID atomic.Uint32

// Ping sends ICMP echo requests from vm to dst, one at a time, and counts
// the replies whose payload came back intact (a raw socket in vm's
// namespace: the machine may have no ping).
func Ping(ctx context.Context, vm VM, dst netip.Addr, o PingOptions) (PingResult, error) {
	if o.Count <= 0 {
		o.Count = 5
	}
	if o.Size == 0 {
		o.Size = 56
	}
	if o.Size < 8 {
		return PingResult{}, fmt.Errorf("peerbed: ping payload %d < 8 bytes", o.Size)
	}
	if o.Wait <= 0 {
		o.Wait = time.Second
	}
	var res PingResult
	fd := -1
	err := nsexec.Do(vm.NS, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		return err
	})
	if err != nil {
		return res, fmt.Errorf("peerbed: ping from %s: %w", vm.Name, err)
	}
	defer unix.Close(fd)
	pmtu := unix.IP_PMTUDISC_DONT
	if o.DF {
		pmtu = unix.IP_PMTUDISC_DO
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, pmtu); err != nil {
		return res, err
	}
	tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return res, err
	}
	id := uint16(os.Getpid()) ^ uint16(pingID.Add(1)*7919)
	sa := &unix.SockaddrInet4{Addr: dst.As4()}
	buf := make([]byte, 65536)
	for seq := uint16(1); int(seq) <= o.Count; seq++ {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		req := echoRequest(id, seq, o.Size)
		if err := unix.Sendto(fd, req, 0, sa); err != nil {
			return res, fmt.Errorf("peerbed: ping %s → %s (%d bytes, DF %v): %w", vm.Name, dst, o.Size, o.DF, err)
		}
		res.Sent++
		deadline := time.Now().Add(o.Wait)
		for time.Now().Before(deadline) {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				continue
			}
			rid, rseq, payload, ok := parseEchoReply(buf[:n])
			if !ok || rid != id || rseq != seq {
				continue
			}
			if !bytes.Equal(payload, req[8:]) {
				res.Damaged++
				continue
			}
			res.Replies++
			break
		}
	}
	return res, nil
}

// UDPResult is what a UDP exchange saw.
type UDPResult struct {
	Sent, Received int
	// Damaged counts datagrams that arrived with a payload other than the
	// one sent (a wrong length, or wrong bytes).
	Damaged int
	// Duplicates counts datagrams that arrived more than once.
	Duplicates int
}

// MaxUDPPayload is the largest UDP payload that fits the overlay's MTU
// unfragmented.
const MaxUDPPayload = OverlayMTU - 20 - 8

// udpSizes are the payload sizes a UDP exchange cycles through: the
// smallest that carries a sequence number, some between, and the largest
// that fits the overlay.
var udpSizes = []int{8, 100, 512, 1000, MaxUDPPayload}

func udpSize(seq uint64) int { return udpSizes[seq%uint64(len(udpSizes))] }

// UDP sends count datagrams from one VM to the other, one every 500µs,
// cycling through payload sizes up to MaxUDPPayload, and counts those that
// arrive intact. It waits for the last ones for up to 2s.
func UDP(ctx context.Context, from, to VM, count int) (UDPResult, error) {
	var res UDPResult
	var rc, sc *net.UDPConn
	err := nsexec.Do(to.NS, func() error {
		var err error
		rc, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(to.CA, 0)))
		return err
	})
	if err != nil {
		return res, fmt.Errorf("peerbed: UDP receiver on %s: %w", to.Name, err)
	}
	defer rc.Close()
	dst := rc.LocalAddr().(*net.UDPAddr).AddrPort()
	err = nsexec.Do(from.NS, func() error {
		var err error
		sc, err = net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(from.CA, 0)), net.UDPAddrFromAddrPort(dst))
		return err
	})
	if err != nil {
		return res, fmt.Errorf("peerbed: UDP sender on %s: %w", from.Name, err)
	}
	defer sc.Close()

	var mu sync.Mutex
	seen := map[uint64]bool{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			rc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			n, err := rc.Read(buf)
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					mu.Lock()
					finished := len(seen) >= count || ctx.Err() != nil
					mu.Unlock()
					if finished {
						return
					}
					continue
				}
				return
			}
			seq, ok := checkPayload(buf[:n])
			mu.Lock()
			switch {
			case !ok || seq >= uint64(count) || n != udpSize(seq):
				res.Damaged++
			case seen[seq]:
				res.Duplicates++
			default:
				seen[seq] = true
			}
			mu.Unlock()
		}
	}()
	p := make([]byte, MaxUDPPayload)
	for seq := range uint64(count) {
		if ctx.Err() != nil {
			break
		}
		q := p[:udpSize(seq)]
		fill(q, seq)
		if _, err := sc.Write(q); err != nil {
			rc.Close()
			<-done
			return res, fmt.Errorf("peerbed: UDP %s → %s: %w", from.Name, to.Name, err)
		}
		res.Sent++
		time.Sleep(500 * time.Microsecond)
	}
	// The stragglers: until everything arrived or 2s passed.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n >= count {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	rc.Close()
	<-done
	mu.Lock()
	res.Received = len(seen)
	mu.Unlock()
	return res, nil
}

// TCPResult is what one TCP transfer saw.
type TCPResult struct {
	// Bytes arrived, intact and in order, before the end or the first
	// damaged byte.
	Bytes int64
	// Elapsed is from the first byte written to the end of the stream read.
	Elapsed time.Duration
	// Damaged says a byte arrived other than sent, at offset DamagedAt.
	Damaged   bool
	DamagedAt int64
}

// Gbps is the transfer's throughput in Gbit/s.
func (r TCPResult) Gbps() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Bytes) * 8 / r.Elapsed.Seconds() / 1e9
}

// tcpBlock is the size of the transfer pattern's block: 1 MiB of random
// bytes repeated, each copy stamped with its index, so that a misplaced or
// damaged segment shows.
const tcpBlock = 1 << 20

var tcpPattern = sync.OnceValue(func() []byte {
	b := make([]byte, tcpBlock)
	r := rand.NewChaCha8([32]byte{'n', 'i', 'c', 'p', 'a', 't', 'h'})
	r.Read(b)
	return b
})

// streamAt writes the transfer's bytes at offset off into p.
func streamAt(off int64, p []byte) {
	pat := tcpPattern()
	for len(p) > 0 {
		blk, in := off/tcpBlock, int(off%tcpBlock)
		n := copy(p, pat[in:])
		// The block's first 8 bytes are its index.
		for i := in; i < 8 && i-in < n; i++ {
			p[i-in] = byte(uint64(blk) >> (56 - 8*i))
		}
		p, off = p[n:], off+int64(n)
	}
}

// TCP sends n bytes over one TCP connection from one VM to the other (a
// Go client and server inside the VMs' namespaces, each VM's kernel doing
// TCP with its default offloads) and checks every byte that arrives. ctx
// bounds the transfer: on its deadline the connection is closed and the
// result says how far it got.
func TCP(ctx context.Context, from, to VM, n int64) (TCPResult, error) {
	var res TCPResult
	var l net.Listener
	err := nsexec.Do(to.NS, func() error {
		var err error
		l, err = net.Listen("tcp4", netip.AddrPortFrom(to.CA, 0).String())
		return err
	})
	if err != nil {
		return res, fmt.Errorf("peerbed: TCP server on %s: %w", to.Name, err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	var c net.Conn
	err = nsexec.Do(from.NS, func() error {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(from.CA, 0)), Timeout: 10 * time.Second}
		var err error
		c, err = d.DialContext(ctx, "tcp4", l.Addr().String())
		return err
	})
	if err != nil {
		return res, fmt.Errorf("peerbed: TCP connect %s → %s: %w", from.Name, to.Name, err)
	}
	defer c.Close()
	var s net.Conn
	select {
	case s = <-accepted:
	case <-ctx.Done():
		return res, ctx.Err()
	}
	if s == nil {
		return res, errors.New("peerbed: TCP accept failed")
	}
	defer s.Close()
	// Closing both ends when ctx ends unblocks reads and writes alike.
	stop := context.AfterFunc(ctx, func() { c.Close(); s.Close() })
	defer stop()

	start := time.Now()
	werr := make(chan error, 1)
	go func() {
		buf := make([]byte, 256<<10)
		var off int64
		for off < n {
			k := int(min(int64(len(buf)), n-off))
			streamAt(off, buf[:k])
			if _, err := c.Write(buf[:k]); err != nil {
				werr <- err
				return
			}
			off += int64(k)
		}
		werr <- c.(*net.TCPConn).CloseWrite()
	}()
	buf := make([]byte, 256<<10)
	want := make([]byte, len(buf))
	var rerr error
	for {
		k, err := s.Read(buf)
		if k > 0 && !res.Damaged {
			streamAt(res.Bytes, want[:k])
			if !bytes.Equal(buf[:k], want[:k]) {
				res.Damaged = true
				for i := range k {
					if buf[i] != want[i] {
						res.DamagedAt = res.Bytes + int64(i)
						break
					}
				}
			} else {
				res.Bytes += int64(k)
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				rerr = err
			}
			break
		}
	}
	res.Elapsed = time.Since(start)
	c.Close()
	w := <-werr
	switch {
	case ctx.Err() != nil:
		return res, fmt.Errorf("peerbed: TCP %s → %s: %w after %d of %d bytes", from.Name, to.Name, ctx.Err(), res.Bytes, n)
	case rerr != nil:
		return res, fmt.Errorf("peerbed: TCP %s → %s: receiving: %w after %d of %d bytes", from.Name, to.Name, rerr, res.Bytes, n)
	case w != nil:
		return res, fmt.Errorf("peerbed: TCP %s → %s: sending: %w after %d of %d bytes received", from.Name, to.Name, w, res.Bytes, n)
	case res.Damaged:
		return res, fmt.Errorf("peerbed: TCP %s → %s: byte %d arrived damaged", from.Name, to.Name, res.DamagedAt)
	case res.Bytes != n:
		return res, fmt.Errorf("peerbed: TCP %s → %s: %d of %d bytes arrived", from.Name, to.Name, res.Bytes, n)
	}
	return res, nil
}

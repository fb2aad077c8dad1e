//go:build linux

package peerbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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
// arrive intact. It waits for the last ones for up to 10s.
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
	// Room for every datagram even if the reader is not scheduled while
	// they arrive (a loaded machine): the default buffer holds about 100
	// of them, and a full buffer drops.
	if raw, err := rc.SyscallConn(); err == nil {
		raw.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20) })
	}
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
	// The stragglers: until everything arrived or 10s passed.
	deadline := time.Now().Add(10 * time.Second)
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

// TCPStream is one TCP connection from one VM to the other (a Go client
// and server inside the VMs' namespaces, each VM's kernel doing TCP with its
// default offloads), over which Send sends the transfer pattern and the
// receiving end checks every byte as it arrives.
type TCPStream struct {
	from, to VM
	l        net.Listener
	c, s     net.Conn // the sender's and the receiver's ends
	sent     int64
	wbuf     []byte
	progress chan struct{} // a token after each read
	rdone    chan struct{} // closed when the receiver stops

	mu        sync.Mutex
	recvd     int64 // intact bytes in order
	damaged   bool
	damagedAt int64
	rerr      error // the receiver's error; io.EOF at the end of the stream
}

// OpenTCP connects from to to.
func OpenTCP(ctx context.Context, from, to VM) (*TCPStream, error) {
	return OpenTCPPort(ctx, from, to, 0)
}

// OpenTCPPort connects from to to's TCP port (0: one the kernel picks).
func OpenTCPPort(ctx context.Context, from, to VM, port uint16) (_ *TCPStream, err error) {
	st := &TCPStream{from: from, to: to, wbuf: make([]byte, 256<<10), progress: make(chan struct{}, 1), rdone: make(chan struct{})}
	err = nsexec.Do(to.NS, func() error {
		var err error
		st.l, err = net.Listen("tcp4", netip.AddrPortFrom(to.CA, port).String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("peerbed: TCP server on %s: %w", to.Name, err)
	}
	defer func() {
		if err != nil {
			st.abort()
		}
	}()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := st.l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	err = nsexec.Do(from.NS, func() error {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(from.CA, 0)), Timeout: 10 * time.Second}
		var err error
		st.c, err = d.DialContext(ctx, "tcp4", st.l.Addr().String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("peerbed: TCP connect %s → %s: %w", from.Name, to.Name, err)
	}
	select {
	case st.s = <-accepted:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if st.s == nil {
		return nil, errors.New("peerbed: TCP accept failed")
	}
	go st.receive()
	return st, nil
}

// receive reads the stream to its end, checking every byte.
func (st *TCPStream) receive() {
	defer close(st.rdone)
	buf := make([]byte, 256<<10)
	want := make([]byte, len(buf))
	for {
		k, err := st.s.Read(buf)
		st.mu.Lock()
		if k > 0 && !st.damaged {
			streamAt(st.recvd, want[:k])
			if bytes.Equal(buf[:k], want[:k]) {
				st.recvd += int64(k)
			} else {
				st.damaged = true
				for i := range k {
					if buf[i] != want[i] {
						st.damagedAt = st.recvd + int64(i)
						break
					}
				}
			}
		}
		if err != nil {
			st.rerr = err
		}
		st.mu.Unlock()
		select {
		case st.progress <- struct{}{}:
		default:
		}
		if err != nil {
			return
		}
	}
}

func (st *TCPStream) state() (recvd int64, damaged bool, at int64, rerr error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.recvd, st.damaged, st.damagedAt, st.rerr
}

// Send sends the stream's next n bytes and returns once the receiver has
// them all, intact and in order: the result counts them and the time from
// the first byte written to the last byte read. On ctx's end the
// connection is closed (the stream is over) and the result says how far it
// got.
func (st *TCPStream) Send(ctx context.Context, n int64) (TCPResult, error) {
	var res TCPResult
	stop := context.AfterFunc(ctx, st.abort)
	defer stop()
	base, _, _, _ := st.state()
	target := st.sent + n
	start := time.Now()
	werr := make(chan error, 1)
	go func() {
		for st.sent < target {
			k := int(min(int64(len(st.wbuf)), target-st.sent))
			streamAt(st.sent, st.wbuf[:k])
			if _, err := st.c.Write(st.wbuf[:k]); err != nil {
				werr <- err
				return
			}
			st.sent += int64(k)
		}
		werr <- nil
	}()
	var wdone bool
	for {
		recvd, damaged, at, rerr := st.state()
		res.Bytes, res.Damaged, res.DamagedAt = recvd-base, damaged, at
		if recvd >= target || damaged || rerr != nil {
			break
		}
		select {
		case <-st.progress:
		case err := <-werr:
			wdone = true
			if err != nil {
				st.abort()
				<-st.rdone
				recvd, _, _, _ = st.state()
				res.Bytes = recvd - base
				return res, st.fail(ctx, fmt.Errorf("sending: %w after %d of %d bytes received", err, res.Bytes, n))
			}
		}
	}
	res.Elapsed = time.Since(start)
	if !wdone {
		if res.Bytes < n {
			st.abort() // the sender may be blocked: the stream is over anyway
		}
		<-werr
	}
	_, _, _, rerr := st.state()
	switch {
	case res.Damaged:
		return res, st.fail(ctx, fmt.Errorf("byte %d arrived damaged", res.DamagedAt))
	case res.Bytes < n:
		return res, st.fail(ctx, fmt.Errorf("receiving: %w after %d of %d bytes", rerr, res.Bytes, n))
	}
	return res, nil
}

func (st *TCPStream) fail(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return fmt.Errorf("peerbed: TCP %s → %s: %w", st.from.Name, st.to.Name, err)
}

// abort closes everything at once: blocked reads and writes return.
func (st *TCPStream) abort() {
	if st.c != nil {
		st.c.Close()
	}
	if st.s != nil {
		st.s.Close()
	}
	st.l.Close()
}

// Close ends the stream: the sender closes its half, and the receiver must
// then see the end of the stream right after the last byte sent.
func (st *TCPStream) Close(ctx context.Context) error {
	defer st.abort()
	stop := context.AfterFunc(ctx, st.abort)
	defer stop()
	if err := st.c.(*net.TCPConn).CloseWrite(); err != nil {
		return st.fail(ctx, fmt.Errorf("closing: %w", err))
	}
	<-st.rdone
	recvd, damaged, _, rerr := st.state()
	switch {
	case damaged:
		return st.fail(ctx, errors.New("damaged"))
	case !errors.Is(rerr, io.EOF):
		return st.fail(ctx, fmt.Errorf("at the end of the stream: %w", rerr))
	case recvd != st.sent:
		return st.fail(ctx, fmt.Errorf("%d bytes arrived of %d sent", recvd, st.sent))
	}
	return nil
}

// TCP sends n bytes over one new TCP connection from one VM to the other
// (OpenTCP, Send, Close) and checks every byte that arrives and the end of
// the stream. ctx bounds the transfer: on its deadline the connection is
// closed and the result says how far it got.
func TCP(ctx context.Context, from, to VM, n int64) (TCPResult, error) {
	st, err := OpenTCP(ctx, from, to)
	if err != nil {
		return TCPResult{}, err
	}
	res, err := st.Send(ctx, n)
	if err != nil {
		st.abort()
		return res, err
	}
	return res, st.Close(ctx)
}

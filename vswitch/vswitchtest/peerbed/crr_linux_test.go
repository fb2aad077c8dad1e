//go:build linux

package peerbed

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The CPS benchmark's load runs in processes of its own: the test binary
// started again inside a VM's namespace with crrEnv set (see TestMain), a
// server in vm-b and a client in vm-a per bed. So the load shares nothing
// with the datapath it measures but the machine: nicpath's vswitchds run
// in the benchmark's process, and clients and servers there would take
// the Go scheduler's processors from them, which OVS's daemons, processes
// of their own, never lose (measured here: softnic's CPS rose 1.5–3× with
// GOMAXPROCS=8 against 2 while the clients were in process; OVS's did
// not move).
const crrEnv = "PEERBED_CRR"

// TestMain runs the CPS load's processes when crrEnv says so, and the
// package's tests otherwise.
func TestMain(m *testing.M) {
	switch os.Getenv(crrEnv) {
	case "":
		os.Exit(m.Run())
	case "server":
		os.Exit(crrServerMain(os.Getenv(crrEnv + "_ADDR")))
	case "client":
		os.Exit(crrClientMain(os.Getenv(crrEnv + "_ADDR")))
	default:
		fmt.Fprintf(os.Stderr, "%s=%q: want server or client\n", crrEnv, os.Getenv(crrEnv))
		os.Exit(2)
	}
}

// The load is lean, as netperf's TCP_CRR is, so that what it costs per
// connection is the kernel's TCP work a connection needs and little else:
// it is the same for every bed, and a heavy load would pull every ratio
// towards 1. Each process runs one loop on one goroutine over one epoll
// instance of its own, with non-blocking sockets and plain system calls:
// no Go netpoller registration per socket, no goroutine parked and woken
// per transaction, no deadline timers, no socket options or address
// queries beyond the transaction's. (Measured with perf on the softnic
// bed's client and server while they ran net.Dial/Accept with a goroutine
// per transaction: about half of their CPU was Go's scheduler and poller,
// futex and nanosleep wake-ups and epoll_ctl per socket, and net's own
// setsockopt, getsockname and getpeername calls.) The goroutine is not
// locked to its thread: with nothing else to run it stays there anyway,
// and a locked one would hand its P to another thread at each yield (see
// crrYielder).

// crrServerMain listens on addr (the VM's address, port 0), prints the
// address it listens on, and answers transactions until its standard
// input ends: it accepts, reads the 1-byte request, writes a 1-byte
// answer and closes (first, so that the clients keep no TIME_WAIT and
// never run out of ports). A connection that sends nothing within
// 2×crrTimeout is closed.
func crrServerMain(addr string) int {
	lfd, sa, err := crrListen(addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("%s:%d\n", netip.AddrFrom4(sa.Addr), sa.Port)
	if err := crrServe(lfd, 0); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// crrListen opens a non-blocking listening socket on addr ("A.B.C.D:port")
// and returns it with the address it is bound to.
func crrListen(addr string) (int, *unix.SockaddrInet4, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return -1, nil, fmt.Errorf("CPS server address %q: want IPv4 address:port (%v)", addr, err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(fd)
		return -1, nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}); err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("bind %s: %w", addr, err)
	}
	// The kernel caps the backlog at net.core.somaxconn.
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return -1, nil, err
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return -1, nil, err
	}
	return fd, got.(*unix.SockaddrInet4), nil
}

// crrServe answers transactions on the listening socket lfd until stop (a
// pipe's reading end) ends or fails, then closes lfd and every connection.
func crrServe(lfd, stop int) error {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(ep)
	defer unix.Close(lfd)
	// Event data: the listening socket and stop by their own fds (both
	// level-triggered), a connection by its fd (edge-triggered: it is read
	// until EAGAIN).
	for _, fd := range []int{lfd, stop} {
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			return err
		}
	}
	// since[fd] is when connection fd was accepted (0: not open), in
	// nanoseconds of the loop's clock.
	var since []int64
	open := 0
	defer func() {
		for fd, t := range since {
			if t != 0 {
				unix.Close(fd)
			}
		}
	}()
	closeConn := func(fd int) {
		unix.Close(fd)
		since[fd] = 0
		open--
	}
	events := make([]unix.EpollEvent, 64)
	buf := make([]byte, 8)
	t0 := time.Now()
	lastSweep := int64(0)
	var y crrYielder
	for {
		// Idle (another bed's turn), it sleeps until a connection comes.
		timeout := -1
		if open > 0 {
			timeout = crrSweep
		}
		n, err := unix.EpollWait(ep, events, timeout)
		if err != nil && err != unix.EINTR {
			return err
		}
		tnow := time.Now()
		y.yield(tnow)
		now := int64(tnow.Sub(t0)) + 1
		for _, ev := range events[:max(n, 0)] {
			fd := int(ev.Fd)
			switch fd {
			case stop:
				if k, err := unix.Read(stop, buf); k <= 0 && err != unix.EINTR && err != unix.EAGAIN {
					return nil
				}
			case lfd:
				for {
					c, _, err := unix.Accept4(lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
					if err != nil {
						// EAGAIN: none left; a connection reset before
						// it was accepted is not the server's failure.
						break
					}
					if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, c, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(c)}); err != nil {
						unix.Close(c)
						continue
					}
					if c >= len(since) {
						since = append(since, make([]int64, c+1-len(since))...)
					}
					since[c] = now
					open++
				}
			default:
				if fd >= len(since) || since[fd] == 0 {
					continue
				}
				k, err := unix.Read(fd, buf[:1])
				if err == unix.EAGAIN {
					continue
				}
				if k == 1 {
					buf[0] ^= 0xff
					// A write to a socket reset by then fails with EPIPE
					// (Go ignores SIGPIPE on fds other than 1 and 2).
					unix.Write(fd, buf[:1])
				}
				// Answered, or the client closed or reset: close first.
				closeConn(fd)
			}
		}
		if open > 0 && now-lastSweep >= int64(crrSweep)*int64(time.Millisecond) {
			lastSweep = now
			for fd, t := range since {
				if t != 0 && now-t > int64(2*crrTimeout) {
					closeConn(fd)
				}
			}
		}
	}
}

// crrYielder passes a load's loop through Go's scheduler every
// crrYieldEvery. A goroutine that never does stays on one scheduling tick,
// and after 10 ms of it Go's sysmon takes its P away at every system call
// it finds it in (and signals its thread), from then on every 20 µs:
// measured with perf, sysmon was a sixth of the load's CPU. A Gosched
// at every wake-up instead wakes another thread each time (a fifth).
type crrYielder struct{ last time.Time }

// crrYieldEvery is well under sysmon's 10 ms.
const crrYieldEvery = 2 * time.Millisecond

func (y *crrYielder) yield(now time.Time) {
	if now.Sub(y.last) >= crrYieldEvery {
		y.last = now
		runtime.Gosched()
	}
}

// crrSweep is how often, in milliseconds, the load's loops look for
// transactions past their time when no event comes sooner.
const crrSweep = 50

// crrClientMain runs transactions toward addr on command, one line of its
// standard input each: "warm" completes one transaction (10 tries) and
// answers "ok" or the error; "turn NS" runs crrWorkers clients for NS
// nanoseconds and answers "DONE FAILED ELAPSED_NS". It returns when its
// input ends.
func crrClientMain(addr string) int {
	c, err := newCRRClient(addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.close()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch {
		case len(f) == 1 && f[0] == "warm":
			if err := c.warm(); err != nil {
				fmt.Println(err)
			} else {
				fmt.Println("ok")
			}
		case len(f) == 2 && f[0] == "turn":
			ns, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			done, failed, elapsed, err := c.run(crrWorkers, time.Duration(ns), -1, -1)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			fmt.Println(done, failed, elapsed.Nanoseconds())
		default:
			fmt.Fprintf(os.Stderr, "unknown command %q\n", in.Text())
			return 2
		}
	}
	return 0
}

// crrClient runs transactions toward one server from one epoll loop.
type crrClient struct {
	ep     int
	to     unix.SockaddrInet4
	events []unix.EpollEvent
	slots  []crrSlot
	buf    []byte
	q      byte // the last request sent

	// A run's counts: transactions completed and failed, and in flight.
	done, failed int64
	inFlight     int
}

// crrSlot is one client's transaction in flight.
type crrSlot struct {
	fd    int   // -1: none
	state uint8 // crrConnecting, crrAnswer or crrEOF
	q     byte  // the request
	start time.Time
}

// A transaction's states: waiting for the connection (then it sends the
// request), for the answer, and for the end of the stream.
const (
	crrConnecting = iota
	crrAnswer
	crrEOF
)

func newCRRClient(addr string) (*crrClient, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return nil, fmt.Errorf("CPS client address %q: want IPv4 address:port (%v)", addr, err)
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	return &crrClient{ep: ep, to: unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())},
		events: make([]unix.EpollEvent, 64), buf: make([]byte, 8)}, nil
}

func (c *crrClient) close() { unix.Close(c.ep) }

// warm completes one transaction, trying up to 10 times: the bed works,
// and nothing of its setup is in the figure.
func (c *crrClient) warm() error {
	done, _, _, err := c.run(1, 10*crrTimeout, 1, 10)
	if err != nil {
		return err
	}
	if done == 0 {
		return fmt.Errorf("10 transactions to %s:%d failed", netip.AddrFrom4(c.to.Addr), c.to.Port)
	}
	return nil
}

// run runs connect-request-response transactions on workers clients at
// once for d (or until maxDone completed or maxFailed failed, when not
// negative), and returns how many completed (connected, the answer read,
// the server's close seen), how many failed (no connection, a wrong or
// missing answer, or none within crrTimeout), and the time from the first
// connect to the last transaction's end. A client starts its next
// transaction as soon as one ends, until d has passed.
func (c *crrClient) run(workers int, d time.Duration, maxDone, maxFailed int64) (done, failed int64, elapsed time.Duration, err error) {
	start := time.Now()
	deadline := start.Add(d)
	c.done, c.failed, c.inFlight = 0, 0, 0
	more := func() bool {
		return (maxDone < 0 || c.done < maxDone) && (maxFailed < 0 || c.failed < maxFailed) && time.Now().Before(deadline)
	}
	c.slots = c.slots[:0]
	for i := range workers {
		c.slots = append(c.slots, crrSlot{fd: -1})
		c.begin(i, more)
	}
	last := time.Now()
	var y crrYielder
	for c.inFlight > 0 {
		n, err := unix.EpollWait(c.ep, c.events, crrSweep)
		if err != nil && err != unix.EINTR {
			c.abort()
			return c.done, c.failed, 0, err
		}
		for _, ev := range c.events[:max(n, 0)] {
			i := int(ev.Fd)
			if c.slots[i].fd < 0 || c.step(&c.slots[i], ev.Events) {
				continue
			}
			last = time.Now()
			c.begin(i, more)
		}
		now := time.Now()
		y.yield(now)
		for i := range c.slots {
			if s := &c.slots[i]; s.fd >= 0 && now.Sub(s.start) > crrTimeout {
				c.finish(s, false)
				last = now
				c.begin(i, more)
			}
		}
	}
	return c.done, c.failed, last.Sub(start), nil
}

// begin starts a transaction on slot i while more says so; a socket or
// connect that fails at once counts as a failed transaction, and the next
// one starts.
func (c *crrClient) begin(i int, more func() bool) {
	s := &c.slots[i]
	for more() {
		c.q++
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			c.failed++
			continue
		}
		*s = crrSlot{fd: fd, q: c.q, start: time.Now()}
		c.inFlight++
		if err := unix.Connect(fd, &c.to); err != nil && err != unix.EINPROGRESS {
			c.finish(s, false)
			continue
		}
		// Edge-triggered: the connection's completion, the answer and the
		// end of the stream each wake the loop once.
		if err := unix.EpollCtl(c.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(i)}); err != nil {
			c.finish(s, false)
			continue
		}
		return
	}
}

// step moves s on after the events ev: true while the transaction goes
// on, false when it ended (counted, its socket closed).
func (c *crrClient) step(s *crrSlot, ev uint32) bool {
	if s.state == crrConnecting {
		if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return true
		}
		// A connect that failed fails the send.
		c.buf[0] = s.q
		if k, err := unix.Write(s.fd, c.buf[:1]); err != nil || k != 1 {
			return c.finish(s, false)
		}
		s.state = crrAnswer
		// The answer cannot have come yet: wait for its event.
		return true
	}
	for {
		k, err := unix.Read(s.fd, c.buf)
		switch {
		case err == unix.EAGAIN:
			return true
		case err == unix.EINTR:
			continue
		case err != nil:
			return c.finish(s, false)
		case s.state == crrAnswer:
			if k != 1 || c.buf[0] != s.q^0xff {
				return c.finish(s, false)
			}
			s.state = crrEOF
		default:
			// The server closes: the end of the stream and nothing else.
			return c.finish(s, k == 0)
		}
	}
}

// finish ends s's transaction, counted as ok or failed, and returns false.
func (c *crrClient) finish(s *crrSlot, ok bool) bool {
	unix.Close(s.fd)
	s.fd = -1
	c.inFlight--
	if ok {
		c.done++
	} else {
		c.failed++
	}
	return false
}

// abort closes every transaction in flight, uncounted.
func (c *crrClient) abort() {
	for i := range c.slots {
		if s := &c.slots[i]; s.fd >= 0 {
			unix.Close(s.fd)
			s.fd = -1
		}
	}
	c.inFlight = 0
}

// crrProc is one of the load's processes, seen from the benchmark: its
// standard input takes commands, its standard output answers, one line
// each.
type crrProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// startCRR starts the test binary as role in vm's namespace, with addr.
// It stops when the benchmark ends (its input closed, then waited for).
func startCRR(b *testing.B, vm VM, role, addr string) *crrProc {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", nsName(vm), exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), crrEnv+"="+role, crrEnv+"_ADDR="+addr)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("CPS %s in %s: %v", role, vm.Name, err)
	}
	p := &crrProc{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	b.Cleanup(func() {
		in.Close()
		if err := cmd.Wait(); err != nil {
			b.Errorf("CPS %s in %s: %v", role, vm.Name, err)
		}
	})
	return p
}

// line reads the process's next answer.
func (p *crrProc) line() (string, error) {
	if !p.out.Scan() {
		return "", errors.Join(errors.New("the process ended"), p.out.Err())
	}
	return p.out.Text(), nil
}

// ask sends a command and reads the answer.
func (p *crrProc) ask(cmd string) (string, error) {
	if _, err := fmt.Fprintln(p.in, cmd); err != nil {
		return "", err
	}
	return p.line()
}

// crrLoad is one bed's server (in vm-b) and client (in vm-a).
type crrLoad struct{ server, client *crrProc }

func startCRRLoad(b *testing.B, bed *Bed) (*crrLoad, error) {
	vms := bed.VMs()
	l := &crrLoad{server: startCRR(b, vms[1], "server", fmt.Sprintf("%s:0", vms[1].CA))}
	addr, err := l.server.line()
	if err != nil {
		return nil, fmt.Errorf("CPS server in %s: %w", vms[1].Name, err)
	}
	l.client = startCRR(b, vms[0], "client", addr)
	if ans, err := l.client.ask("warm"); err != nil || ans != "ok" {
		return nil, fmt.Errorf("CPS client in %s: %q %v", vms[0].Name, ans, err)
	}
	return l, nil
}

// turn runs one turn of d on the client.
func (l *crrLoad) turn(d time.Duration) (done, failed int64, elapsed time.Duration, err error) {
	ans, err := l.client.ask(fmt.Sprint("turn ", d.Nanoseconds()))
	if err != nil {
		return 0, 0, 0, err
	}
	var ns int64
	if _, err := fmt.Sscan(ans, &done, &failed, &ns); err != nil {
		return 0, 0, 0, fmt.Errorf("the CPS client answered %q: %v", ans, err)
	}
	return done, failed, time.Duration(ns), nil
}

// cpu is the CPU time used so far by the processes a turn on bed runs in
// (all): the load's client and server, OVS's daemons on an OVS bed, and
// the benchmark's own process (nicpath's vswitchds, idle but for the bed
// whose turn it is; little on an OVS bed); the part of it the load's
// client and server used (load); and the time the machine's CPUs were
// busy so far, whoever's work it was (busy: see parseMachineBusy). The
// kernel's softirq work counts in the process it interrupted: a frame's
// way through a veth into the next hop (a VM's TCP, another binding's
// socket) counts for whoever sent it.
func (l *crrLoad) cpu(bed *Bed) (all, load, busy time.Duration, err error) {
	if load, err = procsCPU(l.client.cmd.Process.Pid, l.server.cmd.Process.Pid); err != nil {
		return 0, 0, 0, err
	}
	pids := []int{os.Getpid()}
	for _, h := range bed.Hosts() {
		if h != nil && h.OVS != nil {
			pids = append(pids, h.OVS.Pids()...)
		}
	}
	others, err := procsCPU(pids...)
	if err != nil {
		return 0, 0, 0, err
	}
	data, err := os.ReadFile("/proc/stat")
	if err == nil {
		busy, err = parseMachineBusy(data)
	}
	if err != nil {
		return 0, 0, 0, err
	}
	return load + others, load, busy, nil
}

// procsCPU is the CPU time the processes pids used so far.
func procsCPU(pids ...int) (time.Duration, error) {
	var sum time.Duration
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, err
		}
		d, err := parseProcCPU(data)
		if err != nil {
			return 0, fmt.Errorf("process %d: %w", pid, err)
		}
		sum += d
	}
	return sum, nil
}

// nsName is the name of vm's namespace (ip netns exec's argument).
func nsName(vm VM) string { return vm.NS[strings.LastIndexByte(vm.NS, '/')+1:] }

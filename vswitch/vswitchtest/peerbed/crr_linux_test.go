//go:build linux

package peerbed

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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

// crrServerMain listens on addr (the VM's address, port 0), prints the
// address it listens on, and answers transactions until its standard
// input ends: it accepts, reads the 1-byte request, writes a 1-byte
// answer and closes (first, so that the clients keep no TIME_WAIT and
// never run out of ports).
func crrServerMain(addr string) int {
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(l.Addr())
	go func() {
		io.Copy(io.Discard, os.Stdin)
		l.Close()
	}()
	var wg sync.WaitGroup
	for {
		c, err := l.Accept()
		if err != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			c.SetDeadline(time.Now().Add(2 * crrTimeout))
			var q [1]byte
			if _, err := io.ReadFull(c, q[:]); err != nil {
				return
			}
			c.Write([]byte{q[0] ^ 0xff})
		}()
	}
	wg.Wait()
	return 0
}

// crrClientMain runs transactions toward addr on command, one line of its
// standard input each: "warm" completes one transaction (10 tries) and
// answers "ok" or the error; "turn NS" runs crrWorkers clients for NS
// nanoseconds and answers "DONE FAILED ELAPSED_NS". It returns when its
// input ends.
func crrClientMain(addr string) int {
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch {
		case len(f) == 1 && f[0] == "warm":
			if err := warmCRR(addr); err != nil {
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
			done, failed, elapsed := runCRR(addr, time.Duration(ns))
			fmt.Println(done, failed, elapsed.Nanoseconds())
		default:
			fmt.Fprintf(os.Stderr, "unknown command %q\n", in.Text())
			return 2
		}
	}
	return 0
}

// runCRR runs connect-request-response transactions toward addr on
// crrWorkers clients for d, and returns how many completed (connected, the
// answer read, the server's close seen), how many failed, and the time
// from the first connect to the last transaction's end.
func runCRR(addr string, d time.Duration) (done, failed int64, elapsed time.Duration) {
	var nDone, nFailed atomic.Int64
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for range crrWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{Timeout: crrTimeout}
			buf := make([]byte, 8)
			for i := byte(0); time.Now().Before(deadline); i++ {
				if crr(&d, addr, i, buf) {
					nDone.Add(1)
				} else {
					nFailed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return nDone.Load(), nFailed.Load(), time.Since(start)
}

// warmCRR completes one transaction toward addr, trying up to 10 times:
// the bed works, and nothing of its setup is in the figure.
func warmCRR(addr string) error {
	d := net.Dialer{Timeout: crrTimeout}
	buf := make([]byte, 8)
	for i := range byte(10) {
		if crr(&d, addr, i, buf) {
			return nil
		}
	}
	return fmt.Errorf("10 transactions to %s failed", addr)
}

// crr is one transaction: connect, send q, read the answer (q^0xff) and
// the end of the stream, close.
func crr(d *net.Dialer, addr string, q byte, buf []byte) bool {
	c, err := d.Dial("tcp4", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(crrTimeout))
	if _, err := c.Write([]byte{q}); err != nil {
		return false
	}
	n, err := io.ReadFull(c, buf[:1])
	if err != nil || n != 1 || buf[0] != q^0xff {
		return false
	}
	// The server closes: the end of the stream and nothing else.
	n, err = c.Read(buf)
	return n == 0 && err == io.EOF
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

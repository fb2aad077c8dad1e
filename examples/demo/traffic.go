package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// The namespace story runs this binary inside the VMs' namespaces as their
// applications: "serve" answers UDP and TCP with the VM's name (so that a
// client knows which VM it reached, whatever the address says), and
// "ping", "udp" and "tcp" are the clients.

// Ports the VMs serve on.
var (
	servedUDP = []int{53, 7}
	servedTCP = []int{22, 5432}
)

// serve answers every UDP datagram and TCP connection on the served ports
// with "<name> got <what>", and appends a line per datagram or connection to
// logPath (the story reads it to prove what a VM did not receive).
func serve(name, logPath string) error {
	var mu sync.Mutex
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	record := func(format string, a ...any) {
		mu.Lock()
		fmt.Fprintf(logf, format+"\n", a...)
		mu.Unlock()
	}
	errc := make(chan error, len(servedUDP)+len(servedTCP)+1)
	var udp []net.PacketConn
	for _, p := range servedUDP {
		c, err := net.ListenPacket("udp4", fmt.Sprintf(":%d", p))
		if err != nil {
			return err
		}
		udp = append(udp, c)
	}
	// The sealed step's VMs have IPv6 (the others have it off, and the
	// socket is only bound, never reached): they answer on UDP 7 over
	// IPv6 too.
	if c, err := net.ListenPacket("udp6", ":7"); err == nil {
		udp = append(udp, c)
	}
	for _, c := range udp {
		p := c.LocalAddr().(*net.UDPAddr).Port
		go func(c net.PacketConn, port int) {
			buf := make([]byte, 2048)
			for {
				n, from, err := c.ReadFrom(buf)
				if err != nil {
					errc <- err
					return
				}
				record("udp %d from %s: %s", port, from, buf[:n])
				c.WriteTo(fmt.Appendf(nil, "%s got %s", name, buf[:n]), from)
			}
		}(c, p)
	}
	for _, p := range servedTCP {
		l, err := net.Listen("tcp4", fmt.Sprintf(":%d", p))
		if err != nil {
			return err
		}
		go func(l net.Listener, port int) {
			for {
				c, err := l.Accept()
				if err != nil {
					errc <- err
					return
				}
				go func(c net.Conn) {
					defer c.Close()
					pc := &progressConn{Conn: c, idle: 5 * time.Second}
					r := bufio.NewReader(pc)
					line, _ := r.ReadString('\n')
					line = strings.TrimSpace(line)
					if size, seed, ok := parseBulk(line); ok {
						pc.idle = bulkIdle
						record("tcp %d from %s: %s", port, c.RemoteAddr(), serveBulk(pc, r, name, size, seed))
						return
					}
					record("tcp %d from %s: %s", port, c.RemoteAddr(), line)
					fmt.Fprintf(c, "%s got %s\n", name, line)
				}(c)
			}
		}(l, p)
	}
	// Tell the story the VM is ready.
	fmt.Println("ready")
	return <-errc
}

// runTraffic is the "traffic" subcommand: one client run, printing one
// line per answer; it fails when an answer is missing.
func runTraffic(args []string, out io.Writer) error {
	if len(args) < 1 {
		return errors.New("usage: traffic ping|udp|tcp|bulk [-n count] [-w wait] [-m message] [-s size] address")
	}
	fs := flag.NewFlagSet("traffic "+args[0], flag.ContinueOnError)
	count := fs.Int("n", 3, "how many")
	timeout := fs.Duration("w", time.Second, "how long to wait for each answer")
	msg := fs.String("m", "hello", "what to send")
	size := fs.Int("s", 4<<20, "bulk: bytes each way")
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() != 1 {
		return fmt.Errorf("traffic %s [-n count] [-w wait] [-m message] [-s size] address", args[0])
	}
	dst := fs.Arg(0)
	switch args[0] {
	case "ping":
		return ping(dst, *count, *timeout, out)
	case "udp":
		c, err := net.Dial("udp4", dst)
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 2048)
		for i := 0; i < *count; i++ {
			// One retry: UDP promises nothing, and on a loaded machine a
			// first packet waiting for its flow may take its time; the
			// retry is printed, not hidden.
			var n int
			for try := 0; try < 2; try++ {
				fmt.Fprintf(c, "%s %d", *msg, i)
				c.SetReadDeadline(time.Now().Add(*timeout))
				if n, err = c.Read(buf); err == nil {
					break
				}
				fmt.Fprintf(out, "(no answer to datagram %d within %s, sending it again)\n", i, *timeout)
			}
			if err != nil {
				return fmt.Errorf("udp %s: no answer to datagram %d: %w", dst, i, err)
			}
			fmt.Fprintf(out, "%s\n", buf[:n])
		}
		return nil
	case "bulk":
		for i := 0; i < *count; i++ {
			if err := bulk(dst, *size, uint64(i+1), *timeout, out); err != nil {
				return err
			}
		}
		return nil
	case "tcp":
		for i := 0; i < *count; i++ {
			c, err := net.DialTimeout("tcp4", dst, *timeout)
			if err != nil {
				return fmt.Errorf("tcp %s: %w", dst, err)
			}
			c.SetDeadline(time.Now().Add(*timeout))
			fmt.Fprintf(c, "%s %d\n", *msg, i)
			line, err := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if err != nil {
				return fmt.Errorf("tcp %s: no answer: %w", dst, err)
			}
			fmt.Fprint(out, line)
		}
		return nil
	}
	return fmt.Errorf("unknown traffic %q", args[0])
}

// ping sends ICMP echo requests on a raw socket (the machine may have no
// ping binary) and waits for each reply.
func ping(dst string, count int, timeout time.Duration, out io.Writer) error {
	ip := net.ParseIP(dst).To4()
	if ip == nil {
		return fmt.Errorf("ping: %q is not an IPv4 address", dst)
	}
	c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return err
	}
	defer c.Close()
	id := uint16(os.Getpid())
	buf := make([]byte, 1500)
	for seq := 1; seq <= count; seq++ {
		req := make([]byte, 8, 64)
		req[0] = 8 // echo request
		binary.BigEndian.PutUint16(req[4:], id)
		binary.BigEndian.PutUint16(req[6:], uint16(seq))
		req = append(req, "nicpath demo ping"...)
		binary.BigEndian.PutUint16(req[2:], icmpChecksum(req))
		start := time.Now()
		if _, err := c.WriteTo(req, &net.IPAddr{IP: ip}); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(timeout))
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return fmt.Errorf("ping %s: no reply to seq %d: %w", dst, seq, err)
			}
			if n >= 8 && buf[0] == 0 && binary.BigEndian.Uint16(buf[4:]) == id && binary.BigEndian.Uint16(buf[6:]) == uint16(seq) {
				fmt.Fprintf(out, "%d bytes from %s: icmp_seq=%d time=%s\n", n, from, seq, time.Since(start).Round(10*time.Microsecond))
				break
			}
		}
	}
	return nil
}

func icmpChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

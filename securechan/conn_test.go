package securechan

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"syscall"
	"testing"
	"time"
)

// connPair runs Client and Server over the two ends of a transport.
func connPair(t testing.TB, p *pair, a, b Transport) (host, nic *Conn) {
	t.Helper()
	type res struct {
		c   *Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := Server(b, p.nic)
		ch <- res{c, err}
	}()
	host, err := Client(a, p.host, p.nicPub)
	if err != nil {
		t.Fatalf("Client: %v", err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatalf("Server: %v", r.err)
	}
	return host, r.c
}

func unixStreamPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "chan.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			ch <- nil
			return
		}
		ch <- c
	}()
	a, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	b := <-ch
	if b == nil {
		t.Fatal("accept failed")
	}
	return a, b
}

func tcpPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		ch <- c
	}()
	a, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return a, <-ch
}

func unixgramPair(t testing.TB) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	conv := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "dgram")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conv(fds[0]), conv(fds[1])
}

func udpPair(t testing.TB) (*net.UDPConn, *net.UDPConn) {
	t.Helper()
	a, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	b, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, a.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	// Re-open a connected to b: a connected UDP socket reads only from its peer.
	a2, err := net.DialUDP("udp", a.LocalAddr().(*net.UDPAddr), b.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	return a2, b
}

func exchange(t *testing.T, host, nic *Conn) {
	t.Helper()
	msgs := sampleMessages()
	// Receive concurrently: an in-process pipe has no buffer, so a writer
	// waits for its reader.
	type got struct {
		msgs []Message
		err  error
	}
	ch := make(chan got, 1)
	go func() {
		var g got
		for range msgs {
			var m Message
			if g.err = nic.Recv(&m); g.err != nil {
				break
			}
			g.msgs = append(g.msgs, m)
		}
		ch <- g
	}()
	for i := range msgs {
		if err := host.Send(&msgs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := host.Flush(); err != nil {
		t.Fatal(err)
	}
	g := <-ch
	if g.err != nil || !reflect.DeepEqual(g.msgs, msgs) {
		t.Fatalf("host→nic: got %+v, %v", g.msgs, g.err)
	}
	ack := Message{Type: MsgAck, Seq: 1, AckSeq: 7}
	errc := make(chan error, 1)
	go func() {
		if err := nic.Send(&ack); err != nil {
			errc <- err
			return
		}
		errc <- nic.Flush()
	}()
	var m Message
	if err := host.Recv(&m); err != nil || m != ack {
		t.Fatalf("ack: %+v %v", m, err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestConnTransports(t *testing.T) {
	cases := []struct {
		name     string
		datagram bool
		mk       func(testing.TB) (Transport, Transport)
	}{
		{"pipe", false, func(testing.TB) (Transport, Transport) { a, b := net.Pipe(); return a, b }},
		{"unix", false, func(t testing.TB) (Transport, Transport) { return unixStreamPair(t) }},
		{"tcp", false, func(t testing.TB) (Transport, Transport) { return tcpPair(t) }},
		{"unixgram", true, func(t testing.TB) (Transport, Transport) { return unixgramPair(t) }},
		{"udp", true, func(t testing.TB) (Transport, Transport) { return udpPair(t) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t, tc.datagram, nil)
			a, b := tc.mk(t)
			host, nic := connPair(t, p, a, b)
			exchange(t, host, nic)
			done := make(chan error, 1)
			go func() {
				var m Message
				done <- nic.Recv(&m)
			}()
			if err := host.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if err := <-done; !errors.Is(err, io.EOF) {
				t.Fatalf("Recv after peer close: got %v, want io.EOF", err)
			}
			nic.Close()
		})
	}
}

func TestConnCutWithoutCloseIsTruncation(t *testing.T) {
	p := newPair(t, false, nil)
	a, b := unixStreamPair(t)
	host, nic := connPair(t, p, a, b)
	defer nic.Close()
	a.Close() // the transport ends without a Close frame
	var m Message
	err := nic.Recv(&m)
	wantErr(t, err, ErrTruncated)
	_ = host
}

func TestConnWrongServerKeyFailsHandshake(t *testing.T) {
	p := newPair(t, false, nil)
	p.host.HandshakeTimeout = 2 * time.Second
	impostorPub, impostorKey := mustKey(t)
	// The impostor pins the host (it knows the host's public key) but does
	// not hold the NIC's private key.
	impostor := &Config{PrivateKey: impostorKey, PeerKeys: []PublicKey{p.hostPub}}
	_ = impostorPub
	a, b := net.Pipe()
	errc := make(chan error, 1)
	go func() {
		_, err := Server(b, impostor)
		errc <- err
	}()
	_, err := Client(a, p.host, p.nicPub)
	if err == nil {
		t.Fatal("client completed a handshake with an impostor")
	}
	if serr := <-errc; !errors.Is(serr, ErrTampered) {
		t.Fatalf("impostor server: got %v, want ErrTampered (it cannot open an Init sealed to another key)", serr)
	}
}

// lossy drops chosen writes (by index) of a datagram transport.
type lossy struct {
	Transport
	mu     sync.Mutex
	n      int
	drop   map[int]bool
	writes [][]byte
}

func (l *lossy) Write(p []byte) (int, error) {
	l.mu.Lock()
	i := l.n
	l.n++
	l.writes = append(l.writes, append([]byte(nil), p...))
	l.mu.Unlock()
	if l.drop[i] {
		return len(p), nil
	}
	return l.Transport.Write(p)
}

func TestDatagramHandshakeSurvivesLoss(t *testing.T) {
	for name, drops := range map[string]struct{ client, server map[int]bool }{
		"init-lost": {client: map[int]bool{0: true}},
		"resp-lost": {server: map[int]bool{0: true}},
	} {
		t.Run(name, func(t *testing.T) {
			p := newPair(t, true, nil)
			a, b := unixgramPair(t)
			host, nic := connPair(t, p, &lossy{Transport: a, drop: drops.client}, &lossy{Transport: b, drop: drops.server})
			exchange(t, host, nic)
			host.Close()
			nic.Close()
		})
	}
}

// With the Confirm lost, the initiator's first data frame completes the
// responder's handshake, and its messages are not lost.
func TestDatagramConfirmLostDataConfirms(t *testing.T) {
	p := newPair(t, true, nil)
	a, b := unixgramPair(t)
	type res struct {
		c   *Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := Server(b, p.nic)
		ch <- res{c, err}
	}()
	host, err := Client(&lossy{Transport: a, drop: map[int]bool{1: true}}, p.host, p.nicPub)
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	m := sampleMessages()[0]
	if err := host.Send(&m); err != nil {
		t.Fatal(err)
	}
	if err := host.Flush(); err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatalf("Server: %v", r.err)
	}
	defer r.c.Close()
	var got Message
	if err := r.c.Recv(&got); err != nil || got != m {
		t.Fatalf("first message: %+v %v", got, err)
	}
}

// A retransmitted Resp (the responder did not see our Confirm) makes the
// initiator confirm again, on datagram transports.
func TestDatagramDuplicateRespReconfirms(t *testing.T) {
	p := newPair(t, true, nil)
	ini, _ := NewInitiator(p.host, p.nicPub)
	res := NewResponder(p.nic)
	ini.Start()
	deliver(t, res, drain(t, ini))
	resp := drain(t, res)
	deliver(t, ini, resp)
	drain(t, ini) // the Confirm is lost
	res.Retransmit()
	deliver(t, ini, drain(t, res))
	deliver(t, res, drain(t, ini))
	if !res.Established() {
		t.Fatal("responder not established after the second Confirm")
	}
}

package remote

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// vsock: the host–DPU transport of virtual machines and some DPUs
// (AF_VSOCK). The standard library has no vsock, so the socket is made
// with x/sys/unix and wrapped in an os.File, which gives it the runtime's
// poller and deadlines.

func parseVsock(where string) (cid, port uint32, err error) {
	c, p, ok := strings.Cut(where, ":")
	if !ok {
		return 0, 0, fmt.Errorf("remote: vsock address %q: want CID:PORT", where)
	}
	if c == "any" {
		c = strconv.FormatUint(unix.VMADDR_CID_ANY, 10)
	}
	cv, err1 := strconv.ParseUint(c, 10, 32)
	pv, err2 := strconv.ParseUint(p, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("remote: vsock address %q: want CID:PORT, numbers (CID may be any to listen)", where)
	}
	return uint32(cv), uint32(pv), nil
}

type vsockAddr struct{ cid, port uint32 }

func (a vsockAddr) Network() string { return "vsock" }
func (a vsockAddr) String() string  { return fmt.Sprintf("%d:%d", a.cid, a.port) }

type vsockConn struct {
	*os.File
	local, remote vsockAddr
}

func (c *vsockConn) LocalAddr() net.Addr  { return c.local }
func (c *vsockConn) RemoteAddr() net.Addr { return c.remote }

func sockVM(sa unix.Sockaddr) vsockAddr {
	if vm, ok := sa.(*unix.SockaddrVM); ok {
		return vsockAddr{vm.CID, vm.Port}
	}
	return vsockAddr{}
}

func dialVsock(ctx context.Context, where string) (net.Conn, error) {
	cid, port, err := parseVsock(where)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("remote: vsock: %w", err)
	}
	f := os.NewFile(uintptr(fd), "vsock:"+where)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	var cerr error
	rc.Control(func(fd uintptr) { cerr = unix.Connect(int(fd), &unix.SockaddrVM{CID: cid, Port: port}) })
	if cerr == unix.EINPROGRESS {
		// Wait for the connection: writable, then SO_ERROR.
		if dl, ok := ctx.Deadline(); ok {
			f.SetWriteDeadline(dl)
		}
		werr := rc.Write(func(fd uintptr) bool {
			v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
			if err != nil {
				cerr = err
				return true
			}
			if v == int(unix.EINPROGRESS) || v == int(unix.EAGAIN) {
				return false
			}
			cerr = nil
			if v != 0 {
				cerr = unix.Errno(v)
			}
			return true
		})
		f.SetWriteDeadline(time.Time{})
		if werr != nil {
			cerr = werr
		}
	}
	if cerr != nil {
		f.Close()
		return nil, fmt.Errorf("remote: vsock connect %s: %w", where, cerr)
	}
	c := &vsockConn{File: f, remote: vsockAddr{cid, port}}
	rc.Control(func(fd uintptr) {
		if sa, err := unix.Getsockname(int(fd)); err == nil {
			c.local = sockVM(sa)
		}
	})
	return c, nil
}

type vsockListener struct {
	f    *os.File
	addr vsockAddr
}

func listenVsock(where string) (net.Listener, error) {
	_, port, err := parseVsock(where)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("remote: vsock: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("remote: vsock bind port %d: %w", port, err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("remote: vsock listen: %w", err)
	}
	l := &vsockListener{f: os.NewFile(uintptr(fd), "vsock-listener:"+where)}
	if sa, err := unix.Getsockname(fd); err == nil {
		l.addr = sockVM(sa)
	}
	return l, nil
}

func (l *vsockListener) Accept() (net.Conn, error) {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var nfd int
	var sa unix.Sockaddr
	var aerr error
	err = rc.Read(func(fd uintptr) bool {
		nfd, sa, aerr = unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		return aerr != unix.EAGAIN
	})
	if err != nil {
		return nil, err
	}
	if aerr != nil {
		return nil, aerr
	}
	return &vsockConn{File: os.NewFile(uintptr(nfd), "vsock"), local: l.addr, remote: sockVM(sa)}, nil
}

func (l *vsockListener) Close() error   { return l.f.Close() }
func (l *vsockListener) Addr() net.Addr { return l.addr }

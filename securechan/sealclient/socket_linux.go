//go:build linux

package sealclient

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// packetSocket is an AF_PACKET socket bound to one interface.
type packetSocket struct {
	fd int
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func openPacketSocket(ifindex int) (*packetSocket, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &packetSocket{fd: fd}, nil
}

func (s *packetSocket) send(frame []byte) error {
	_, err := unix.Write(s.fd, frame)
	return err
}

// recv reads one frame, waiting at most wait. Frames the socket itself
// sent (PACKET_OUTGOING) are skipped.
func (s *packetSocket) recv(buf []byte, wait time.Duration) (int, error) {
	ms := int(wait / time.Millisecond)
	if ms <= 0 {
		ms = 1
	}
	fds := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, ms)
	if err != nil {
		if err == unix.EINTR {
			return 0, os.ErrDeadlineExceeded
		}
		return 0, err
	}
	if n == 0 {
		return 0, os.ErrDeadlineExceeded
	}
	k, from, err := unix.Recvfrom(s.fd, buf, unix.MSG_DONTWAIT)
	if err != nil {
		if err == unix.EAGAIN {
			return 0, os.ErrDeadlineExceeded
		}
		return 0, err
	}
	if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
		return 0, os.ErrDeadlineExceeded
	}
	return k, nil
}

func (s *packetSocket) close() error { return unix.Close(s.fd) }

//go:build linux

package afpacket

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Socket is an AF_PACKET raw socket bound to one interface. One goroutine
// may receive while others send; Close must come after both have stopped.
type Socket struct {
	fd       int
	ifindex  int
	name     string
	sendOnly bool
	skipOut  bool
	oob      []byte // PACKET_AUXDATA for the one receiving goroutine

	// sendMu guards sendTo: Sendto writes the raw address into it. One
	// address for the socket's life keeps Send free of allocations.
	sendMu sync.Mutex
	sendTo unix.SockaddrLinklayer
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Open opens a raw socket on the interface ifname, in the calling thread's
// network namespace (see internal/nsexec.Do for another one).
func Open(ifname string, o Options) (*Socket, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("afpacket: %w", err)
	}
	proto := o.Protocol
	if proto == 0 {
		proto = unix.ETH_P_ALL
	}
	if o.SendOnly {
		// Protocol 0: the kernel delivers nothing to the socket.
		proto = 0
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(proto)))
	if err != nil {
		return nil, fmt.Errorf("afpacket: socket for %s: %w", ifname, err)
	}
	s := &Socket{fd: fd, ifindex: ifi.Index, name: ifname, sendOnly: o.SendOnly, skipOut: o.SkipOutgoing}
	// Sent frames carry the bound protocol, as the kernel's own default
	// would; for a single ethertype (which other frames would be mislabelled
	// with) 0, which has the kernel read the frame's own ethertype.
	s.sendTo = unix.SockaddrLinklayer{Ifindex: ifi.Index}
	if proto == unix.ETH_P_ALL {
		s.sendTo.Protocol = htons(unix.ETH_P_ALL)
	}
	fail := func(what string, err error) (*Socket, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("afpacket: %s on %s: %w", what, ifname, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: ifi.Index}); err != nil {
		return fail("bind", err)
	}
	if o.SendOnly {
		return s, nil
	}
	if o.SkipOutgoing {
		// Spares the copies; kernels before 4.20 lack it, and Recv also
		// skips outgoing frames by their packet type.
		_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	}
	// The kernel strips a received frame's outer VLAN tag into metadata
	// before packet sockets see it; auxdata gives it back, so that Recv
	// returns the frame as it was on the wire.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		return fail("PACKET_AUXDATA", err)
	}
	if o.Promisc {
		mreq := unix.PacketMreq{Ifindex: int32(ifi.Index), Type: unix.PACKET_MR_PROMISC}
		if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq); err != nil {
			return fail("promiscuous membership", err)
		}
	}
	poll := o.PollInterval
	if poll <= 0 {
		poll = DefaultPollInterval
	}
	tv := unix.NsecToTimeval(poll.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fail("SO_RCVTIMEO", err)
	}
	rcvbuf := o.RecvBuffer
	if rcvbuf <= 0 {
		rcvbuf = DefaultRecvBuffer
	}
	// Best effort: SO_RCVBUFFORCE needs CAP_NET_ADMIN.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf)
	s.oob = make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.TpacketAuxdata{}))))
	return s, nil
}

// Recv receives one frame into buf and returns it, with the VLAN tag the
// kernel moved into PACKET_AUXDATA put back after the MAC addresses. The
// frame is buf[:n], or a new slice when buf has no room for the tag. It
// returns ErrTimeout when nothing arrived within the poll interval.
func (s *Socket) Recv(buf []byte) ([]byte, error) {
	f, _, err := s.RecvFlags(buf, 0)
	return f, err
}

// RecvFlags is Recv with recvmsg flags (unix.MSG_DONTWAIT: ErrTimeout at
// once when no frame is queued) that also returns the frame's
// PACKET_AUXDATA status word (unix.TP_STATUS_*, e.g. TP_STATUS_CSUMNOTREADY
// for a locally sent frame whose checksum was left to the device).
func (s *Socket) RecvFlags(buf []byte, flags int) ([]byte, uint32, error) {
	if s.fd < 0 {
		return nil, 0, ErrClosed
	}
	if s.sendOnly {
		return nil, 0, fmt.Errorf("afpacket: recv on %s: the socket was opened SendOnly", s.name)
	}
	for {
		n, oobn, _, from, err := unix.Recvmsg(s.fd, buf, s.oob, flags)
		if err != nil {
			switch {
			case errors.Is(err, unix.EINTR):
				continue
			case errors.Is(err, unix.EAGAIN):
				return nil, 0, ErrTimeout
			}
			return nil, 0, fmt.Errorf("afpacket: recv on %s: %w", s.name, err)
		}
		if s.skipOut {
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
		}
		f, status := withTag(buf, n, s.oob[:oobn])
		return f, status, nil
	}
}

// withTag returns the frame received into buf[:n] with the VLAN tag the
// kernel moved into the auxdata control message put back in place, and the
// auxdata's status. The tag goes in buf when it has 4 bytes of room after
// the frame; otherwise the result is a new slice.
func withTag(buf []byte, n int, oob []byte) ([]byte, uint32) {
	frame := buf[:n]
	msgs, _ := unix.ParseSocketControlMessage(oob)
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_PACKET || m.Header.Type != unix.PACKET_AUXDATA ||
			len(m.Data) < int(unsafe.Sizeof(unix.TpacketAuxdata{})) {
			continue
		}
		// The control data need not be aligned for the struct: copy it.
		var aux unix.TpacketAuxdata
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&aux)), unsafe.Sizeof(aux)), m.Data)
		if aux.Status&unix.TP_STATUS_VLAN_VALID == 0 || n < 12 {
			return frame, aux.Status
		}
		tpid := uint16(0x8100)
		if aux.Status&unix.TP_STATUS_VLAN_TPID_VALID != 0 {
			tpid = aux.Vlan_tpid
		}
		var out []byte
		if n+4 <= len(buf) {
			out = buf[:n+4]
			copy(out[16:], frame[12:]) // copy moves overlapping bytes safely
		} else {
			out = make([]byte, n+4)
			copy(out, frame[:12])
			copy(out[16:], frame[12:])
		}
		binary.BigEndian.PutUint16(out[12:], tpid)
		binary.BigEndian.PutUint16(out[14:], aux.Vlan_tci)
		return out, aux.Status
	}
	return frame, 0
}

// Send writes frame on the interface as it is.
func (s *Socket) Send(frame []byte) error {
	if s.fd < 0 {
		return ErrClosed
	}
	s.sendMu.Lock()
	err := unix.Sendto(s.fd, frame, 0, &s.sendTo)
	s.sendMu.Unlock()
	if err != nil {
		return fmt.Errorf("afpacket: send on %s: %w", s.name, err)
	}
	return nil
}

// Ifindex is the bound interface's index (in the socket's namespace).
func (s *Socket) Ifindex() int { return s.ifindex }

// Name is the bound interface's name.
func (s *Socket) Name() string { return s.name }

// FD is the socket's descriptor, for callers that set options of their own
// (a fanout group, a BPF filter). It is -1 after Close.
func (s *Socket) FD() int { return s.fd }

// Close closes the socket; later calls return nil.
func (s *Socket) Close() error {
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	return err
}

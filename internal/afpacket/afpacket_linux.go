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

	"github.com/nicpath/nicpath/hal/wire"
)

// Socket is an AF_PACKET raw socket bound to one interface. One goroutine
// may receive while others send; Close must come after both have stopped.
type Socket struct {
	fd       int
	ifindex  int
	name     string
	sendOnly bool
	skipOut  bool
	vnet     bool

	// The one receiving goroutine's recvmsg arguments, kept here so that a
	// receive allocates nothing.
	oob   []byte // PACKET_AUXDATA
	rmsg  unix.Msghdr
	riov  unix.Iovec
	rfrom unix.RawSockaddrLinklayer

	// sendMu guards the sendmsg/sendmmsg arguments below: one address for
	// the socket's life (nil when the bound one does: see Open), and the
	// message vectors, reused so that sending allocates nothing (after
	// the first batch of a given size).
	sendMu sync.Mutex
	sendTo *unix.RawSockaddrLinklayer
	msgs   []unix.Mmsghdr
	iovs   []unix.Iovec
}

// zeroVnetHdr is the virtio-net header of a frame sent as it is: no
// checksum to complete, no segmentation.
var zeroVnetHdr [wire.VirtioNetHdrLen]byte

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
	s := &Socket{fd: fd, ifindex: ifi.Index, name: ifname, sendOnly: o.SendOnly, skipOut: o.SkipOutgoing, vnet: o.VnetHdr}
	// Sent frames go out of the bound interface. A socket bound to every
	// protocol (or, SendOnly, to none) sends with no address: the kernel
	// takes the bound interface (cached at bind, where an address costs a
	// copy and a lookup of the interface per frame) and reads each frame's
	// own ethertype. One bound to a single ethertype, which the bound
	// protocol would mislabel other frames with, names the interface and
	// protocol 0, which has the kernel read the frame's own ethertype too.
	if proto != unix.ETH_P_ALL && proto != 0 {
		s.sendTo = &unix.RawSockaddrLinklayer{Family: unix.AF_PACKET, Ifindex: int32(ifi.Index)}
	}
	fail := func(what string, err error) (*Socket, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("afpacket: %s on %s: %w", what, ifname, err)
	}
	if o.VnetHdr {
		// Before bind: the kernel refuses to change the header size of a
		// socket that is already receiving.
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
			return fail("PACKET_VNET_HDR", err)
		}
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
// frame is buf[:n], or a new slice when buf has no room for the tag; a
// frame longer than buf is cut to its first len(buf) bytes (RecvVnet
// reports ErrTruncated instead). It returns ErrTimeout when nothing
// arrived within the poll interval.
func (s *Socket) Recv(buf []byte) ([]byte, error) {
	f, _, err := s.RecvFlags(buf, 0)
	return f, err
}

// RecvFlags is Recv with recvmsg flags (unix.MSG_DONTWAIT: ErrTimeout at
// once when no frame is queued) that also returns the frame's
// PACKET_AUXDATA status word (unix.TP_STATUS_*, e.g. TP_STATUS_CSUMNOTREADY
// for a locally sent frame whose checksum was left to the device).
func (s *Socket) RecvFlags(buf []byte, flags int) ([]byte, uint32, error) {
	f, _, status, err := s.recv(buf, flags, false)
	return f, status, err
}

// RecvVnet is RecvFlags that also returns the frame's virtio-net header:
// on a socket opened with Options.VnetHdr, the kernel's word on the frame's
// offloads (a partial checksum's start and offset, a GSO super-frame's type
// and segment size), with offsets that count the VLAN tag put back; zero on
// other sockets. The frame lies at buf[wire.VirtioNetHdrLen:] on a VnetHdr
// socket (where the kernel wrote the header), at buf[0:] otherwise. A frame
// longer than buf is lost: ErrTruncated. It allocates nothing when buf has
// room for the tag.
func (s *Socket) RecvVnet(buf []byte, flags int) ([]byte, wire.VirtioNetHdr, uint32, error) {
	return s.recv(buf, flags, true)
}

// recv is RecvVnet; a frame longer than buf is ErrTruncated when strict,
// else cut to buf.
func (s *Socket) recv(buf []byte, flags int, strict bool) ([]byte, wire.VirtioNetHdr, uint32, error) {
	var h wire.VirtioNetHdr
	if s.fd < 0 {
		return nil, h, 0, ErrClosed
	}
	if s.sendOnly {
		return nil, h, 0, fmt.Errorf("afpacket: recv on %s: the socket was opened SendOnly", s.name)
	}
	if len(buf) == 0 || s.vnet && len(buf) <= wire.VirtioNetHdrLen {
		return nil, h, 0, fmt.Errorf("afpacket: recv on %s: buffer of %d bytes", s.name, len(buf))
	}
	for {
		n, oobn, err := s.recvmsg(buf, flags|unix.MSG_TRUNC)
		if err != nil {
			switch {
			case errors.Is(err, unix.EINTR):
				continue
			case errors.Is(err, unix.EAGAIN):
				return nil, h, 0, ErrTimeout
			}
			return nil, h, 0, fmt.Errorf("afpacket: recv on %s: %w", s.name, err)
		}
		if s.skipOut && s.rfrom.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if n > len(buf) {
			// MSG_TRUNC: n is the frame's real length; the rest was lost.
			if strict {
				return nil, h, 0, ErrTruncated
			}
			n = len(buf)
		}
		frame := buf
		if s.vnet {
			if n < wire.VirtioNetHdrLen {
				return nil, h, 0, fmt.Errorf("afpacket: recv on %s: %d bytes, shorter than the virtio-net header", s.name, n)
			}
			h = wire.DecodeVirtioNetHdr(buf)
			frame, n = buf[wire.VirtioNetHdrLen:], n-wire.VirtioNetHdrLen
		}
		f, status, tagged := withTag(frame, n, s.oob[:oobn])
		if tagged {
			// The kernel counted from the untagged frame.
			if h.NeedsCsum() {
				h.CsumStart += wire.VLANTagLen
			}
			if h.HdrLen > 0 {
				h.HdrLen += wire.VLANTagLen
			}
		}
		return f, h, status, nil
	}
}

// recvmsg is recvmsg(2) into buf with the socket's own control buffer and
// address, without the allocations of unix.Recvmsg (its Sockaddr). It
// returns the data length (the frame's real length with MSG_TRUNC) and the
// control length.
func (s *Socket) recvmsg(buf []byte, flags int) (n, oobn int, err error) {
	s.riov.Base = &buf[0]
	s.riov.SetLen(len(buf))
	s.rmsg = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&s.rfrom)), Namelen: uint32(unsafe.Sizeof(s.rfrom)), Iov: &s.riov}
	s.rmsg.SetIovlen(1)
	if len(s.oob) > 0 {
		s.rmsg.Control = &s.oob[0]
		s.rmsg.SetControllen(len(s.oob))
	}
	r, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.rmsg)), uintptr(flags))
	if e != 0 {
		return 0, 0, e
	}
	return int(r), int(s.rmsg.Controllen), nil
}

// withTag returns the frame received into buf[:n] with the VLAN tag the
// kernel moved into the auxdata control message put back in place, the
// auxdata's status, and whether a tag was put back. The tag goes in buf
// when it has 4 bytes of room after the frame; otherwise the result is a
// new slice.
func withTag(buf []byte, n int, oob []byte) ([]byte, uint32, bool) {
	frame := buf[:n]
	aux, ok := auxdataOf(oob)
	if !ok {
		return frame, 0, false
	}
	if aux.Status&unix.TP_STATUS_VLAN_VALID == 0 || n < 12 {
		return frame, aux.Status, false
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
	return out, aux.Status, true
}

// auxdataOf finds the PACKET_AUXDATA message among the control messages
// in oob, walking them in place (unix.ParseSocketControlMessage allocates).
func auxdataOf(oob []byte) (unix.TpacketAuxdata, bool) {
	var aux unix.TpacketAuxdata
	for len(oob) >= unix.SizeofCmsghdr {
		// The control data need not be aligned for the structs: copy.
		var h unix.Cmsghdr
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&h)), unix.SizeofCmsghdr), oob)
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			break
		}
		data := oob[unix.CmsgLen(0):l]
		if h.Level == unix.SOL_PACKET && h.Type == unix.PACKET_AUXDATA && len(data) >= int(unsafe.Sizeof(aux)) {
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&aux)), unsafe.Sizeof(aux)), data)
			return aux, true
		}
		next := unix.CmsgSpace(l - unix.CmsgLen(0))
		if next > len(oob) {
			break
		}
		oob = oob[next:]
	}
	return aux, false
}

// Send writes frame on the interface as it is (on a VnetHdr socket, behind
// a header that asks for nothing: no checksum to complete, no
// segmentation). It allocates nothing.
func (s *Socket) Send(frame []byte) error {
	if s.fd < 0 {
		return ErrClosed
	}
	s.sendMu.Lock()
	_, err := s.sendLocked(frame[:len(frame):len(frame)], nil)
	s.sendMu.Unlock()
	if err != nil {
		return fmt.Errorf("afpacket: send on %s: %w", s.name, err)
	}
	return nil
}

// SendBatch writes frames on the interface as Send does, as many as it can
// with one sendmmsg(2) call per 64, and returns how many were sent. When a
// frame is refused (too long, link down, …) it returns the frames sent
// before it and the error; the caller may go on after it. It allocates
// nothing once it has seen a batch of its size.
func (s *Socket) SendBatch(frames [][]byte) (int, error) {
	if s.fd < 0 {
		return 0, ErrClosed
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	done := 0
	for done < len(frames) {
		k := min(len(frames)-done, sendBatch)
		n, err := s.sendLocked(nil, frames[done:done+k])
		done += n
		if err != nil {
			return done, fmt.Errorf("afpacket: send on %s: %w", s.name, err)
		}
	}
	return done, nil
}

// sendBatch bounds one sendmmsg call: the binding's batch, and the vectors
// kept for it.
const sendBatch = 64

// sendLocked sends one frame (batch nil) with sendmsg, or up to sendBatch
// frames with sendmmsg; s.sendMu is held.
func (s *Socket) sendLocked(one []byte, batch [][]byte) (int, error) {
	k := len(batch)
	if batch == nil {
		k = 1
	}
	per := 1
	if s.vnet {
		per = 2
	}
	if len(s.msgs) < k {
		s.msgs = make([]unix.Mmsghdr, max(k, 1))
		s.iovs = make([]unix.Iovec, max(k, 1)*2)
	}
	for i := 0; i < k; i++ {
		f := one
		if batch != nil {
			f = batch[i]
		}
		iov := s.iovs[i*2 : i*2+per]
		if s.vnet {
			iov[0].Base = &zeroVnetHdr[0]
			iov[0].SetLen(len(zeroVnetHdr))
		}
		last := &iov[per-1]
		last.Base = nil
		if len(f) > 0 {
			last.Base = &f[0]
		}
		last.SetLen(len(f))
		s.msgs[i] = unix.Mmsghdr{Hdr: unix.Msghdr{Iov: &iov[0]}}
		if s.sendTo != nil {
			s.msgs[i].Hdr.Name = (*byte)(unsafe.Pointer(s.sendTo))
			s.msgs[i].Hdr.Namelen = uint32(unsafe.Sizeof(*s.sendTo))
		}
		s.msgs[i].Hdr.SetIovlen(per)
	}
	// First without waiting, as a raw system call: one that cannot block
	// leaves the Go scheduler out (no hand-off of the processor, nothing
	// for its monitor to take back). On a veth the call runs the
	// receiving side's softirq work too, long enough that the monitor
	// took the processor from a sender in an ordinary call and woke
	// another thread for it: the process's context switches per frame
	// halved without (measured under peerbed's CPS load). Only a full
	// socket buffer (EAGAIN) makes the call wait, as an ordinary one.
	wait := false
	for {
		var r uintptr
		var e unix.Errno
		switch {
		case batch == nil && !wait:
			r, _, e = unix.RawSyscall(unix.SYS_SENDMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.msgs[0].Hdr)), unix.MSG_DONTWAIT)
		case batch == nil:
			r, _, e = unix.Syscall(unix.SYS_SENDMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.msgs[0].Hdr)), 0)
		case !wait:
			r, _, e = unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.msgs[0])), uintptr(k), unix.MSG_DONTWAIT, 0, 0)
		default:
			r, _, e = unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.msgs[0])), uintptr(k), 0, 0, 0)
		}
		if batch == nil && e == 0 {
			r = 1
		}
		if e == unix.EINTR {
			continue
		}
		if e == unix.EAGAIN && !wait {
			wait = true
			continue
		}
		// Drop the references to the callers' frames.
		for i := 0; i < k; i++ {
			s.iovs[i*2+per-1].Base = nil
		}
		if e != 0 {
			return 0, e
		}
		return int(r), nil
	}
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

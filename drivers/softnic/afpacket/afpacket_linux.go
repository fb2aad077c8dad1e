//go:build linux

package afpacket

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/drivers/softnic"
)

// Binding moves frames between one softnic port and one interface.
type Binding struct {
	port    *softnic.Port
	ifname  string
	ifindex int
	fd      int
	log     *slog.Logger
	c       counters

	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Bind opens an AF_PACKET socket on the interface ifname (in the caller's
// network namespace) and starts moving frames between it and port.
func Bind(port *softnic.Port, ifname string, o Options) (*Binding, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("afpacket: %w", err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return nil, fmt.Errorf("afpacket: socket for %s: %w", ifname, err)
	}
	fail := func(what string, err error) (*Binding, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("afpacket: %s on %s: %w", what, ifname, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		return fail("bind", err)
	}
	// Older kernels lack PACKET_IGNORE_OUTGOING (4.20+); the read loop also
	// skips outgoing frames by their packet type.
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		return fail("PACKET_AUXDATA", err)
	}
	mreq := unix.PacketMreq{Ifindex: int32(ifi.Index), Type: unix.PACKET_MR_PROMISC}
	if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq); err != nil {
		return fail("promiscuous membership", err)
	}
	tv := unix.NsecToTimeval(pollInterval.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fail("SO_RCVTIMEO", err)
	}
	// A bigger receive buffer absorbs bursts while the NIC is busy; it is
	// best effort (SO_RCVBUFFORCE needs CAP_NET_ADMIN).
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Binding{port: port, ifname: ifname, ifindex: ifi.Index, fd: fd, done: make(chan struct{}),
		log: log.With("port", port.Info().Name, "interface", ifname)}
	b.wg.Add(2)
	go b.readLoop()
	go b.writeLoop()
	return b, nil
}

// Interface is the bound interface's name.
func (b *Binding) Interface() string { return b.ifname }

// Stats returns the binding's counters.
func (b *Binding) Stats() Stats { return b.c.snapshot() }

// Close stops the binding and closes its socket.
func (b *Binding) Close() error {
	b.closeOnce.Do(func() {
		close(b.done)
		b.wg.Wait()
		unix.Close(b.fd)
	})
	return nil
}

func (b *Binding) closed() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// readLoop reads frames from the interface, a batch at a time: one blocking
// read (bounded by pollInterval), then whatever else is already queued.
func (b *Binding) readLoop() {
	defer b.wg.Done()
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, 1<<16)
	}
	oob := make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.TpacketAuxdata{}))))
	frames := make([][]byte, 0, batch)
	for !b.closed() {
		frames = frames[:0]
		for len(frames) < batch {
			flags := 0
			if len(frames) > 0 {
				flags = unix.MSG_DONTWAIT
			}
			buf := bufs[len(frames)]
			// Leave room in front of the frame for a tag auxdata gives back.
			n, oobn, _, from, err := unix.Recvmsg(b.fd, buf[4:], oob, flags)
			if err != nil {
				if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
					b.c.rxErr.Add(1)
					b.log.Debug("read", "err", err)
				}
				break
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
			f, status := withTag(buf, n, oob[:oobn])
			if status&unix.TP_STATUS_CSUMNOTREADY != 0 {
				completeChecksum(f)
			}
			frames = append(frames, f)
		}
		if len(frames) == 0 {
			continue
		}
		// Counted first: Send runs the frames through the NIC to completion,
		// and whoever sees the result may look at the counters.
		b.c.rx.Add(uint64(len(frames)))
		if _, err := b.port.Send(frames); err != nil {
			b.log.Debug("send into the NIC", "err", err)
			return
		}
	}
}

// withTag returns the frame read into buf[4:4+n], with the VLAN tag the
// kernel moved into the auxdata control message put back in place (using
// the 4 bytes of room in front of it), and the auxdata's status.
func withTag(buf []byte, n int, oob []byte) ([]byte, uint32) {
	frame := buf[4 : 4+n]
	msgs, _ := unix.ParseSocketControlMessage(oob)
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_PACKET || m.Header.Type != unix.PACKET_AUXDATA ||
			len(m.Data) < int(unsafe.Sizeof(unix.TpacketAuxdata{})) || n < 12 {
			continue
		}
		aux := (*unix.TpacketAuxdata)(unsafe.Pointer(&m.Data[0]))
		if aux.Status&unix.TP_STATUS_VLAN_VALID == 0 {
			return frame, aux.Status
		}
		tpid := uint16(0x8100)
		if aux.Status&unix.TP_STATUS_VLAN_TPID_VALID != 0 {
			tpid = aux.Vlan_tpid
		}
		copy(buf[0:12], frame[:12])
		binary.BigEndian.PutUint16(buf[12:], tpid)
		binary.BigEndian.PutUint16(buf[14:], aux.Vlan_tci)
		return buf[:n+4], aux.Status
	}
	return frame, 0
}

// writeLoop moves the frames the NIC put in the port's ring to the
// interface. The ring has no wake-up, so an idle loop backs off up to
// maxIdleSleep.
func (b *Binding) writeLoop() {
	defer b.wg.Done()
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, 1<<16)
	}
	sizes := make([]int, batch)
	to := &unix.SockaddrLinklayer{Ifindex: b.ifindex, Protocol: htons(unix.ETH_P_ALL)}
	sleep := 50 * time.Microsecond
	for !b.closed() {
		n, err := b.port.Recv(bufs, sizes)
		if err != nil {
			b.log.Debug("recv from the NIC", "err", err)
		}
		if n == 0 {
			time.Sleep(sleep)
			sleep = min(sleep*2, maxIdleSleep)
			continue
		}
		sleep = 50 * time.Microsecond
		for i := 0; i < n; i++ {
			if err := unix.Sendto(b.fd, bufs[i][:sizes[i]], 0, to); err != nil {
				b.c.txErr.Add(1)
				b.log.Debug("write", "err", err, "len", sizes[i])
				continue
			}
			b.c.tx.Add(1)
		}
	}
}

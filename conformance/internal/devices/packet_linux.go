//go:build linux

package devices

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/hal"
)

// PacketHarness reaches a NIC's ports through AF_PACKET sockets on their
// far side: the peer of each port's veth, or the interface cabled to it.
// Frames written to a peer enter the NIC's port; frames the NIC sends out of
// a port arrive on its peer and are queued until Recv takes them.
type PacketHarness struct {
	socks map[hal.PortID]*psock
	// Leaks, when set, is called by CheckLeaks (e.g. "no XDP program left
	// on the NIC's interfaces").
	Leaks func() error
}

type psock struct {
	fd      int
	ifindex int
	name    string

	mu    sync.Mutex
	queue [][]byte
	ready chan struct{} // signalled when queue grows
	done  chan struct{}
	wg    sync.WaitGroup
}

// pollInterval bounds how long a reader blocks before it looks at done, so
// that Close returns promptly.
const pollInterval = 50 * time.Millisecond

// NewPacketHarness opens a raw socket on each peer interface (port → name),
// inside the network namespace at nsPath when it is not empty.
func NewPacketHarness(nsPath string, peers map[hal.PortID]string) (*PacketHarness, error) {
	h := &PacketHarness{socks: map[hal.PortID]*psock{}}
	err := InNetNS(nsPath, func() error {
		for port, name := range peers {
			s, err := openSock(name)
			if err != nil {
				return fmt.Errorf("harness: peer %s of port %d: %w", name, port, err)
			}
			h.socks[port] = s
		}
		return nil
	})
	if err != nil {
		h.Close()
		return nil, err
	}
	for _, s := range h.socks {
		s.wg.Add(1)
		go s.read()
	}
	return h, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func openSock(name string) (*psock, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	tv := unix.NsecToTimeval(pollInterval.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// The kernel strips a received frame's outer VLAN tag into metadata
	// before packet sockets see it; auxdata gives it back, so that the suite
	// sees the frame as it was on the wire.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		unix.Close(fd)
		return nil, err
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	return &psock{fd: fd, ifindex: ifi.Index, name: name, ready: make(chan struct{}, 1), done: make(chan struct{})}, nil
}

func (s *psock) read() {
	defer s.wg.Done()
	buf := make([]byte, 1<<16)
	oob := make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.TpacketAuxdata{}))))
	for {
		select {
		case <-s.done:
			return
		default:
		}
		n, oobn, _, from, err := unix.Recvmsg(s.fd, buf, oob, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue // our own Send
		}
		f := withTag(buf[:n], oob[:oobn])
		s.mu.Lock()
		s.queue = append(s.queue, f)
		s.mu.Unlock()
		select {
		case s.ready <- struct{}{}:
		default:
		}
	}
}

// withTag copies frame, putting back the VLAN tag the kernel moved into the
// auxdata control message.
func withTag(frame, oob []byte) []byte {
	msgs, _ := unix.ParseSocketControlMessage(oob)
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_PACKET || m.Header.Type != unix.PACKET_AUXDATA ||
			len(m.Data) < int(unsafe.Sizeof(unix.TpacketAuxdata{})) || len(frame) < 12 {
			continue
		}
		aux := (*unix.TpacketAuxdata)(unsafe.Pointer(&m.Data[0]))
		if aux.Status&unix.TP_STATUS_VLAN_VALID == 0 {
			continue
		}
		tpid := uint16(0x8100)
		if aux.Status&unix.TP_STATUS_VLAN_TPID_VALID != 0 {
			tpid = aux.Vlan_tpid
		}
		out := make([]byte, 0, len(frame)+4)
		out = append(out, frame[:12]...)
		out = binary.BigEndian.AppendUint16(out, tpid)
		out = binary.BigEndian.AppendUint16(out, aux.Vlan_tci)
		return append(out, frame[12:]...)
	}
	return append([]byte(nil), frame...)
}

// Send writes frames on the peer of port.
func (h *PacketHarness) Send(port hal.PortID, frames ...[]byte) error {
	s, ok := h.socks[port]
	if !ok {
		return fmt.Errorf("harness: port %d: %w", port, hal.ErrNotFound)
	}
	to := &unix.SockaddrLinklayer{Ifindex: s.ifindex, Protocol: htons(unix.ETH_P_ALL)}
	for _, f := range frames {
		if err := unix.Sendto(s.fd, f, 0, to); err != nil {
			return fmt.Errorf("harness: send on %s: %w", s.name, err)
		}
	}
	return nil
}

// Recv returns the frames queued on the peer of port, waiting for one until
// ctx is done.
func (h *PacketHarness) Recv(ctx context.Context, port hal.PortID, max int) ([][]byte, error) {
	s, ok := h.socks[port]
	if !ok {
		return nil, fmt.Errorf("harness: port %d: %w", port, hal.ErrNotFound)
	}
	for {
		s.mu.Lock()
		if len(s.queue) > 0 {
			k := min(max, len(s.queue))
			out := s.queue[:k:k]
			s.queue = append([][]byte(nil), s.queue[k:]...)
			s.mu.Unlock()
			return out, nil
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, nil
		case <-s.ready:
		}
	}
}

// Close closes the sockets.
func (h *PacketHarness) Close() error {
	for _, s := range h.socks {
		close(s.done)
		s.wg.Wait()
		unix.Close(s.fd)
	}
	h.socks = nil
	return nil
}

// CheckLeaks runs h.Leaks.
func (h *PacketHarness) CheckLeaks() error {
	if h.Leaks == nil {
		return nil
	}
	return h.Leaks()
}

// VethPeer returns the name of the other end of the veth name, in the
// namespace at nsPath (empty: the caller's). It asks ip(8): sysfs shows the
// namespace it was mounted in, not the one a thread entered.
func VethPeer(nsPath, name string) (string, error) {
	var links []struct {
		Link string `json:"link"`
	}
	if err := ipJSON(nsPath, &links, "link", "show", "dev", name); err != nil {
		return "", err
	}
	if len(links) != 1 || links[0].Link == "" {
		return "", fmt.Errorf("%s is not one end of a veth pair in this namespace; name its peer", name)
	}
	return links[0].Link, nil
}

// InNetNS runs fn on a locked OS thread inside the namespace at path (or
// directly when path is empty). Sockets opened there stay in it.
func InNetNS(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns %s: %w", path, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it dies with this goroutine rather
			// than run other code in the wrong namespace.
			errc <- errors.Join(ferr, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

//go:build linux

package devices

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/internal/afpacket"
	"github.com/nicpath/nicpath/internal/nsexec"
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
	sock *afpacket.Socket

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

func openSock(name string) (*psock, error) {
	// The suite compares frames as they were on the wire, so the tag the
	// kernel strips on receive is put back; our own Sends are not frames
	// the NIC sent.
	// A frame the peer's kernel left with a partial checksum (checksum
	// offload: the NIC under test's uplink keeps the kernel's defaults) is
	// completed as the wire would carry it; the virtio-net header says
	// exactly which frames are partial.
	sock, err := afpacket.Open(name, afpacket.Options{SkipOutgoing: true, PollInterval: pollInterval, VnetHdr: true})
	if err != nil {
		return nil, err
	}
	return &psock{sock: sock, ready: make(chan struct{}, 1), done: make(chan struct{})}, nil
}

func (s *psock) read() {
	defer s.wg.Done()
	buf := make([]byte, 1<<16)
	for {
		select {
		case <-s.done:
			return
		default:
		}
		f, vh, _, err := s.sock.RecvVnet(buf, 0)
		if errors.Is(err, afpacket.ErrTimeout) || errors.Is(err, afpacket.ErrTruncated) {
			continue
		}
		if err != nil {
			return
		}
		if vh.NeedsCsum() {
			if err := wire.CompleteChecksum(f, int(vh.CsumStart), int(vh.CsumOffset)); err != nil {
				continue // the kernel's offsets do not fit the frame: not a frame to compare
			}
		}
		f = append([]byte(nil), f...) // buf is read into again
		s.mu.Lock()
		s.queue = append(s.queue, f)
		s.mu.Unlock()
		select {
		case s.ready <- struct{}{}:
		default:
		}
	}
}

// Send writes frames on the peer of port.
func (h *PacketHarness) Send(port hal.PortID, frames ...[]byte) error {
	s, ok := h.socks[port]
	if !ok {
		return fmt.Errorf("harness: port %d: %w", port, hal.ErrNotFound)
	}
	for _, f := range frames {
		if err := s.sock.Send(f); err != nil {
			return fmt.Errorf("harness: %w", err)
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
		s.sock.Close()
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
// directly when path is empty). Sockets opened there stay in it. It is
// nsexec.Do, kept for the runner's callers.
func InNetNS(path string, fn func() error) error {
	return nsexec.Do(path, fn)
}

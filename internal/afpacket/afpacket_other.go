//go:build !linux

package afpacket

import (
	"fmt"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// Socket is an AF_PACKET socket; AF_PACKET is Linux only.
type Socket struct{}

func unsupported(ifname string) error {
	return fmt.Errorf("afpacket: %s: AF_PACKET is Linux only: %w", ifname, hal.ErrNotSupported)
}

// Open is Linux only: it returns an error wrapping hal.ErrNotSupported.
func Open(ifname string, o Options) (*Socket, error) { return nil, unsupported(ifname) }

// Recv is Linux only.
func (s *Socket) Recv(buf []byte) ([]byte, error) { return nil, unsupported("") }

// RecvFlags is Linux only.
func (s *Socket) RecvFlags(buf []byte, flags int) ([]byte, uint32, error) {
	return nil, 0, unsupported("")
}

// RecvVnet is Linux only.
func (s *Socket) RecvVnet(buf []byte, flags int) ([]byte, wire.VirtioNetHdr, uint32, error) {
	return nil, wire.VirtioNetHdr{}, 0, unsupported("")
}

// SendBatch is Linux only.
func (s *Socket) SendBatch(frames [][]byte) (int, error) { return 0, unsupported("") }

// Send is Linux only.
func (s *Socket) Send(frame []byte) error { return unsupported("") }

// Ifindex is 0.
func (s *Socket) Ifindex() int { return 0 }

// Name is empty.
func (s *Socket) Name() string { return "" }

// FD is -1.
func (s *Socket) FD() int { return -1 }

// Close does nothing.
func (s *Socket) Close() error { return nil }

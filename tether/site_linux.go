//go:build linux

package tether

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/internal/afpacket"
)

// OpenPort binds a port of the site to the interface ifname (in the calling
// thread's network namespace) through an AF_PACKET socket, and returns a
// function that reads it until ctx is done. The interface needs no address:
// the tether answers for the gateway itself.
func (s *Site) OpenPort(ifname string) (run func(ctx context.Context) error, err error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("tether: port %s: %w", ifname, err)
	}
	sock, err := afpacket.Open(ifname, afpacket.Options{SkipOutgoing: true, VnetHdr: true})
	if err != nil {
		return nil, err
	}
	var mac hal.MAC
	copy(mac[:], ifi.HardwareAddr)
	p := s.AddPort(ifname, mac, sock)
	return func(ctx context.Context) error {
		defer p.close(func() { sock.Close() })
		buf := make([]byte, wire.VirtioNetHdrLen+1<<16)
		seg := make([]byte, 1<<16)
		var sg wire.Segmenter
		for ctx.Err() == nil {
			f, h, _, err := sock.RecvVnet(buf, 0)
			if errors.Is(err, afpacket.ErrTimeout) {
				continue
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("tether: port %s: %w", ifname, err)
			}
			if h.IsGSO() {
				// A node's TSO/GSO super-frame: cut it to the nodes'
				// MTU, as a NIC would.
				if sg.Init(f, &h, s.cfg.MTU) != nil {
					s.stats.Dropped.Add(1)
					continue
				}
				for !sg.Done() {
					n, err := sg.Next(seg)
					if err != nil {
						s.stats.Dropped.Add(1)
						break
					}
					s.FromNode(ctx, p, seg[:n])
				}
				continue
			}
			if h.NeedsCsum() {
				if wire.CompleteChecksum(f, int(h.CsumStart), int(h.CsumOffset)) != nil {
					s.stats.Dropped.Add(1)
					continue
				}
			}
			s.FromNode(ctx, p, f)
		}
		return nil
	}, nil
}

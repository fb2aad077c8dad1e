//go:build !linux

package tether

import (
	"context"
	"fmt"

	"github.com/nicpath/nicpath/hal"
)

// OpenPort needs Linux's AF_PACKET sockets.
func (s *Site) OpenPort(ifname string) (func(ctx context.Context) error, error) {
	return nil, fmt.Errorf("tether: port %s: raw ports need Linux: %w", ifname, hal.ErrNotSupported)
}

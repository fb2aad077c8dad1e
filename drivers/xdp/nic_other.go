//go:build !linux

package xdp

import (
	"context"
	"fmt"

	"github.com/nicpath/nicpath/hal"
)

// NIC is the XDP driver; it exists only on Linux.
type NIC struct{ hal.NIC }

// Open fails: XDP is Linux's.
func Open(ctx context.Context, cfg Config) (*NIC, error) {
	return nil, fmt.Errorf("xdp: %w: XDP needs Linux", hal.ErrNotSupported)
}

//go:build !linux

package tcflower

import (
	"context"
	"fmt"

	"github.com/nicpath/nicpath/hal"
)

// Open needs Linux's tc; elsewhere it returns an error wrapping
// hal.ErrNotSupported.
func Open(ctx context.Context, cfg Config) (*NIC, error) {
	return nil, fmt.Errorf("tcflower: %w", hal.Unsupported(driverName, "os", "tc-flower is a Linux facility"))
}

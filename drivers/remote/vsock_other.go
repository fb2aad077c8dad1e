//go:build !linux

package remote

import (
	"context"
	"fmt"
	"net"

	"github.com/nicpath/nicpath/hal"
)

func dialVsock(ctx context.Context, where string) (net.Conn, error) {
	return nil, fmt.Errorf("remote: vsock: %w: only on Linux", hal.ErrNotSupported)
}

func listenVsock(where string) (net.Listener, error) {
	return nil, fmt.Errorf("remote: vsock: %w: only on Linux", hal.ErrNotSupported)
}

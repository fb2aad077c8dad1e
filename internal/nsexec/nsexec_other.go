//go:build !linux

package nsexec

import (
	"fmt"

	"github.com/nicpath/nicpath/hal"
)

// Do runs fn when path is empty; network namespaces are Linux only, so any
// other path is an error wrapping hal.ErrNotSupported.
func Do(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	return fmt.Errorf("nsexec: netns %s: network namespaces are Linux only: %w", path, hal.ErrNotSupported)
}

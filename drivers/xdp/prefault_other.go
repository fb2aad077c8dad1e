//go:build !linux

package xdp

// prefault does nothing where the table has no backend that could use it.
func prefault[T any](s []T) {}

//go:build !linux

package peerbed

// CanRun says whether this machine can build a bed, and if not why: the bed
// is made of Linux network namespaces.
func CanRun() (bool, string) { return false, "network namespaces are Linux only" }

//go:build !unix

package ctlsock

import "os"

// lockedPrivateDir makes a private directory in parent. Without flock
// there is no lock: RemoveLeftovers leaves every directory alone.
func lockedPrivateDir(parent string) (string, *os.File, error) {
	dir, err := os.MkdirTemp(parent, ".c")
	if err != nil {
		return "", nil, err
	}
	f, err := os.Open(dir)
	if err != nil {
		os.Remove(dir)
		return "", nil, err
	}
	return dir, f, nil
}

// removeLeftover cannot tell a live daemon's directory from a leftover
// without flock: it removes nothing.
func removeLeftover(string) bool { return false }

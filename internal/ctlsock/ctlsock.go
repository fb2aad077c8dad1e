// Package ctlsock gives a daemon's control socket (a unix socket at a
// configured path) its lifecycle, the same for every nicpath daemon
// (vswitchd and gatewayd through package agent, tetherd through package
// tether):
//
//   - Listen binds the socket with its final mode, 0600, with no moment in
//     which the file at the path has another;
//   - a socket file left at the path by a daemon that did not shut down
//     (nobody listens on it) is replaced, but never one a live daemon
//     answers on, nor a file that is not a socket;
//   - the private directories in which sockets are bound (.cNNNNNNNNNN
//     beside the path) that a crash left behind are removed, but never
//     one a live daemon is binding in: a daemon holds an flock on its
//     private directory for as long as the directory exists;
//   - Remove removes the file at the path only while it is the one this
//     listener created: a daemon started on the same path after this one
//     stopped keeps its socket.
package ctlsock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"time"
)

// ErrLive is in the error of a Listen on a path a live daemon answers on.
var ErrLive = errors.New("another daemon answers on it")

// Listener is a control socket bound at its path.
type Listener struct {
	*net.UnixListener
	path string
	fi   os.FileInfo // the socket file as Listen created it
}

// Path is the socket's path.
func (l *Listener) Path() string { return l.path }

// FileInfo describes the socket file as Listen created it.
func (l *Listener) FileInfo() os.FileInfo { return l.fi }

// Remove removes the socket file if it is still the one Listen created.
// It does not close the listener.
func (l *Listener) Remove() {
	if now, err := os.Lstat(l.path); err == nil && os.SameFile(now, l.fi) {
		os.Remove(l.path)
	}
}

// Listen listens on the control socket at path (see the package doc).
// Errors start with "control socket PATH: ".
func Listen(path string) (*Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("control socket %s: the file exists and is not a socket (remove it, or configure another control path)", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: %w", path, ErrLive)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			// Not known to be stale (a live daemon too busy to
			// accept, a socket this process may not use): left alone.
			return nil, fmt.Errorf("control socket %s: exists, and whether a daemon answers on it is unknown: %w", path, err)
		}
		os.Remove(path) // stale: nobody listens on it
	}
	RemoveLeftovers(filepath.Dir(path))
	l, fi, err := bindPrivately(path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return &Listener{UnixListener: l, path: path, fi: fi}, nil
}

// privateName is the shape of the private directories bindPrivately makes
// (os.MkdirTemp's ".c" and a random uint32 in decimal).
var privateName = regexp.MustCompile(`^\.c[0-9]{1,10}$`)

// bindPrivately creates the socket at path with its final mode, 0600 (the
// socket changes the daemon: only its owner may use it), with no moment in
// which the file at path has another: bound at a socket file made with
// the process's umask and then chmod'ed, it would answer anyone the umask
// lets in until the chmod. The socket is bound in a directory of its own
// beside path (mode 0700: nobody else reaches what is in it), chmod'ed
// there, then hard-linked to path, which fails rather than replace a file
// another daemon put there meanwhile; the private name and directory are
// removed. Setting the umask around the bind instead would change it for
// the whole process, and a file or directory another goroutine creates
// meanwhile would get the socket's 0177 (a directory nobody may enter).
//
// The private name, .cNNNNNNNNNN/s beside path, is at most 14 bytes, as
// long as vswitchd.sock's own: a path a few bytes short of the kernel's
// limit for socket addresses (107 bytes) may not bind with a shorter last
// element.
//
// The directory is flock'ed from just after its creation until after its
// removal, so that RemoveLeftovers (another daemon starting beside this
// one) leaves it alone. A directory RemoveLeftovers took before the lock
// (the moment between mkdir and flock) is found gone or replaced once the
// lock is held, and another is made (a few times at most).
func bindPrivately(path string) (*net.UnixListener, os.FileInfo, error) {
	var err error
	for range 5 {
		var dir string
		var lock *os.File
		dir, lock, err = lockedPrivateDir(filepath.Dir(path))
		if err != nil {
			if errors.Is(err, errTaken) {
				continue
			}
			return nil, nil, err
		}
		l, fi, err := bindIn(dir, path)
		os.RemoveAll(dir)
		lock.Close() // the lock goes once the directory is gone
		return l, fi, err
	}
	return nil, nil, err
}

// errTaken: the private directory was removed by another daemon's
// RemoveLeftovers before this one locked it.
var errTaken = errors.New("private directory removed before it was locked")

// bindIn binds the socket at dir/s, chmods it and links it to path.
func bindIn(dir, path string) (*net.UnixListener, os.FileInfo, error) {
	tmp := filepath.Join(dir, "s")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, nil, err
	}
	// The file at path is removed by Remove, and only while it is this
	// one; the private name goes with its directory.
	l.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		l.Close()
		return nil, nil, err
	}
	if err := os.Link(tmp, path); err != nil {
		l.Close()
		if errors.Is(err, os.ErrExist) {
			return nil, nil, errors.New("another daemon created it meanwhile")
		}
		return nil, nil, err
	}
	fi, err := os.Lstat(path)
	if err != nil {
		l.Close()
		return nil, nil, err
	}
	return l, fi, nil
}

// RemoveLeftovers removes from dir the private directories (.cNNNNNNNNNN,
// holding nothing or a socket named s) that a daemon which crashed while
// binding its control socket left behind, and returns their names. A
// directory is a leftover when nobody holds its flock: a daemon locks its
// private directory right after making it and keeps the lock until the
// directory is removed, and the kernel drops the lock when the daemon
// dies, however it dies. A directory that is locked, not this user's, a
// symbolic link, or holding anything else is left alone.
func RemoveLeftovers(dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var removed []string
	for _, e := range ents {
		if !e.IsDir() || !privateName.MatchString(e.Name()) {
			continue
		}
		if removeLeftover(filepath.Join(dir, e.Name())) {
			removed = append(removed, e.Name())
		}
	}
	return removed
}

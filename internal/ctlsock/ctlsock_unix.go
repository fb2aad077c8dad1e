//go:build unix

package ctlsock

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// lockedPrivateDir makes a private directory in parent and locks it.
func lockedPrivateDir(parent string) (string, *os.File, error) {
	dir, err := os.MkdirTemp(parent, ".c")
	if err != nil {
		return "", nil, err
	}
	f, err := os.Open(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", nil, errTaken
		}
		os.Remove(dir)
		return "", nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		os.Remove(dir)
		return "", nil, err
	}
	held, err1 := f.Stat()
	now, err2 := os.Lstat(dir)
	if err1 != nil || err2 != nil || !os.SameFile(held, now) {
		f.Close()
		return "", nil, errTaken
	}
	return dir, f, nil
}

func removeLeftover(dir string) bool {
	f, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.IsDir() {
		return false
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Geteuid() {
		return false
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return false // a live daemon's (or undecidable): left alone
	}
	names, err := f.Readdirnames(-1)
	if err != nil || len(names) > 1 || (len(names) == 1 && names[0] != "s") {
		return false
	}
	if len(names) == 1 {
		if err := unix.Unlinkat(int(f.Fd()), "s", 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return false
		}
	}
	// Still the directory locked (not one made meanwhile under the
	// same name after another daemon removed this one)?
	if now, err := os.Lstat(dir); err != nil || !os.SameFile(now, fi) {
		return false
	}
	return os.Remove(dir) == nil
}

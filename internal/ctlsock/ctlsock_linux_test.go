//go:build linux

package ctlsock

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestControlSocketBornWithItsMode: the file at the control path has mode
// 0600 from the moment it appears: it is never created with the umask's
// mode and chmod'ed after (until the chmod, anyone the umask let in could
// connect and change the switch). The directory's inotify events tell: the
// file's creation at the path is the only event of its name, with no
// attribute change after it. Nothing else is left in the directory.
func TestControlSocketBornWithItsMode(t *testing.T) {
	for _, stale := range []bool{false, true} {
		dir := t.TempDir()
		path := filepath.Join(dir, "ctl.sock")
		if stale {
			// A socket file nobody listens on is replaced the same way.
			l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			l.SetUnlinkOnClose(false)
			l.Close()
		}
		fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_ATTRIB|unix.IN_MOVED_TO); err != nil {
			unix.Close(fd)
			t.Fatal(err)
		}
		l, err := Listen(path)
		if err != nil {
			unix.Close(fd)
			t.Fatal(err)
		}
		events := readInotify(t, fd)
		unix.Close(fd)
		l.Close()
		fi := l.FileInfo()
		if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
			t.Fatalf("control socket: %v, want a socket with mode 0600", fi.Mode())
		}
		var mine []uint32
		for _, e := range events {
			if e.name == "ctl.sock" {
				mine = append(mine, e.mask)
			}
		}
		if len(mine) != 1 || mine[0]&(unix.IN_CREATE|unix.IN_MOVED_TO) == 0 {
			t.Fatalf("stale %v: events of the control socket's name: %#x, want its creation alone (an IN_ATTRIB after it: its mode changed once it was there)", stale, mine)
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 1 || ents[0].Name() != "ctl.sock" {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Fatalf("the directory holds %q, want the socket alone", names)
		}
		l.Remove()
	}
}

type inotifyEvent struct {
	mask uint32
	name string
}

// readInotify reads the events queued on the non-blocking fd.
func readInotify(t *testing.T, fd int) []inotifyEvent {
	t.Helper()
	var out []inotifyEvent
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			out = append(out, inotifyEvent{mask: ev.Mask, name: string(bytes.TrimRight(name, "\x00"))})
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
}

//go:build unix

package ctlsock

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// When run as the helper process, it makes a private directory beside
// CTLSOCK_HELPER_DIR/x, binds a socket in it as Listen does, names the
// directory on stdout and waits to be killed: a daemon caught between
// creating its private directory and removing it. It exits when its stdin
// closes, so that it does not outlive a test process that died.
func TestMain(m *testing.M) {
	if dir := os.Getenv("CTLSOCK_HELPER_DIR"); dir != "" {
		d, _, err := lockedPrivateDir(dir)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		if _, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(d, "s"), Net: "unix"}); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println(filepath.Base(d))
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A private directory is left alone while the daemon that made it lives
// (it holds the directory's flock), and removed, by RemoveLeftovers or a
// Listen beside it, once that daemon is dead (the kernel dropped its lock).
func TestLeftoverOfACrashedDaemon(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "CTLSOCK_HELPER_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe() // held open: the helper lives while it is
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !privateName.MatchString(line[:len(line)-1]) {
		t.Fatalf("helper: %q %v", line, err)
	}
	name := line[:len(line)-1]

	if got := RemoveLeftovers(dir); len(got) != 0 {
		t.Fatalf("RemoveLeftovers removed %q, a live daemon's private directory", got)
	}
	l, err := Listen(filepath.Join(dir, "ctl.sock"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, name, "s")); err != nil {
		t.Fatalf("Listen beside a live daemon's private directory removed it: %v", err)
	}
	l.Close()
	l.Remove()

	cmd.Process.Kill() // the crash
	cmd.Wait()
	killed = true
	if got := RemoveLeftovers(dir); !slices.Equal(got, []string{name}) {
		t.Fatalf("RemoveLeftovers after the daemon died: removed %q, want [%s]", got, name)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("left in the directory: %v", ents)
	}
}

// Listen removes leftovers of the private directories' shape only: a
// directory of another name, one holding anything but the socket, a
// symbolic link, one locked by a live binder are kept.
func TestListenRemovesLeftoversOnly(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string, files ...string) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if err := os.WriteFile(filepath.Join(dir, name, f), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	mk(".c1234567890")      // crashed between mkdir and bind
	mk(".c42")              // crashed after bind (a socket file nobody listens on)
	mk(".c7", "s", "other") // holds something else: not ours
	mk(".cache")            // another name
	mk(".c12345678901")     // 11 digits: not MkdirTemp's
	mk("target")            // a symlink's target
	if err := os.Symlink("target", filepath.Join(dir, ".c99")); err != nil {
		t.Fatal(err)
	}
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, ".c42", "s"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	live, f, err := lockedPrivateDir(dir) // a daemon binding right now
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	l, err := Listen(filepath.Join(dir, "ctl.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var names []string
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		names = append(names, e.Name())
	}
	want := []string{".c12345678901", ".c7", ".c99", ".cache", filepath.Base(live), "ctl.sock", "target"}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Fatalf("after Listen the directory holds %q, want %q", names, want)
	}
}

// Daemons starting side by side in one directory, each removing leftovers
// while the others bind, all get their sockets: a private directory taken
// between its mkdir and its lock is replaced, never a locked one removed.
func TestListenSideBySide(t *testing.T) {
	dir := t.TempDir()
	const daemons, rounds = 6, 15
	stop := make(chan struct{})
	var sweepers sync.WaitGroup
	for range 2 {
		sweepers.Add(1)
		go func() {
			defer sweepers.Done()
			for {
				select {
				case <-stop:
					return
				default:
					RemoveLeftovers(dir)
				}
			}
		}()
	}
	var wg sync.WaitGroup
	errs := make(chan error, daemons*rounds)
	for i := range daemons {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := filepath.Join(dir, fmt.Sprintf("d%d.sock", i))
			for range rounds {
				l, err := Listen(path)
				if err != nil {
					errs <- err
					return
				}
				c, err := net.DialTimeout("unix", path, 10*time.Second)
				if err != nil {
					errs <- fmt.Errorf("%s just bound: %w", path, err)
				} else {
					c.Close()
				}
				l.Close()
				l.Remove()
			}
		}()
	}
	wg.Wait()
	close(stop)
	sweepers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left in the directory: %v", ents)
	}
}

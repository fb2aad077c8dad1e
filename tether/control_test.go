package tether

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/control"
	"github.com/nicpath/nicpath/internal/ctlsock"
)

// serveTetherControl runs ServeControl on path, answering "tether" with
// role, until the test ends; it returns once the socket answers, and the
// channel on which ServeControl's result arrives.
func serveTetherControl(t *testing.T, ctx context.Context, path, role string) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		done <- ServeControl(ctx, path, ControlHandler{Status: func() Status { return Status{Role: role} }})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := tetherRole(path)
		if err == nil && got == role {
			return done
		}
		select {
		case err := <-done:
			t.Fatalf("ServeControl on %s: %v", path, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the control socket at %s never answered as %s: %q %v", path, role, got, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func tetherRole(path string) (string, error) {
	var s Status
	err := (&control.Client{Path: path, Timeout: 5 * time.Second}).Call(context.Background(), "tether", nil, &s)
	return s.Role, err
}

// The tether daemon's control socket has vswitchd's lifecycle: mode 0600
// from its creation (not the umask's), a second daemon on a live socket is
// refused and the first keeps answering, a file that is not a socket is
// left alone, and a daemon that stops removes only its own socket file.
func TestServeControlLifecycle(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tether.sock")
	ctx1, stop1 := context.WithCancel(context.Background())
	defer stop1()
	done1 := serveTetherControl(t, ctx1, path, "anchor")

	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket: %v, want a socket with mode 0600", fi.Mode())
	}

	// A second daemon on the live socket is refused at once.
	ctx2, stop2 := context.WithCancel(context.Background())
	defer stop2()
	done2 := make(chan error, 1)
	go func() {
		done2 <- ServeControl(ctx2, path, ControlHandler{Status: func() Status { return Status{Role: "tether"} }})
	}()
	select {
	case err := <-done2:
		if !errors.Is(err, ctlsock.ErrLive) {
			t.Errorf("second ServeControl on a live socket: %v, want %v", err, ctlsock.ErrLive)
		}
	case <-time.After(30 * time.Second):
		stop2()
		t.Fatal("a second ServeControl on a live socket was not refused (it took the socket over)")
	}
	if role, err := tetherRole(path); err != nil || role != "anchor" {
		t.Fatalf("the first daemon after the second was refused: %q %v", role, err)
	}

	// The first stops: its socket file goes.
	stop1()
	if err := <-done1; err != nil {
		t.Fatalf("ServeControl after its context ended: %v", err)
	}
	waitGone(t, path)

	// A file that is not a socket is neither removed nor replaced.
	if err := os.WriteFile(path, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = ServeControl(context.Background(), path, ControlHandler{Status: func() Status { return Status{} }})
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("ServeControl on a regular file: %v", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "keep me" {
		t.Errorf("the regular file at the control path was changed: %q %v", b, err)
	}
}

// A daemon whose stop comes after a successor took the path over (its
// socket file was replaced as stale meanwhile) leaves the successor's.
func TestServeControlStopKeepsSuccessors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tether.sock")
	ctx1, stop1 := context.WithCancel(context.Background())
	defer stop1()
	done1 := serveTetherControl(t, ctx1, path, "anchor")
	// The first one's socket file is moved away (as a stale file would be
	// replaced) and a successor starts on the path.
	if err := os.Rename(path, path+".old"); err != nil {
		t.Fatal(err)
	}
	ctx2, stop2 := context.WithCancel(context.Background())
	defer stop2()
	serveTetherControl(t, ctx2, path, "tether")
	stop1()
	if err := <-done1; err != nil {
		t.Fatal(err)
	}
	if role, err := tetherRole(path); err != nil || role != "tether" {
		t.Fatalf("the successor's socket after the first one stopped: %q %v", role, err)
	}
}

func waitGone(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is left after its daemon stopped", path)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nicpath/nicpath/control"
)

// echo answers every control request with its command.
func echo(_ context.Context, req control.Request) (any, error) { return req.Cmd, nil }

var okMetrics = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "up 1\n") })

// served is a test's endpoints, serving until stopped.
type served struct {
	e      *endpoints
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func serveEndpoints(t *testing.T, path, metricsAddr string) *served {
	t.Helper()
	e, err := listenEndpoints(slog.New(slog.DiscardHandler), path, metricsAddr, okMetrics)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{e: e, cancel: cancel}
	s.e.serve(ctx, &s.wg, echo, make(chan error, 1))
	t.Cleanup(s.shutdown)
	return s
}

// shutdown is what a daemon's Run then Close do.
func (s *served) shutdown() {
	s.cancel()
	s.e.stop()
	s.wg.Wait()
	s.e.close()
}

func answers(path string) error {
	c := &control.Client{Path: path, Timeout: 5 * time.Second}
	var got string
	if err := c.Call(context.Background(), "ping", nil, &got); err != nil {
		return err
	}
	if got != "ping" {
		return errors.New("answered " + got)
	}
	return nil
}

// The control socket answers (to its owner only) and the metrics endpoint
// serves while the endpoints run; once stopped, neither answers and the
// socket file is gone; close after stop is harmless.
func TestEndpointsLifecycle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	s := serveEndpoints(t, path, "127.0.0.1:0")
	if err := answers(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v %v, want a socket with mode 0600", fi.Mode(), err)
	}
	url := "http://" + s.e.metricsAddr().String() + "/metrics"
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "up 1\n" {
		t.Fatalf("metrics: %q", body)
	}
	s.shutdown()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the control socket file is left after shutdown (%v)", err)
	}
	if err := answers(path); err == nil {
		t.Error("the control socket answers after shutdown")
	}
	cl := &http.Client{Timeout: 5 * time.Second}
	if resp, err := cl.Get(url); err == nil {
		resp.Body.Close()
		t.Error("the metrics endpoint answers after shutdown")
	}
	s.e.close()
	s.e.stop()
}

// Endpoints that never served (the daemon failed later in its start) are
// released by close alone.
func TestEndpointsCloseWithoutServe(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	e, err := listenEndpoints(slog.New(slog.DiscardHandler), path, "127.0.0.1:0", okMetrics)
	if err != nil {
		t.Fatal(err)
	}
	addr := e.metricsAddr().String()
	e.close()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the control socket file is left (%v)", err)
	}
	// The metrics address is free again.
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the metrics address is still taken: %v", err)
	}
	l.Close()
}

// A socket file nobody listens on (a daemon killed before it could remove
// it) is replaced.
func TestEndpointsReplaceStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("no stale socket to start from: %v", err)
	}
	serveEndpoints(t, path, "")
	if err := answers(path); err != nil {
		t.Fatalf("after replacing a stale socket: %v", err)
	}
}

// A second daemon on a socket a live one answers on is refused, saying
// so, and the first one keeps its socket.
func TestEndpointsSecondRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	serveEndpoints(t, path, "")
	_, err := listenEndpoints(slog.New(slog.DiscardHandler), path, "", okMetrics)
	if err == nil || !strings.Contains(err.Error(), "another daemon answers on it") {
		t.Fatalf("second listen on a live socket: %v", err)
	}
	if err := answers(path); err != nil {
		t.Fatalf("the first daemon's socket after the second was refused: %v", err)
	}
}

// A file at the control path that is not a socket is not removed: the
// daemon is refused, saying so.
func TestEndpointsNotASocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	if err := os.WriteFile(path, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := listenEndpoints(slog.New(slog.DiscardHandler), path, "", okMetrics)
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("listen on a regular file: %v", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "keep me" {
		t.Fatalf("the file at the control path was changed: %q %v", b, err)
	}
}

// A daemon that stopped and a new one started on the same path: the first
// one's Close does not remove the second one's socket.
func TestEndpointsCloseKeepsSuccessorsSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	first, err := listenEndpoints(slog.New(slog.DiscardHandler), path, "", okMetrics)
	if err != nil {
		t.Fatal(err)
	}
	first.stop() // the first daemon's Run returned
	serveEndpoints(t, path, "")
	first.close() // and now its Close
	if err := answers(path); err != nil {
		t.Fatalf("the second daemon's socket after the first one's Close: %v", err)
	}
}

// A metrics address that cannot be had refuses the start and leaves no
// control socket behind.
func TestEndpointsMetricsTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	path := filepath.Join(t.TempDir(), "ctl.sock")
	_, err = listenEndpoints(slog.New(slog.DiscardHandler), path, l.Addr().String(), okMetrics)
	if err == nil || !strings.HasPrefix(err.Error(), "metrics: ") {
		t.Fatalf("metrics on a taken address: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused start left the control socket file (%v)", err)
	}
}

// A second daemon on the configuration of a running one is refused at its
// start with the control socket's error; the first one answers on.
func TestDaemonSecondOnSameSocket(t *testing.T) {
	path := hostAConfig(t, t.TempDir())
	r := startDaemon(t, path, nil)
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	if d, err := New(context.Background(), cfg); err == nil {
		d.Close()
		t.Fatal("a second daemon started on a live control socket")
	} else if !strings.Contains(err.Error(), "control socket "+cfg.Control+": another daemon answers on it") {
		t.Fatalf("second daemon: %v", err)
	}
	var s control.Show
	if err := call(t, r, "show", nil, &s); err != nil {
		t.Fatalf("the first daemon after the second was refused: %v", err)
	}
	r.stop()
	if _, err := os.Lstat(cfg.Control); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the control socket file is left after shutdown (%v)", err)
	}
}

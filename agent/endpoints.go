package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/nicpath/nicpath/control"
)

// endpoints are what a daemon serves beside its datapath: the control socket
// (JSON requests, one a line: package control) and, when the configuration
// has a metrics address, the Prometheus metrics over HTTP. The switch's
// daemon (Agent) and the gateway's (GatewayAgent) share their lifecycle:
//
//   - listenEndpoints at start, so that a daemon that cannot have its
//     socket or its address does not start;
//   - serve while the daemon runs;
//   - stop when Run returns: the socket no longer answers and its file is
//     gone, the metrics server shuts down (requests in flight get a moment
//     to finish);
//   - close at the daemon's Close: whatever stop did not release (Run
//     never ran) is released. Both may be called more than once.
//
// The socket file is removed only while it is the one this daemon created:
// a daemon started on the same path after this one stopped keeps its socket.
type endpoints struct {
	log     *slog.Logger
	path    string // the control socket's
	ctl     *net.UnixListener
	ctlFile os.FileInfo // the socket file as listen created it
	metricL net.Listener
	httpSrv *http.Server

	once sync.Once // stop's
}

// handler answers one control request.
type handler func(context.Context, control.Request) (any, error)

// metricsGrace bounds how long stop waits for metrics requests in flight.
const metricsGrace = 2 * time.Second

// listenEndpoints listens on the control socket path and, unless
// metricsAddr is empty, on metricsAddr with metrics served at /metrics. On
// an error nothing is left listening.
func listenEndpoints(log *slog.Logger, path, metricsAddr string, metrics http.Handler) (*endpoints, error) {
	e := &endpoints{log: log, path: path}
	var err error
	if e.ctl, e.ctlFile, err = listenControl(path); err != nil {
		return nil, err
	}
	if metricsAddr != "" {
		if e.metricL, err = net.Listen("tcp", metricsAddr); err != nil {
			e.close()
			return nil, fmt.Errorf("metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", metrics)
		e.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	}
	return e, nil
}

// listenControl listens on the control socket, replacing a stale socket
// file left by a daemon that did not shut down, but never one a live daemon
// answers on, nor a file that is not a socket. It returns the socket file's
// identity, for removing it only while it is this one.
func listenControl(path string) (*net.UnixListener, os.FileInfo, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, nil, fmt.Errorf("control socket %s: the file exists and is not a socket (remove it, or configure another control path)", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, nil, fmt.Errorf("control socket %s: another vswitchd answers on it", path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			// Not known to be stale (a live daemon too busy to
			// accept, a socket this process may not use): left alone.
			return nil, nil, fmt.Errorf("control socket %s: exists, and whether a daemon answers on it is unknown: %w", path, err)
		}
		os.Remove(path) // stale: nobody listens on it
	}
	l, fi, err := bindPrivately(path)
	if err != nil {
		return nil, nil, fmt.Errorf("control socket: %w", err)
	}
	return l, fi, nil
}

// bindPrivately creates the control socket at path with its final mode,
// 0600 (the socket changes the switch: only its owner may use it), with no
// moment in which the file at path has another: bound at a socket file
// made with the process's umask and then chmod'ed, it would answer anyone
// the umask lets in until the chmod. The socket is bound in a directory of
// its own beside path (mode 0700: nobody else reaches what is in it),
// chmod'ed there, then hard-linked to path, which fails rather than replace
// a file another daemon put there meanwhile; the private name and
// directory are removed. Setting the umask around the bind instead would
// change it for the whole process, and a file or directory another
// goroutine creates meanwhile would get the socket's 0177 (a directory
// nobody may enter).
//
// The private name, .cNNNNNNNNNN/s beside path, is at most 14 bytes, as
// long as vswitchd.sock's own: a path a few bytes short of the kernel's
// limit for socket addresses (107 bytes) may not bind with a shorter last
// element.
func bindPrivately(path string) (*net.UnixListener, os.FileInfo, error) {
	dir, err := os.MkdirTemp(filepath.Dir(path), ".c")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, nil, err
	}
	// The file at path is removed by stop, and only while it is this
	// one; the private name goes with its directory.
	l.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		l.Close()
		return nil, nil, err
	}
	if err := os.Link(tmp, path); err != nil {
		l.Close()
		if errors.Is(err, os.ErrExist) {
			return nil, nil, fmt.Errorf("%s: another daemon created it meanwhile", path)
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

// removeIfSame removes path if it is still the file fi describes.
func removeIfSame(path string, fi os.FileInfo) {
	if now, err := os.Lstat(path); err == nil && os.SameFile(now, fi) {
		os.Remove(path)
	}
}

// serve serves the control socket with do and the metrics endpoint, each
// on goroutines wg counts, until stop. A metrics server that fails is
// reported on errc if it has room.
func (e *endpoints) serve(ctx context.Context, wg *sync.WaitGroup, do handler, errc chan<- error) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.serveControl(ctx, do)
	}()
	if e.httpSrv != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.httpSrv.Serve(e.metricL); err != nil && !errors.Is(err, http.ErrServerClosed) {
				select {
				case errc <- fmt.Errorf("metrics: %w", err):
				default:
				}
			}
		}()
	}
}

// serveControl accepts control connections until the listener is closed,
// and returns once every connection it took is finished (ctx done
// interrupts those waiting for a request).
func (e *endpoints) serveControl(ctx context.Context, do handler) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := e.ctl.Accept()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				e.log.Warn("control socket", "err", err)
			}
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveLines(ctx, c, do)
		}()
	}
}

// metricsAddr is the address the metrics endpoint listens on, or nil.
func (e *endpoints) metricsAddr() net.Addr {
	if e == nil || e.metricL == nil {
		return nil
	}
	return e.metricL.Addr()
}

// stop stops answering: the control socket is closed and its file
// removed, the metrics server shut down within metricsGrace.
func (e *endpoints) stop() {
	if e == nil {
		return
	}
	e.once.Do(func() {
		e.ctl.Close()
		removeIfSame(e.path, e.ctlFile)
		if e.httpSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), metricsGrace)
			if err := e.httpSrv.Shutdown(ctx); err != nil {
				e.httpSrv.Close()
			}
			cancel()
		}
	})
}

// close releases what stop did not (stop when Run never ran).
func (e *endpoints) close() {
	if e == nil {
		return
	}
	e.stop()
	if e.metricL != nil {
		e.metricL.Close() // when Serve never took it
	}
}

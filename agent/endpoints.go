package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nicpath/nicpath/control"
	"github.com/nicpath/nicpath/internal/ctlsock"
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
// The control socket's own lifecycle (its mode from birth, a stale socket
// replaced but never a live daemon's, crash leftovers removed, the file
// removed only while it is this daemon's) is package internal/ctlsock's,
// shared with tetherd's.
type endpoints struct {
	log     *slog.Logger
	path    string // the control socket's
	ctl     *ctlsock.Listener
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
	if e.ctl, err = ctlsock.Listen(path); err != nil {
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
		e.ctl.Remove()
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

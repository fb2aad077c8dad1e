// Package etcdtest starts a real etcd server in process
// (go.etcd.io/etcd/server/v3/embed) for tests: one member on 127.0.0.1 with
// ports the kernel picked, its data in a test's temporary directory, and
// Stop/Start to play an outage (the same ports and data come back).
package etcdtest

import (
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is one embedded etcd member.
type Server struct {
	tb  testing.TB
	cfg *embed.Config
	e   *embed.Etcd
	// Endpoint is the client address, host:port.
	Endpoint string
}

// freePort asks the kernel for a free port on the loopback address.
func freePort(tb testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start starts a server whose data lives in tb.TempDir(); it stops at the
// end of the test. maxTxnOps raises etcd's limit on the operations of one
// transaction (0 keeps etcd's default, 128).
func Start(tb testing.TB, maxTxnOps uint) *Server {
	cfg := embed.NewConfig()
	cfg.Dir = tb.TempDir()
	cfg.Name = "nicpath-test"
	cu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", freePort(tb)))
	pu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", freePort(tb)))
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// The server logs every closed listener at error level when it stops;
	// tests stop it on purpose.
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// Tests make thousands of small writes: no fsync wait per write.
	cfg.UnsafeNoFsync = true
	if maxTxnOps > 0 {
		cfg.MaxTxnOps = maxTxnOps
	}
	// A million-key benchmark needs more than the default 2 GiB backend.
	cfg.QuotaBackendBytes = 8 << 30
	s := &Server{tb: tb, cfg: cfg, Endpoint: cu.Host}
	s.Start()
	tb.Cleanup(s.Stop)
	return s
}

// Start starts the server again after Stop, with the same data and ports.
func (s *Server) Start() {
	if s.e != nil {
		return
	}
	if s.cfg.ClusterState == "" || s.cfg.Dir != "" {
		s.cfg.ClusterState = embed.ClusterStateFlagNew
	}
	e, err := embed.StartEtcd(s.cfg)
	if err != nil {
		s.tb.Fatalf("etcd: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		s.tb.Fatal("etcd did not become ready in 30s")
	}
	s.e = e
}

// Stop stops the server; clients see it unreachable.
func (s *Server) Stop() {
	if s.e == nil {
		return
	}
	s.e.Close()
	<-s.e.Server.StopNotify()
	s.e = nil
}

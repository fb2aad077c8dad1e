// Package etcdtest starts a real etcd server in process
// (go.etcd.io/etcd/server/v3/embed) for tests: one member on 127.0.0.1 with
// ports the kernel picked when etcd bound them, its data in a test's
// temporary directory, and Stop/Start to play an outage (the same client
// port and data come back).
package etcdtest

import (
	"errors"
	"net/url"
	"syscall"
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

// Start starts a server whose data lives in tb.TempDir(); it stops at the
// end of the test. maxTxnOps raises etcd's limit on the operations of one
// transaction (0 keeps etcd's default, 128).
func Start(tb testing.TB, maxTxnOps uint) *Server {
	cfg := embed.NewConfig()
	cfg.Dir = tb.TempDir()
	cfg.Name = "nicpath-test"
	// Port 0: the kernel picks the ports as etcd binds them, and the
	// client's is read back from its listener. A port picked before, by a
	// listener opened and closed, is free for anything else on the machine
	// to take until etcd binds it.
	cu, _ := url.Parse("http://127.0.0.1:0")
	pu, _ := url.Parse("http://127.0.0.1:0")
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
	s := &Server{tb: tb, cfg: cfg}
	s.Start()
	tb.Cleanup(s.Stop)
	return s
}

// restartWait bounds how long a restart waits for its client port while
// something else holds it (a connection of the stopped server's still
// closing, another test's listener for a moment).
const restartWait = 30 * time.Second

// Start starts the server again after Stop, with the same data and ports.
func (s *Server) Start() {
	if s.e != nil {
		return
	}
	if s.cfg.ClusterState == "" || s.cfg.Dir != "" {
		s.cfg.ClusterState = embed.ClusterStateFlagNew
	}
	e, err := embed.StartEtcd(s.cfg)
	for deadline := time.Now().Add(restartWait); err != nil && s.Endpoint != "" &&
		errors.Is(err, syscall.EADDRINUSE) && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond) // a poll for the port, bounded
		e, err = embed.StartEtcd(s.cfg)
	}
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
	if s.Endpoint == "" {
		// The first start: the client port the kernel picked is the
		// server's from now on, so that clients find it again after an
		// outage. The peer port stays 0: a member alone never dials it.
		s.Endpoint = e.Clients[0].Addr().String()
		cu := url.URL{Scheme: "http", Host: s.Endpoint}
		s.cfg.ListenClientUrls, s.cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	}
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

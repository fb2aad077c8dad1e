package etcdtest_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/nicpath/nicpath/store/etcd/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// call runs f with a client of endpoint and a bounded context.
func call(t *testing.T, endpoint string, f func(context.Context, *clientv3.Client) error) {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f(ctx, c); err != nil {
		t.Fatal(err)
	}
}

func put(t *testing.T, endpoint, k, v string) {
	t.Helper()
	call(t, endpoint, func(ctx context.Context, c *clientv3.Client) error {
		_, err := c.Put(ctx, k, v)
		return err
	})
}

func get(t *testing.T, endpoint, k string) (v string) {
	t.Helper()
	call(t, endpoint, func(ctx context.Context, c *clientv3.Client) error {
		r, err := c.Get(ctx, k)
		if err == nil && len(r.Kvs) == 1 {
			v = string(r.Kvs[0].Value)
		}
		return err
	})
	return v
}

// TestPortsPickedAtBind: the server's client port is the one its listener
// holds (the kernel picked it as etcd bound port 0; no port was picked
// before and left free for another process to take), and Stop/Start brings
// the same port and data back.
func TestPortsPickedAtBind(t *testing.T) {
	srv := etcdtest.Start(t, 0)
	host, port, err := net.SplitHostPort(srv.Endpoint)
	if err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("endpoint %q: not the port the kernel picked (%v)", srv.Endpoint, err)
	}
	put(t, srv.Endpoint, "k", "before")
	ep := srv.Endpoint
	srv.Stop()
	if c, err := net.DialTimeout("tcp", ep, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still answers after Stop", ep)
	}
	srv.Start()
	if srv.Endpoint != ep {
		t.Fatalf("the endpoint moved over a restart: %s -> %s", ep, srv.Endpoint)
	}
	if v := get(t, srv.Endpoint, "k"); v != "before" {
		t.Fatalf("after a restart, k = %q, want %q", v, "before")
	}
}

// TestRestartWaitsForItsPort: during an outage something else holds the
// server's client port for a while (a listener of another test that the
// kernel gave the port to); Start waits for the port, bounded, rather than
// failing the test at the first EADDRINUSE.
func TestRestartWaitsForItsPort(t *testing.T) {
	srv := etcdtest.Start(t, 0)
	ep := srv.Endpoint
	srv.Stop()
	l, err := net.Listen("tcp", ep)
	if err != nil {
		t.Fatalf("holding %s: %v", ep, err)
	}
	// The holder lets go after a while: the scenario, not a wait for
	// anything.
	released := time.AfterFunc(time.Second, func() { l.Close() })
	defer released.Stop()
	srv.Start()
	if srv.Endpoint != ep {
		t.Fatalf("the endpoint moved over a restart: %s -> %s", ep, srv.Endpoint)
	}
	put(t, srv.Endpoint, "k", "after")
	if v := get(t, srv.Endpoint, "k"); v != "after" {
		t.Fatalf("k = %q after the restart", v)
	}
}

package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/store"
	"github.com/nicpath/nicpath/store/etcd/etcdtest"
)

func nicstore(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

// TestPublishShowStatus: a policy published through the command is the
// stored state (show prints it back), and status lists every host of it,
// with the ones that never reported said so.
func TestPublishShowStatus(t *testing.T) {
	srv := etcdtest.Start(t, 0)
	spec := "etcd://" + srv.Endpoint + "/nicstore-test/"
	code, out, errOut := nicstore(t, "-store", spec, "publish", "../../../../examples/policies/two-tenants.yaml")
	if code != 0 || !strings.Contains(out, "2 hosts") {
		t.Fatalf("publish: %d %q %q", code, out, errOut)
	}
	code, out, errOut = nicstore(t, "-store", spec, "show")
	if code != 0 || !strings.Contains(out, "blue-web-1") || !strings.Contains(out, "# "+spec+" at revision") {
		t.Fatalf("show: %d %q %q", code, out, errOut)
	}
	// host-a reports; host-b never did.
	s, err := store.Open(spec, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	snap, err := s.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ReportStatus(context.Background(), store.StatusOf("host-a", snap)); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = nicstore(t, "-store", spec, "status")
	if code != 0 {
		t.Fatalf("status: %d %q", code, errOut)
	}
	var a, b string
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, "host-a"):
			a = l
		case strings.HasPrefix(l, "host-b"):
			b = l
		}
	}
	if !strings.Contains(a, "following") || !strings.Contains(a, "blue-web-2:2(active 1)") || !strings.Contains(b, "never reported") {
		t.Fatalf("status:\n%s", out)
	}
}

// TestMigrateRefusals: a migration the state does not allow fails with the
// manager's reason and changes nothing; bad command lines exit 2.
func TestMigrateRefusals(t *testing.T) {
	srv := etcdtest.Start(t, 0)
	spec := "etcd://" + srv.Endpoint + "/nicstore-test/"
	if code, _, e := nicstore(t, "-store", spec, "publish", "../../../../examples/policies/two-tenants.yaml"); code != 0 {
		t.Fatal(e)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"migrate", "ghost", "host-b"}, `no VM "ghost"`},
		{[]string{"migrate", "blue-web-2", "host-a"}, "already migrating"},
		{[]string{"migrate", "blue-web-1", "host-z"}, `no host "host-z"`},
		{[]string{"migrate", "-timeout", "200ms", "red-app-1", "host-a"}, "not installed on [host-a host-b]"},
	} {
		code, _, errOut := nicstore(t, append([]string{"-store", spec}, tc.args...)...)
		if code != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d, %q; want 1 and %q", tc.args, code, errOut, tc.want)
		}
	}
	// The abandoned migration left no shadow behind.
	code, out, _ := nicstore(t, "-store", spec, "show")
	if code != 0 || strings.Contains(out, "vm: red-app-1") {
		t.Fatalf("show after the abandoned migration:\n%s", out)
	}
	for _, args := range [][]string{{}, {"frobnicate"}, {"publish"}, {"migrate", "x"}, {"serve"}, {"-store"}} {
		if code, _, _ := nicstore(t, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
}

// TestServe: serve runs a member clients can use, and stops with its
// context.
func TestServe(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	client, peer := freeAddr(t), freeAddr(t)
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "-listen", client, "-peer", peer, "-data", dir, "-unsafe-no-fsync"}, io.Discard, io.Discard)
	}()
	deadline := time.Now().Add(30 * time.Second)
	spec := "etcd://" + client + "/serve-test/"
	for {
		code, _, _ := nicstore(t, "-store", spec, "publish", "../../../../examples/policies/two-tenants.yaml")
		if code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the served etcd never took a publish")
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("serve exited %d", code)
	}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestLeases: the leases a tether's broker keeps in the store (records as
// package tether/lease writes them) are listed, expired ones said so.
func TestLeases(t *testing.T) {
	srv := etcdtest.Start(t, 0)
	spec := "etcd://" + srv.Endpoint + "/nicstore-leases/"
	s, err := store.Open(spec, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	rec := func(addr, mac string, exp time.Time) store.Op {
		return store.Op{Key: "/nicstore-leases/leases/branch/" + addr, Value: []byte(`{"subnet":"branch","addr":"` + addr +
			`","mac":"` + mac + `","port":"p1","granted":"` + now.Format(time.RFC3339Nano) + `","expiry":"` + exp.Format(time.RFC3339Nano) + `"}`)}
	}
	if _, err := s.(*store.KVStore).KV().Txn(context.Background(), []store.Op{
		rec("10.0.1.10", "02:00:00:00:00:0a", now.Add(time.Hour)), rec("10.0.1.11", "02:00:00:00:00:0b", now.Add(-time.Minute)),
	}); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := nicstore(t, "-store", spec, "leases")
	if code != 0 || !strings.Contains(out, "10.0.1.10  02:00:00:00:00:0a  p1") || !strings.Contains(out, "expired") || !(strings.Contains(out, "in 59m") || strings.Contains(out, "in 1h0m0s")) {
		t.Fatalf("leases: %d\n%s%s", code, out, errOut)
	}
}

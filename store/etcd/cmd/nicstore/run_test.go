package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"regexp"
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

// TestServe: serve runs a member clients can use on the port the kernel
// picked when etcd bound it (port 0: the ready line names the address),
// and stops with its context.
func TestServe(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		code := run(ctx, []string{"serve", "-listen", "127.0.0.1:0", "-data", dir, "-unsafe-no-fsync"}, pw, io.Discard)
		pw.Close()
		done <- code
	}()
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, "ready: ") {
				ready <- l
			}
		}
		close(ready)
	}()
	var line string
	select {
	case line = <-ready:
	case <-time.After(60 * time.Second):
		t.Fatal("serve never said ready")
	}
	m := regexp.MustCompile(`^ready: etcd://(127\.0\.0\.1:(\d+))/ `).FindStringSubmatch(line)
	if m == nil || m[2] == "0" {
		t.Fatalf("ready line %q: want the address the kernel picked", line)
	}
	spec := "etcd://" + m[1] + "/serve-test/"
	// Ready means clients can connect: the first publish is taken.
	if code, _, errOut := nicstore(t, "-store", spec, "publish", "../../../../examples/policies/two-tenants.yaml"); code != 0 {
		t.Fatalf("publish to the served etcd: %d %s", code, errOut)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("serve exited %d", code)
	}
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

package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/agent"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/store"
	"github.com/nicpath/nicpath/store/etcd/etcdtest"
)

// TestCheckAgainstEtcd: this build knows etcd://; -check loads the state
// from the cluster and checks it for the configured host.
func TestCheckAgainstEtcd(t *testing.T) {
	srv := etcdtest.Start(t, 0)
	spec := "etcd://" + srv.Endpoint + "/vswitchd-test/"
	st, err := policy.LoadFile("../../../../examples/policies/two-tenants.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(spec, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.(store.Writer).Publish(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		host string
		code int
		want string
	}{
		{"host-a", 0, "the state in " + spec + " runs on host-a"},
		{"host-q", 1, `host "host-q"`},
	} {
		cfg := filepath.Join(dir, tc.host+".yaml")
		doc := "host: " + tc.host + "\ndriver: softnic\nbinding: none\nstore: " + spec + "\nstore_timeout: 5s\nuplink: up0\ncontrol: " + filepath.Join(dir, "s") + "\n"
		if err := os.WriteFile(cfg, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		var out, errOut bytes.Buffer
		code := agent.Main(context.Background(), []string{"-config", cfg, "-check"}, &out, &errOut)
		if code != tc.code || !strings.Contains(out.String()+errOut.String(), tc.want) {
			t.Errorf("%s: exit %d\n%s%s\nwant %d and %q", tc.host, code, out.String(), errOut.String(), tc.code, tc.want)
		}
	}
}

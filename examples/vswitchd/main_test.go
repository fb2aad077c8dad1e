package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFiles(t *testing.T, cfg, pol string) string {
	t.Helper()
	dir := t.TempDir()
	if pol == "" {
		b, err := os.ReadFile("../policies/two-tenants.yaml")
		if err != nil {
			t.Fatal(err)
		}
		pol = string(b)
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(pol), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "vswitchd.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const cfg = `host: host-a
driver: softnic
binding: none
policy: policy.yaml
uplink: up0
ports:
  blue-web-1: vm-bw1
control: ctl.sock
`

func vswitchd(args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestCheck(t *testing.T) {
	path := writeFiles(t, cfg, "")
	out, errs, code := vswitchd("-config", path, "-check")
	if code != 0 || !strings.Contains(out, "are valid") {
		t.Fatalf("exit %d: %s%s", code, out, errs)
	}
}

// A bad configuration or policy is reported with file, line and field, and
// nothing starts: no control socket appears.
func TestBadFilesStartNothing(t *testing.T) {
	for _, tc := range []struct {
		name, cfg, pol, want string
	}{
		{"config", strings.Replace(cfg, "driver: softnic", "driver: dpdk", 1), "", `vswitchd.yaml:2: driver: unknown driver "dpdk"`},
		{"policy", cfg, "hosts:\n  - name: host-a\n    pa: 198.18.0.300\n", "policy.yaml:3"},
		{"host not in policy", strings.Replace(cfg, "host: host-a", "host: host-z", 1), "", `host "host-z"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFiles(t, tc.cfg, tc.pol)
			for _, args := range [][]string{{"-config", path}, {"-config", path, "-check"}} {
				_, errs, code := vswitchd(args...)
				if code != 1 || !strings.Contains(errs, tc.want) {
					t.Fatalf("%v: exit %d, stderr:\n%s\nwant %q", args, code, errs, tc.want)
				}
				if _, err := os.Stat(filepath.Join(filepath.Dir(path), "ctl.sock")); err == nil {
					t.Fatal("a control socket appeared")
				}
			}
		})
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"-config"}, {"-config", "x", "extra"}, {"-nope"}, {"-config", "x", "-log-format", "xml"}} {
		_, errs, code := vswitchd(args...)
		if code != 2 || !strings.Contains(errs, "usage: vswitchd") {
			t.Errorf("%q: exit %d: %s", args, code, errs)
		}
	}
}

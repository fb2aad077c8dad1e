package agent

import (
	"bytes"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/control"
)

// badPolicy writes a copy of the running policy with an invalid VNI and
// returns the line of it.
func badPolicy(t *testing.T, polPath string) int {
	t.Helper()
	good, err := os.ReadFile(polPath)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(good, []byte("vni: 1001"))
	if i < 0 {
		t.Fatal("the example policy changed shape; fix the test")
	}
	bad := bytes.Replace(good, []byte("vni: 1001"), []byte("vni: lots"), 1)
	if err := os.WriteFile(polPath, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	return 1 + bytes.Count(good[:i], []byte("\n"))
}

// metric returns the value of one metric line of the daemon's metrics.
func metric(t *testing.T, r *running, name string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	r.d.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, l := range strings.Split(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			return f
		}
	}
	t.Fatalf("no metric %s in\n%s", name, rec.Body.String())
	return 0
}

// assertRejected checks that reload, show and the metrics all say the
// policy file at line is rejected.
func assertRejected(t *testing.T, r *running, polPath string, line int) {
	t.Helper()
	var rl control.Reloaded
	err := call(t, r, "reload", nil, &rl)
	if err == nil {
		t.Fatalf("reload of a rejected file succeeded: %+v", rl)
	}
	for _, want := range []string{polPath + ":" + strconv.Itoa(line) + ":", "tenants[0].vnets[0].vni", `"lots" is not a whole number`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("reload error %q does not say %q", err, want)
		}
	}
	var show control.Show
	if err := call(t, r, "show", nil, &show); err != nil {
		t.Fatal(err)
	}
	rj := show.PolicyRejected
	if rj == nil {
		t.Fatalf("show does not say the policy file is rejected: %+v", show)
	}
	if rj.File != polPath || rj.Line != line || rj.Field != "tenants[0].vnets[0].vni" || rj.Problems != 1 ||
		!strings.Contains(rj.Msg, "is not a whole number") || time.Since(rj.At) > time.Minute || rj.At.Before(show.PolicyLoad) {
		t.Errorf("show says %+v", rj)
	}
	if got, ok := r.d.PolicyRejection(); !ok || got.Line != line {
		t.Errorf("PolicyRejection = %+v, %v", got, ok)
	}
	if v := metric(t, r, "nicpath_policy_rejected"); v != 1 {
		t.Errorf("nicpath_policy_rejected = %v", v)
	}
	if v := metric(t, r, "nicpath_policy_last_rejection_timestamp_seconds"); v < float64(rj.At.Unix()) || v > float64(rj.At.Unix()+1) {
		t.Errorf("nicpath_policy_last_rejection_timestamp_seconds = %v, rejected at %v", v, rj.At)
	}
}

func assertAccepted(t *testing.T, r *running) {
	t.Helper()
	var show control.Show
	if err := call(t, r, "show", nil, &show); err != nil {
		t.Fatal(err)
	}
	if show.PolicyRejected != nil {
		t.Errorf("show still says rejected: %+v", show.PolicyRejected)
	}
	if _, ok := r.d.PolicyRejection(); ok {
		t.Error("PolicyRejection still set")
	}
	if v := metric(t, r, "nicpath_policy_rejected"); v != 0 {
		t.Errorf("nicpath_policy_rejected = %v", v)
	}
}

// withoutWatcher makes a configuration's watcher as good as idle, for
// tests of reload alone.
func withoutWatcher(t *testing.T, cfgPath string) string {
	t.Helper()
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	slow := bytes.Replace(cfg, []byte("watch_interval: 20ms"), []byte("watch_interval: 1h"), 1)
	if bytes.Equal(slow, cfg) {
		t.Fatal("hostAConfig changed shape; fix the test")
	}
	if err := os.WriteFile(cfgPath, slow, 0o644); err != nil {
		t.Fatal(err)
	}
	return cfgPath
}

// A rejected file stays rejected: reloading it again fails again (it used
// to answer "unchanged"), and it is counted once.
func TestRejectedPolicyReloadTwice(t *testing.T) {
	dir := t.TempDir()
	r := startDaemon(t, withoutWatcher(t, hostAConfig(t, dir)), nil)
	polPath := filepath.Join(dir, "policy.yaml")
	if v := metric(t, r, "nicpath_policy_last_rejection_timestamp_seconds"); v != 0 {
		t.Errorf("last rejection %v before any", v)
	}
	assertAccepted(t, r)
	good, _ := os.ReadFile(polPath)
	line := badPolicy(t, polPath)
	assertRejected(t, r, polPath, line)
	assertRejected(t, r, polPath, line)
	if v := metric(t, r, `nicpath_policy_updates_total{result="rejected"}`); v != 1 {
		t.Errorf("the rejected file was counted %v times", v)
	}
	var st control.Stats
	if err := call(t, r, "stats", nil, &st); err != nil || st.Rejected != 1 || st.Updates != 0 {
		t.Errorf("stats: %+v %v", st, err)
	}
	// A good file replaces it: applied, and no longer rejected.
	moved := append(append([]byte(nil), good...), []byte("\nactivations:\n  - vm: blue-web-2\n    generation: 2\n")...)
	if err := os.WriteFile(polPath, moved, 0o644); err != nil {
		t.Fatal(err)
	}
	var rl control.Reloaded
	if err := call(t, r, "reload", nil, &rl); err != nil || !rl.Changed {
		t.Fatalf("reload of a good file: %+v %v", rl, err)
	}
	assertAccepted(t, r)
	if v := metric(t, r, "nicpath_policy_last_rejection_timestamp_seconds"); v == 0 {
		t.Error("the time of the last rejection was forgotten")
	}
}

// The watcher finding a bad file first: reload then still fails (it used
// to answer "unchanged": the watcher had taken the file's hash). Putting
// the running policy's file back clears it, through the watcher too.
func TestRejectedPolicyWatcherThenReload(t *testing.T) {
	dir := t.TempDir()
	r := startDaemon(t, hostAConfig(t, dir), nil)
	polPath := filepath.Join(dir, "policy.yaml")
	good, _ := os.ReadFile(polPath)
	line := badPolicy(t, polPath)
	waitFor(t, r, "the watcher to reject the file", func() bool { _, ok := r.d.PolicyRejection(); return ok })
	assertRejected(t, r, polPath, line)
	if !strings.Contains(r.logs.String(), "policy rejected") {
		t.Error("the rejection was not logged")
	}
	if err := os.WriteFile(polPath, good, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, r, "the watcher to see the good file", func() bool { _, ok := r.d.PolicyRejection(); return !ok })
	assertAccepted(t, r)
	var rl control.Reloaded
	if err := call(t, r, "reload", nil, &rl); err != nil || rl.Changed {
		t.Fatalf("reload of the running policy's file: %+v %v", rl, err)
	}
	if st := r.d.Switch().Stats(); st.Updates != 0 {
		t.Errorf("the switch was updated %d times", st.Updates)
	}
}

// A file this host cannot run (it is not among the hosts) is rejected
// like one that does not load, and a reload reports it each time.
func TestRejectedPolicyWrongHost(t *testing.T) {
	dir := t.TempDir()
	r := startDaemon(t, withoutWatcher(t, hostAConfig(t, dir)), nil)
	polPath := filepath.Join(dir, "policy.yaml")
	good, _ := os.ReadFile(polPath)
	other := bytes.ReplaceAll(good, []byte("host-a"), []byte("host-z"))
	if err := os.WriteFile(polPath, other, 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		err := call(t, r, "reload", nil, nil)
		if err == nil || !strings.Contains(err.Error(), `host "host-a"`) {
			t.Fatalf("reload: %v", err)
		}
	}
	rj, ok := r.d.PolicyRejection()
	if !ok || rj.File != polPath || rj.Line != 0 || !strings.Contains(rj.Msg, "not in the policy's hosts") {
		t.Fatalf("PolicyRejection = %+v, %v", rj, ok)
	}
	if v := metric(t, r, "nicpath_policy_rejected"); v != 1 {
		t.Errorf("nicpath_policy_rejected = %v", v)
	}
}

// A policy file that goes away is an error for reload and show, and the
// running state stays.
func TestRejectedPolicyMissingFile(t *testing.T) {
	dir := t.TempDir()
	r := startDaemon(t, hostAConfig(t, dir), nil)
	polPath := filepath.Join(dir, "policy.yaml")
	if err := os.Remove(polPath); err != nil {
		t.Fatal(err)
	}
	if err := call(t, r, "reload", nil, nil); err == nil || !strings.Contains(err.Error(), polPath) {
		t.Fatalf("reload: %v", err)
	}
	if _, ok := r.d.PolicyRejection(); !ok {
		t.Error("a missing file is not reported")
	}
	// The watcher (every 20ms) finds it missing again and again: one
	// rejection.
	time.Sleep(150 * time.Millisecond)
	if v := metric(t, r, `nicpath_policy_updates_total{result="rejected"}`); v != 1 {
		t.Errorf("the missing file was counted %v times", v)
	}
	if n := strings.Count(r.logs.String(), "policy rejected"); n != 1 {
		t.Errorf("the missing file was logged %d times", n)
	}
	if r.d.State() == nil || len(r.d.State().VMs()) == 0 {
		t.Error("the running state was lost")
	}
}

func waitFor(t *testing.T, r *running, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s\n%s", what, r.logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

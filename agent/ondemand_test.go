package agent

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/control"
	"github.com/nicpath/nicpath/directory"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
)

// gatedResolver answers from a state once its gate opens; the VNIs in
// hang never answer (the lookup times out).
type gatedResolver struct {
	st   *policy.State
	gate chan struct{}
	hang map[uint32]bool
}

func (g *gatedResolver) Resolve(ctx context.Context, vni uint32, ca netip.Addr) (directory.Record, error) {
	if g.hang[vni] {
		<-ctx.Done()
		return directory.Record{}, ctx.Err()
	}
	select {
	case <-g.gate:
	case <-ctx.Done():
		return directory.Record{}, ctx.Err()
	}
	return directory.StateResolver{State: g.st}.Resolve(ctx, vni, ca)
}

// The agent with a directory: packets toward a host-b VM wait for the
// lookup (explain says so), the queue's overflow is dropped and counted,
// the held packets leave once the record arrives, and a lookup that
// times out drops its packets; stats and the metrics count all of it.
func TestOnDemandDirectory(t *testing.T) {
	dir := t.TempDir()
	cfg, err := LoadConfig(hostAConfig(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	st, _, err := loadPolicy(cfg.Policy)
	if err != nil {
		t.Fatal(err)
	}
	res := &gatedResolver{st: st, gate: make(chan struct{}), hang: map[uint32]bool{2001: true}}
	// The timeout is what red's lookup waits out; blue's lookup must not
	// reach it before the test opens the gate, on a loaded machine too.
	cfg.Directory = &Directory{Resolver: res, QueueLen: 2,
		Cache: directory.CacheConfig{Timeout: 5 * time.Second, TTL: time.Minute}}
	r := startAgent(t, cfg, nil)

	dbCA := netip.MustParseAddr("10.0.1.10")
	syn := func(sport uint16) []byte {
		return wire.Build(wire.FrameSpec{SrcMAC: macBW1, DstMAC: hal.MAC(st.RouterMAC()), Src: caBW1, Dst: dbCA,
			Proto: hal.ProtoTCP, TCPFlags: 0x02, SrcPort: sport, DstPort: 5432})
	}
	vm, _ := r.d.SoftPort("blue-web-1")
	up, _ := r.d.SoftPort("uplink")
	for i := range 3 {
		if _, err := vm.Send([][]byte{syn(40000 + uint16(i))}); err != nil {
			t.Fatal(err)
		}
	}
	var s control.Stats
	waitOnDemand(t, r, func() bool {
		if err := call(t, r, "stats", nil, &s); err != nil {
			t.Fatal(err)
		}
		return s.OnDemand != nil && s.OnDemand.QueueDepth == 2 && s.OnDemand.DroppedQueueFull == 1
	})
	var x control.Explanation
	if err := call(t, r, "explain", []string{"blue-web-1", "10.0.0.10", "10.0.1.10", "tcp", "40000", "5432"}, &x); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(x.Directory, "waiting for a directory lookup") || !strings.Contains(x.Directory, "1 dropped: queue full") ||
		!strings.Contains(x.Text, x.Directory) {
		t.Fatalf("explain while the lookup runs: %+v", x)
	}
	if n := countUplink(t, up, 0); n != 0 {
		t.Fatalf("%d frames left before the lookup answered", n)
	}

	close(res.gate)
	if n := countUplink(t, up, 2); n != 2 {
		t.Fatalf("%d held frames left after the lookup answered, want 2\nlogs:\n%s", n, r.logs.String())
	}
	x = control.Explanation{}
	if err := call(t, r, "explain", []string{"blue-web-1", "10.0.0.10", "10.0.1.10", "tcp", "40000", "5432"}, &x); err != nil {
		t.Fatal(err)
	}
	if x.Directory != "" {
		t.Fatalf("explain after the lookup still names the directory: %+v", x)
	}

	// red-app-1 (VNI 2001) never answers: its packet is dropped when the
	// lookup times out.
	macRA2, macRA1 := hal.MustMAC("02:00:00:0e:00:02"), hal.MustMAC("02:00:00:0e:00:01")
	ra2, _ := r.d.SoftPort("red-app-2")
	f := wire.Build(wire.FrameSpec{SrcMAC: macRA2, DstMAC: macRA1, Src: caBW2, Dst: caBW1,
		Proto: hal.ProtoTCP, TCPFlags: 0x02, SrcPort: 40000, DstPort: 22})
	if _, err := ra2.Send([][]byte{f}); err != nil {
		t.Fatal(err)
	}
	waitOnDemand(t, r, func() bool {
		if err := call(t, r, "stats", nil, &s); err != nil {
			t.Fatal(err)
		}
		return s.OnDemand.DroppedTimeout == 1
	})
	x = control.Explanation{}
	if err := call(t, r, "explain", []string{"red-app-2", "10.0.0.11", "10.0.0.10", "tcp", "40000", "22"}, &x); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(x.Directory, "dropped: directory lookup timed out") {
		t.Fatalf("explain after the timeout: %+v", x)
	}
	if n := countUplink(t, up, 0); n != 0 {
		t.Fatalf("%d frames left after a lookup timed out", n)
	}
	o := s.OnDemand
	if o.Lookups != 2 || o.Misses != 2 || o.Held != 3 || o.Released != 2 || o.QueueDepth != 0 || o.DroppedQueueFull != 1 {
		t.Fatalf("stats: %+v", *o)
	}
	if !strings.Contains(s.Text, "ondemand dropped lookup timed out 1") {
		t.Fatalf("stats text: %s", s.Text)
	}

	srv := httptest.NewServer(r.d.MetricsHandler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`nicpath_ondemand_lookups_total 2`,
		`nicpath_ondemand_cache_misses_total 2`,
		`nicpath_ondemand_drops_total{reason="queue_full"} 1`,
		`nicpath_ondemand_drops_total{reason="timeout"} 1`,
		`nicpath_ondemand_queue_depth 0`,
		`nicpath_ondemand_held_total 3`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}
}

func waitOnDemand(t *testing.T, r *running, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met\nlogs:\n%s", r.logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// countUplink reads the frames leaving the uplink until want arrived (or,
// for want 0, for a moment).
func countUplink(t *testing.T, up interface {
	Recv([][]byte, []int) (int, error)
}, want int) int {
	t.Helper()
	bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
	got := 0
	wait := 200 * time.Millisecond
	if want > 0 {
		wait = 10 * time.Second
	}
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) && (want == 0 || got < want) {
		n, err := up.Recv(bufs, sizes)
		if err != nil {
			t.Fatal(err)
		}
		got += n
		if n == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	return got
}

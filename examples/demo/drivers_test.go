package main

import (
	"slices"
	"strings"
	"testing"
)

func TestParseDrivers(t *testing.T) {
	for _, c := range []struct {
		in     string
		a, b   string
		says   string
		errHas string
	}{
		{in: "", a: "softnic", b: "softnic", says: "softnic"},
		{in: "xdp", a: "xdp", b: "xdp", says: "xdp"},
		{in: "host-a=xdp,host-b=softnic", a: "xdp", b: "softnic", says: "host-a xdp, host-b softnic"},
		{in: "xdp, host-b=softnic", a: "xdp", b: "softnic", says: "host-a xdp, host-b softnic"},
		{in: "host-b=xdp", a: "softnic", b: "xdp", says: "host-a softnic, host-b xdp"},
		{in: "host-a=xdp,host-b=xdp", a: "xdp", b: "xdp", says: "xdp"},
		{in: "tcflower", a: "tcflower", b: "tcflower", says: "tcflower"},
		{in: "host-a=tcflower,host-b=softnic", a: "tcflower", b: "softnic", says: "host-a tcflower, host-b softnic"},
		{in: "ovs", errHas: `unknown driver "ovs"`},
		{in: "host-c=xdp", errHas: `no host "host-c"`},
		{in: "xdp,softnic", errHas: "two default drivers"},
		{in: "host-a=xdp,host-a=softnic", errHas: "host-a named twice"},
		{in: "host-a=", errHas: "unknown driver"},
	} {
		d, err := parseDrivers(c.in, storyHosts)
		if c.errHas != "" {
			if err == nil || !strings.Contains(err.Error(), c.errHas) {
				t.Errorf("DRIVER=%q: error %v, want one saying %q", c.in, err, c.errHas)
			}
			continue
		}
		if err != nil {
			t.Errorf("DRIVER=%q: %v", c.in, err)
			continue
		}
		if d.of("host-a") != c.a || d.of("host-b") != c.b || d.String() != c.says {
			t.Errorf("DRIVER=%q: host-a %s, host-b %s, says %q; want %s, %s, %q", c.in, d.of("host-a"), d.of("host-b"), d.String(), c.a, c.b, c.says)
		}
	}
}

// FuzzParseDrivers: DRIVER never panics the demo, and what it accepts puts
// every host on a driver the story knows.
func FuzzParseDrivers(f *testing.F) {
	for _, s := range []string{"", "xdp", "softnic,host-a=xdp", "host-a=xdp,host-b=softnic", "host-a==xdp", ",", "=", "xdp,,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseDrivers(s, storyHosts)
		if err != nil {
			return
		}
		for _, h := range storyHosts {
			if drv := d.of(h); !slices.Contains(demoDrivers, drv) {
				t.Fatalf("DRIVER=%q puts %s on %q", s, h, drv)
			}
		}
		if d.String() == "" {
			t.Fatalf("DRIVER=%q: no name", s)
		}
	})
}

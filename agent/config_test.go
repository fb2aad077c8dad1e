package agent

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
)

const goodConfig = `host: host-a
driver: softnic
policy: policy.yaml
uplink: up0
ports:
  blue-web-1: vm-bw1
control: /run/nicpath/a.sock
metrics: 127.0.0.1:9464
log_level: warn
next_hop_mac: 02:00:00:00:00:99
flow_idle: 10s
`

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig("/etc/nicpath/vswitchd.yaml", []byte(goodConfig))
	if err != nil {
		t.Fatal(err)
	}
	if c.Host != "host-a" || c.Driver != "softnic" || c.Binding != BindAFPacket || c.Uplink != "up0" ||
		c.Ports["blue-web-1"] != "vm-bw1" || c.FlowIdle != 10*time.Second || c.LogLevel.String() != "WARN" ||
		c.NextHopMAC.String() != "02:00:00:00:00:99" || c.WatchInterval != time.Second {
		t.Fatalf("%+v", c)
	}
	// The policy is found next to the configuration.
	if c.Policy != "/etc/nicpath/policy.yaml" {
		t.Errorf("policy path %q", c.Policy)
	}
}

// A store instead of a policy file: schemes are kept, file stores are
// found next to the configuration like a policy.
func TestParseConfigStore(t *testing.T) {
	for _, tc := range []struct{ store, want string }{
		{"etcd://192.0.2.1:2379,192.0.2.2:2379/nicpath/", "etcd://192.0.2.1:2379,192.0.2.2:2379/nicpath/"},
		{"file:state.yaml", "file:/etc/nicpath/state.yaml"},
		{"file:/var/lib/nicpath/state.yaml", "file:/var/lib/nicpath/state.yaml"},
		{"state.yaml", "file:/etc/nicpath/state.yaml"},
	} {
		doc := strings.Replace(goodConfig, "policy: policy.yaml", "store: "+tc.store+"\nstore_timeout: 5s", 1)
		c, err := ParseConfig("/etc/nicpath/vswitchd.yaml", []byte(doc))
		if err != nil {
			t.Fatalf("%s: %v", tc.store, err)
		}
		if c.Store != tc.want || c.Policy != "" || c.StoreTimeout != 5*time.Second {
			t.Errorf("store %q: got %q (policy %q, timeout %s), want %q", tc.store, c.Store, c.Policy, c.StoreTimeout, tc.want)
		}
	}
	c, err := ParseConfig("c.yaml", []byte(goodConfig))
	if err != nil || c.Store != "" || c.StoreTimeout != 30*time.Second {
		t.Fatalf("defaults: %+v %v", c, err)
	}
}

// Every problem names the file, the line and the field.
func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"unknown driver", strings.Replace(goodConfig, "driver: softnic", "driver: dpdk", 1), `c.yaml:2: driver: unknown driver "dpdk"`},
		{"unknown field", goodConfig + "colour: blue\n", "c.yaml:12: colour: unknown field"},
		{"missing uplink", strings.Replace(goodConfig, "uplink: up0\n", "", 1), "c.yaml:1: uplink: missing"},
		{"bad mac", strings.Replace(goodConfig, "02:00:00:00:00:99", "02:00:zz", 1), "c.yaml:10: next_hop_mac: not a MAC address"},
		{"bad duration", strings.Replace(goodConfig, "10s", "ten", 1), "c.yaml:11: flow_idle: not a duration"},
		{"bad level", strings.Replace(goodConfig, "warn", "loud", 1), "c.yaml:9: log_level:"},
		{"bad metrics", strings.Replace(goodConfig, "127.0.0.1:9464", "nine", 1), "c.yaml:8: metrics: want host:port"},
		{"shared interface", strings.Replace(goodConfig, "  blue-web-1: vm-bw1\n", "  blue-web-1: vm-bw1\n  red-app-2: vm-bw1\n", 1), `c.yaml:7: ports.red-app-2: interface "vm-bw1" is already the port of blue-web-1`},
		{"ports not a map", strings.Replace(goodConfig, "  blue-web-1: vm-bw1\n", "  - vm-bw1\n", 1), "c.yaml:6: ports: want a mapping"},
		{"binding for xdp", strings.Replace(goodConfig, "driver: softnic", "driver: xdp\nbinding: none", 1), "c.yaml:3: binding: only the softnic driver"},
		{"twice", goodConfig + "host: host-b\n", "c.yaml:12: host: given twice (first on line 1)"},
		{"syntax", "host: [a\n", "c.yaml:"},
		{"not a mapping", "- a\n- b\n", "c.yaml:1: the configuration must be a mapping"},
		{"no policy nor store", strings.Replace(goodConfig, "policy: policy.yaml\n", "", 1), "c.yaml:1: policy: missing (give a policy file, or a store to follow)"},
		{"policy and store", goodConfig + "store: etcd://192.0.2.1:2379/nicpath/\n", "c.yaml:12: store: a configuration has a policy file or a store, not both (policy is on line 3)"},
		{"mem store", strings.Replace(goodConfig, "policy: policy.yaml", "store: 'mem:'", 1), "c.yaml:3: store: mem: is an in-process store"},
		{"store timeout without store", goodConfig + "store_timeout: 5s\n", "c.yaml:12: store_timeout: only meaningful with a store"},
		{"negative max_rules", goodConfig + "driver_options:\n  max_rules: -1\n", `c.yaml:13: driver_options.max_rules: "-1": want a whole number, 0 or more (0: the driver's default)`},
		{"max_batch not a number", strings.Replace(goodConfig, "driver: softnic", "driver: xdp", 1) + "driver_options:\n  max_batch: lots\n", `c.yaml:13: driver_options.max_batch: "lots": want a whole number`},
		{"negative max_batch", strings.Replace(goodConfig, "driver: softnic", "driver: tcflower", 1) + "driver_options:\n  max_rules: 64\n  max_batch: -4\n", `c.yaml:14: driver_options.max_batch: "-4"`},
		{"max_rules above softnic's", goodConfig + "driver_options:\n  max_rules: 1073741824\n", "c.yaml:13: driver_options.max_rules: 1073741824 is above the softnic driver's maximum, 536870912"},
		{"max_rules above xdp's", strings.Replace(goodConfig, "driver: softnic", "driver: xdp", 1) + "driver_options:\n  max_rules: 67108865\n", "c.yaml:13: driver_options.max_rules: 67108865 is above the xdp driver's maximum, 67108864"},
		{"max_rules on remote", strings.Replace(goodConfig, "driver: softnic", "driver: remote", 1) + "driver_options:\n  max_rules: 64\n", "c.yaml:13: driver_options.max_rules: the remote driver has no such option"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig("c.yaml", []byte(tc.doc))
			if err == nil {
				t.Fatalf("accepted: %+v", c)
			}
			if c != nil {
				t.Error("a Config came back with the error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\nwant it to contain %q", err, tc.want)
			}
			if !IsConfigError(err) {
				t.Error("not a ConfigError")
			}
			var l ConfigErrors
			if !errors.As(err, &l) || len(l) == 0 || l[0].File != "c.yaml" {
				t.Errorf("errors %#v", l)
			}
		})
	}
}

// FuzzParseConfig: any document either loads into a complete Config or
// fails with errors that all name the file; never both, never a panic.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(goodConfig))
	f.Add([]byte("host: a\n"))
	f.Add([]byte("ports: {a: b, c: b}\n"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		c, err := ParseConfig("f.yaml", doc)
		if err != nil {
			if c != nil {
				t.Fatal("a Config and an error")
			}
			var l ConfigErrors
			if errors.As(err, &l) {
				for _, e := range l {
					if e.File != "f.yaml" || !strings.HasPrefix(e.Error(), "f.yaml") {
						t.Fatalf("error without the file: %q", e)
					}
				}
			}
			return
		}
		if c.Host == "" || c.Driver == "" || c.Policy == "" || c.Uplink == "" || c.Control == "" {
			t.Fatalf("loaded without a required field: %+v", c)
		}
		if g := c.Gateway; g != nil && (g.Name == "" || g.External == "" || !g.Address.IsValid() || len(c.Ports) > 0) {
			t.Fatalf("loaded an incomplete gateway section: %+v", g)
		}
		// A loaded table size or batch bound is one the driver takes.
		if ownDriver(c.Driver) {
			if _, _, err := limits(c.Driver, c.DriverOptions); err != nil {
				t.Fatalf("loaded with %v", err)
			}
		}
	})
}

// The example configuration shipped with vswitchd loads, and its policy
// passes the daemon's checks.
func TestExampleConfig(t *testing.T) {
	c, err := LoadConfig("../examples/vswitchd/vswitchd.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckPolicy(c); err != nil {
		t.Fatal(err)
	}
	if c.Host != "host-a" || len(c.Ports) != 3 || c.Metrics == "" {
		t.Fatalf("%+v", c)
	}
}

// refusedExactly fails t unless the configuration doc (named file) is
// refused with exactly the errors want, the first in column col.
func refusedExactly(t *testing.T, file, doc, want string, col int) {
	t.Helper()
	c, err := ParseConfig(file, []byte(doc))
	if err == nil {
		t.Fatalf("accepted: %+v", c)
	}
	if err.Error() != want {
		t.Fatalf("error %q\nwant %q", err, want)
	}
	var l ConfigErrors
	if !errors.As(err, &l) || l[0].Column != col {
		t.Fatalf("errors %#v: want the first in column %d", l, col)
	}
}

// The mapping fields (ports, tunnels, driver_options) name the entry's
// field, its line and column in every error, and take what is valid.
func TestParseConfigMappings(t *testing.T) {
	for _, tc := range []struct {
		name, extra, want string
		col               int // of the first error
	}{
		{"VM twice", "ports:\n  a: x\n  a: y\n", "c.yaml:13: ports.a: VM given twice", 3},
		{"no interface", "ports:\n  a: ''\n", "c.yaml:12: ports.a: want the interface of the VM's port", 6},
		{"port not a string", "ports:\n  a: [x]\n", "c.yaml:12: ports.a: want a string\nc.yaml:12: ports.a: want the interface of the VM's port", 6},
		{"tunnels not a map", "tunnels: vx0\n", "c.yaml:11: tunnels: want a mapping of encapsulation (vxlan, geneve, nvgre) to device", 10},
		{"unknown tunnel", "tunnels:\n  vxlan: vx0\n  gre: gre0\n", "c.yaml:13: tunnels.gre: unknown encapsulation (want vxlan, geneve or nvgre)", 3},
		{"tunnel not a string", "tunnels:\n  geneve: {}\n", "c.yaml:12: tunnels.geneve: want a string", 11},
		{"options not a map", "driver_options: [a]\n", "c.yaml:11: driver_options: want a mapping of the driver's option names to values", 17},
		{"option twice", "driver_options:\n  crypto: 'off'\n  crypto: 'on'\n", "c.yaml:13: driver_options.crypto: given twice", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(goodConfig, "ports:\n  blue-web-1: vm-bw1\n", "", 1) + "uplink_mac: 02:00:00:00:00:01\n" + tc.extra
			refusedExactly(t, "c.yaml", doc, tc.want, tc.col)
		})
	}
	doc := goodConfig + "tunnels:\n  vxlan: vx0\n  geneve: gnv0\ndriver_options:\n  crypto: 'off'\n"
	c, err := ParseConfig("c.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Tunnels) != 2 || c.Tunnels[hal.EncapVXLAN] != "vx0" || c.Tunnels[hal.EncapGeneve] != "gnv0" || len(c.DriverOptions) != 1 || c.DriverOptions["crypto"] != "off" {
		t.Fatalf("tunnels %v, driver options %v", c.Tunnels, c.DriverOptions)
	}
}

package agent

import (
	"context"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nicpath/nicpath/agent/driver"
	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
)

// agenttest is a driver registered from outside the agent's own: a softnic
// whose ports the test drives, opened with the configuration's
// driver_options.
var agenttest struct {
	mu  sync.Mutex
	got []driver.Config
}

func init() {
	RegisterDriver("agenttest", func(_ context.Context, c driver.Config) (hal.NIC, error) {
		agenttest.mu.Lock()
		agenttest.got = append(agenttest.got, c)
		agenttest.mu.Unlock()
		var pcs []softnic.PortConfig
		for _, p := range c.Ports {
			pcs = append(pcs, softnic.PortConfig{Name: p.Name, Kind: p.Kind, MAC: p.MAC, MTU: 1600})
		}
		return softnic.New(softnic.Config{Device: "agenttest " + c.Options["serial"], Ports: pcs})
	}, "serial")
}

// A driver another package registered is opened by name, with the ports
// numbered the agent's way and its driver_options, and the daemon runs on
// it.
func TestRegisteredDriver(t *testing.T) {
	dir := t.TempDir()
	path := hostAConfig(t, dir)
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc = []byte(strings.Replace(string(doc), "driver: softnic\nbinding: none\n", "driver: agenttest\ndriver_options:\n  serial: AT-7\n", 1))
	if err := os.WriteFile(path, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	r := startDaemon(t, path, nil)
	r.send(t, udpFrame(4000), udpFrame(4000))
	if st := r.d.Switch().Stats(); st.FlowsNIC != 1 {
		t.Fatalf("want the flow on the registered driver's NIC:\n%s", st)
	}
	if dev := r.d.NIC().Capabilities().Device; dev != "agenttest AT-7" {
		t.Fatalf("device %q: the option did not reach the opener", dev)
	}
	agenttest.mu.Lock()
	c := agenttest.got[len(agenttest.got)-1]
	agenttest.mu.Unlock()
	var names []string
	for i, p := range c.Ports {
		names = append(names, p.VM+"="+p.Name)
		if p.ID != hal.PortID(i+1) {
			t.Errorf("port %d has ID %d", i, p.ID)
		}
	}
	want := []string{"blue-web-1=vm-bw1", "blue-web-2=vm-bw2", "red-app-2=vm-ra2", "red-fw=vm-rfw", "=up0"}
	if !slices.Equal(names, want) || c.Ports[4].Kind != hal.PortUplink || c.Ports[0].MAC != macBW1 {
		t.Errorf("ports %+v, want %v with blue-web-1's MAC", c.Ports, want)
	}
	if c.Host != "host-a" || c.Dir != dir || c.Logger == nil {
		t.Errorf("opener's configuration %+v", c)
	}
}

// driver_options are checked against what the driver registered.
func TestParseConfigDriverOptions(t *testing.T) {
	at := strings.Replace(goodConfig, "driver: softnic", "driver: agenttest", 1)
	c, err := ParseConfig("c.yaml", []byte(at+"driver_options:\n  serial: AT-1\n"))
	if err != nil || c.DriverOptions["serial"] != "AT-1" {
		t.Fatalf("%+v %v", c, err)
	}
	for _, tc := range []struct{ name, doc, want string }{
		{"softnic's own", goodConfig + "driver_options:\n  serial: x\n", "c.yaml:13: driver_options.serial: the softnic driver has no such option (it takes crypto, seal_key, max_rules, max_batch)"},
		{"xdp's own", strings.Replace(goodConfig, "driver: softnic", "driver: xdp", 1) + "driver_options:\n  serial: x\n", "c.yaml:13: driver_options.serial: the xdp driver has no such option (it takes max_rules, max_batch)"},
		{"unknown option", at + "driver_options:\n  serial: x\n  colour: blue\n", "c.yaml:14: driver_options.colour: the agenttest driver has no such option (it takes serial)"},
		{"not a mapping", at + "driver_options: [serial]\n", "c.yaml:12: driver_options: want a mapping"},
		{"not a string", at + "driver_options:\n  serial: [1]\n", "c.yaml:13: driver_options.serial: want a string"},
		{"unknown driver", strings.Replace(goodConfig, "driver: softnic", "driver: dpdk", 1), `unknown driver "dpdk" (want one of remote, softnic, xdp, tcflower`},
	} {
		if _, err := ParseConfig("c.yaml", []byte(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v\nwant %q", tc.name, err, tc.want)
		}
	}
}

package main

import (
	"fmt"
	"slices"
	"strings"
)

// demoDrivers are the drivers the namespace story can run a host on. A
// tc-flower host gets its kernel tunnel device (a flow-based VXLAN device)
// and its provider address on the uplink, and needs a kernel with
// cls_flower and the tc actions: the VM tier has them
// (TestNamespaceStoryVM), this machine's kernel may not.
var demoDrivers = []string{"softnic", "xdp", "tcflower"}

// hostDrivers is the driver each host's vswitchd runs, read from DRIVER:
// one driver for every host ("xdp"), or a default and per-host choices
// ("softnic,host-a=xdp" or "host-a=xdp,host-b=softnic"). Each host runs
// its own vswitchd, whose configuration names its driver, so the hosts of
// one story may differ.
type hostDrivers struct {
	def  string            // hosts not named in per
	per  map[string]string // by host name
	host []string          // the story's hosts, in order
	// remote: every host's NIC runs in a nicd process of its own, and
	// vswitchd opens it with driver: remote (NIC=remote, remote.go).
	remote bool
}

// parseDrivers reads DRIVER for a story whose hosts are hosts. An empty
// value is softnic on every host.
func parseDrivers(s string, hosts []string) (hostDrivers, error) {
	d := hostDrivers{def: "softnic", per: map[string]string{}, host: hosts}
	if strings.TrimSpace(s) == "" {
		return d, nil
	}
	seenDef := false
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		host, drv, named := strings.Cut(item, "=")
		if !named {
			host, drv = "", item
		}
		host, drv = strings.TrimSpace(host), strings.TrimSpace(drv)
		if !slices.Contains(demoDrivers, drv) {
			return d, fmt.Errorf("DRIVER=%s: unknown driver %q (want one of %s, for every host or as host=driver)", s, drv, strings.Join(demoDrivers, ", "))
		}
		switch {
		case !named && seenDef:
			return d, fmt.Errorf("DRIVER=%s: two default drivers", s)
		case !named:
			d.def, seenDef = drv, true
		case !slices.Contains(hosts, host):
			return d, fmt.Errorf("DRIVER=%s: no host %q in the story (hosts: %s)", s, host, strings.Join(hosts, ", "))
		case d.per[host] != "":
			return d, fmt.Errorf("DRIVER=%s: host %s named twice", s, host)
		default:
			d.per[host] = drv
		}
	}
	return d, nil
}

// of is host's driver.
func (d hostDrivers) of(host string) string {
	if drv, ok := d.per[host]; ok {
		return drv
	}
	return d.def
}

// uniform says whether every host runs the same driver.
func (d hostDrivers) uniform() bool {
	for _, h := range d.host {
		if d.of(h) != d.of(d.host[0]) {
			return false
		}
	}
	return true
}

// String is "xdp" when every host runs xdp, else "host-a xdp, host-b
// softnic"; with NIC=remote it says so.
func (d hostDrivers) String() string {
	if d.remote {
		d.remote = false
		return d.String() + ", each NIC in a nicd process of its own (NIC=remote)"
	}
	if len(d.host) == 0 || d.uniform() {
		if len(d.host) == 0 {
			return d.def
		}
		return d.of(d.host[0])
	}
	parts := make([]string, len(d.host))
	for i, h := range d.host {
		parts[i] = h + " " + d.of(h)
	}
	return strings.Join(parts, ", ")
}

// shows is what vswitchctl show says of host's driver.
func (d hostDrivers) shows(host string) string {
	if d.remote {
		return ", driver remote on " + d.of(host) + " ("
	}
	return ", driver " + d.of(host) + " on "
}

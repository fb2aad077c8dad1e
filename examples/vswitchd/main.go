// Command vswitchd is nicpath's example vswitch daemon, the way
// ovs-vswitchd is Open vSwitch's: it opens a NIC through the driver its
// configuration names (softnic, xdp or tcflower), binds the VMs' ports and
// the uplink to Linux interfaces (softnic through AF_PACKET), loads a policy
// file and watches it, serves a control socket for vswitchctl and Prometheus
// metrics, and captures the exception path on demand.
//
// Usage:
//
//	vswitchd -config vswitchd.yaml [-check] [-log-format text|json]
//
// The configuration (YAML):
//
//	host: host-a                # this host's name in the policy
//	driver: softnic             # softnic, xdp or tcflower
//	binding: afpacket           # softnic only: afpacket (default) or none
//	policy: policy.yaml         # relative to this file's directory
//	store: etcd://192.0.2.1:2379/nicpath/  # instead of policy: follow a store
//	store_timeout: 30s          # optional: how long to wait for the store's first state
//	uplink: up0                 # the uplink's interface
//	ports:                      # VM name (in the policy) → its vport's interface
//	  blue-web-1: vm-bw1
//	control: /run/nicpath/host-a.sock
//	metrics: 127.0.0.1:9464     # optional; /metrics
//	log_level: info             # debug, info, warn, error
//	next_hop_mac: 02:…          # optional: outer destination MAC of encapsulated frames
//	flow_idle: 30s              # optional
//	watch_interval: 1s          # optional: how often the policy file is checked
//	netns: /run/netns/x         # optional: the interfaces' namespace (every driver)
//	tunnels: {vxlan: vx0}       # tcflower: flow-based tunnel devices
//	driver_options: {…}         # a registered driver's own settings
//
// A configuration or policy that does not load is reported with file, line
// and field, and nothing is started. Once running, a changed policy file is
// checked first and applied in one step (vswitch.Switch.Update); a bad one is
// logged with file, line and field and the running state is kept. SIGHUP
// checks the file at once. SIGINT and SIGTERM shut down gracefully. On
// start, the switch reconciles the NIC's table with what it wants: rules an
// earlier run left are found by their owner cookie and removed or kept,
// never duplicated.
//
// The daemon is package agent; this command is its Main.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/nicpath/nicpath/agent"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return agent.Main(ctx, args, stdout, stderr)
}

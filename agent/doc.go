// Package agent is what a vendor imports to run nicpath on its NIC: the
// vswitch daemon (examples/vswitchd is a thin main over it) as a library.
// An Agent opens a NIC by driver name, binds its ports, builds the switch
// on it, follows a policy file or a store, and serves a control socket,
// Prometheus metrics and exception-path captures.
//
//	cfg, err := agent.LoadConfig("/etc/nicpath/agent.yaml")
//	a, err := agent.New(ctx, cfg)            // or agent.NewWithNIC(ctx, myNIC, cfg)
//	defer a.Close()
//	err = a.Run(ctx)                         // until ctx is done
//
// # Configuration
//
// A Config is read from YAML (LoadConfig, ParseConfig) or built in Go. Every
// problem of a file is a *ConfigError naming file, line and field, and
// nothing is started. The fields: host (this host's name in the policy),
// driver, binding (softnic: afpacket or none), policy or store, uplink,
// ports (VM name → interface), control, metrics, log_level, next_hop_mac,
// uplink_mac, flow_idle, watch_interval, netns, tunnels (tcflower) and
// driver_options (the driver's own settings). softnic, xdp and tcflower
// take driver_options max_rules (the rule table's size,
// Capabilities.MaxRules) and max_batch (the most operations of one Apply,
// Capabilities.MaxBatch): whole numbers, 0 or absent for the driver's
// default. A negative value, one above the driver's maximum (softnic's
// max_rules: softnic.MostRules; xdp's: xdp.MostRules) or either option given to remote (whose
// table nicd's configuration sizes) is refused naming the field.
// examples/vswitchd's vswitchd.example.yaml is a complete one.
//
// # Drivers
//
// New opens the driver the configuration names through the registry of
// package driver: softnic, xdp and tcflower are registered by this
// package, remote by drivers/remote (which the agent links), and another
// driver registers itself (driver.Register, from its
// own package) or is registered by the program that links it
// (RegisterDriver) without a change here. Every driver is given the same
// port numbering: the VMs of Config.Ports in name order get IDs 1…n, the
// uplink n+1, so that flows name the same ports whatever the driver. A
// driver whose NIC names its own ports (remote: the NIC side does) has its
// ports matched to the configuration's interfaces by name, and the agent
// reconciles its switch after each reconnect the driver reports
// (driver.Config.OnReconnect).
// NewWithNIC runs the agent on a NIC the caller opened instead (a vendor's
// own driver, or a NIC that outlives the agent): its ports are matched to
// the configuration's interfaces by name, and Close leaves it open.
//
// On start the switch reconciles the NIC's table: rules an earlier run left
// are found by their owner cookie and removed or repaired, never
// duplicated, so an agent restart neither loses nor duplicates rules.
//
// # Policy or store
//
// With a policy file, the agent polls it (Config.WatchInterval); a change
// is checked first and applied in one step, a file that does not load (or
// that this host cannot run) is rejected, logged with file, line and field,
// and the running state is kept (PolicyRejection, the control socket's show
// and the metrics say so until a good file replaces it). Reload checks the
// file at once. With a store (Config.Store), the first state is loaded
// before the switch starts and a store.Follower applies every later
// revision and reports the host's status to the store, where the VM
// manager (package store/migrate) waits for it; while the store cannot be
// reached, the switch forwards on the last state it applied.
//
// # Observing
//
// The control socket speaks package control's protocol (vswitchctl is its
// command line): show, caps, flows, explain, stats, activate, capture and
// reload; Do answers the same requests in process. MetricsHandler serves the
// Prometheus metrics (also on Config.Metrics when set). The control socket
// (mode 0600 from the moment it appears: bound in a private directory beside
// its path, then linked there) replaces a stale socket file nobody answers on, but a daemon
// is refused when a live one answers there or when the path is not a
// socket; the file is removed when Run returns, and only while it is this
// daemon's own (the gateway host's daemon, GatewayAgent, does the same). A
// capture writes the
// exception path to a pcapng file, one interface per port, each packet with
// its reason, in-port, VNI and rule as a comment. The NIC the switch
// programs is the opened one behind a decorator for the metrics and the
// captures that keeps every optional interface of it (hal/haltest.Wrap).
//
// Main is vswitchd's command line (-config, -check, -log-format, SIGHUP to
// reload) for programs that link more drivers or stores and keep it.
package agent

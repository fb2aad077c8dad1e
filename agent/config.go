package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/nicpath/nicpath/agent/driver"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/internal/fileerr"
)

// Binding says how softnic's ports reach the outside world.
const (
	// BindAFPacket binds every port to the Linux interface of the same
	// name through an AF_PACKET socket (drivers/softnic/afpacket).
	BindAFPacket = "afpacket"
	// BindNone leaves the ports unbound: the program that embeds the daemon
	// drives their far sides (Agent.SoftPort), as the in-process demo and
	// the tests do.
	BindNone = "none"
)

// Config is an agent's configuration: a file's (LoadConfig) or built in Go.
type Config struct {
	File string // where it was loaded from; relative paths are relative to its directory

	Host   string // this host's name in the policy
	Driver string // a registered driver: softnic, xdp, tcflower, remote or one of RegisterDriver
	// Binding is how softnic's ports are bound (BindAFPacket or BindNone);
	// the other drivers attach to the interfaces themselves.
	Binding string
	// Policy is the policy file, watched for changes. A configuration has
	// a policy file or a store, not both.
	Policy string
	// Store names the store the desired state comes from instead of a
	// policy file (store.Open's syntax: etcd://HOST:PORT[,HOST:PORT…]/PREFIX/
	// in a program built with the etcd module, file:PATH). The daemon
	// follows it (store.Follower): every change is applied atomically, its
	// status is reported to the store, and while the store is unreachable
	// the switch keeps forwarding on the last state it applied.
	Store string
	// StoreTimeout bounds the wait for the store's first state at start
	// (default 30s): without a first state there is nothing to run.
	StoreTimeout time.Duration
	// Uplink is the uplink's interface.
	Uplink string
	// Ports maps a VM's name (in the policy) to its vport's interface.
	Ports map[string]string
	// Control is the path of the control socket.
	Control string
	// Metrics is the listen address of the Prometheus endpoint; empty
	// disables it.
	Metrics  string
	LogLevel slog.Level
	// Logger is where the agent logs (not read from the file); nil is a
	// text log on stderr at LogLevel.
	Logger *slog.Logger
	// NextHopMAC is the underlay next hop's MAC (outer destination of
	// encapsulated frames); zero means broadcast, as vswitch defaults.
	NextHopMAC hal.MAC
	// UplinkMAC is the uplink's own MAC when the interface does not give
	// one (BindNone); zero picks a locally administered one.
	UplinkMAC hal.MAC
	// FlowIdle is how long a flow may go without packets; 0 is vswitch's
	// default.
	FlowIdle time.Duration
	// WatchInterval is how often the policy file is checked for changes.
	WatchInterval time.Duration
	// NetNS is the network namespace (a path such as /run/netns/x) of the
	// interfaces, for every driver (softnic opens its AF_PACKET sockets
	// there); empty means the daemon's own. The daemon's other sockets
	// (control, metrics, store) stay in its own namespace.
	NetNS string
	// Tunnels names tcflower's flow-based tunnel devices by kind (vxlan, geneve).
	Tunnels map[hal.EncapKind]string
	// DriverOptions are the driver's own settings (driver_options: a
	// mapping of names to strings), among those it registered with
	// RegisterDriver. softnic, xdp and tcflower take max_rules (the rule
	// table's size, Capabilities.MaxRules) and max_batch (the most
	// operations of one Apply, Capabilities.MaxBatch): whole numbers, 0
	// or absent for the driver's default; softnic also takes crypto and
	// seal_key; remote takes address, key and server_key (its table is
	// sized on the NIC side, by nicd's configuration).
	DriverOptions map[string]string
	// Gateway, when set, makes this host play a gateway of the policy
	// instead of hosting VMs (NewGateway; see GatewayConfig).
	Gateway *GatewayConfig
	// SealPublicKey is a file the daemon writes the NIC's sealing public
	// key to (64 hex digits and a newline) when the NIC opens sealed
	// frames, for VMs (nicseal) to seal their destinations to; empty
	// writes none (vswitchctl show and seal print it too).
	SealPublicKey string
	// Directory, when set, resolves other hosts' VMs on demand (see
	// Directory); not read from the file.
	Directory *Directory
}

// ConfigError is one problem of a configuration file, with the file, the
// line and the field it is about.
type ConfigError = fileerr.Error

// ConfigErrors is every problem found in one configuration file, by line.
type ConfigErrors = fileerr.List

// LoadConfig reads and checks a configuration file. Every problem is a
// *ConfigError naming file, line and field; when there is any, no Config is
// returned.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseConfig(path, data)
}

// ParseConfig parses a configuration document; path names it in errors and
// anchors relative paths.
func ParseConfig(path string, data []byte) (*Config, error) {
	c := &Config{File: path, Binding: BindAFPacket, LogLevel: slog.LevelInfo,
		WatchInterval: time.Second, Ports: map[string]string{}}
	d := &cfgDecoder{file: path}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fileerr.Syntax(path, err)
	}
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil, ConfigErrors{{File: path, Line: max(root.Line, 1), Msg: "the configuration must be a mapping of fields (host, driver, policy, uplink, ports, control, …)"}}
	}
	top := root.Content[0]
	var optKeys, optVals []*yaml.Node // driver_options' names and values
	seen := d.fields(top, "", func(k, v *yaml.Node, _ string) {
		switch k.Value {
		case "host":
			c.Host = d.str(v, "host")
		case "driver":
			c.Driver = d.str(v, "driver")
			if c.Driver != "" && !driver.Known(c.Driver) {
				d.errf(v, "driver", "unknown driver %q (want one of %s)", c.Driver, strings.Join(driver.Names(), ", "))
			}
		case "binding":
			c.Binding = d.str(v, "binding")
			if c.Binding != BindAFPacket && c.Binding != BindNone {
				d.errf(v, "binding", "unknown binding %q (want %s or %s)", c.Binding, BindAFPacket, BindNone)
			}
		case "policy":
			c.Policy = d.path(v, "policy")
		case "store":
			c.Store = d.store(v, "store")
		case "store_timeout":
			c.StoreTimeout = d.duration(v, "store_timeout")
		case "uplink":
			c.Uplink = d.str(v, "uplink")
		case "ports":
			ifaces := map[string]string{}
			d.entries(v, "ports", "VM name to interface", func(vk, vv *yaml.Node, field string) {
				if _, dup := c.Ports[vk.Value]; dup {
					d.errf(vk, field, "VM given twice")
					return
				}
				iface := d.str(vv, field)
				if iface == "" {
					d.errf(vv, field, "want the interface of the VM's port")
					return
				}
				if other, dup := ifaces[iface]; dup {
					d.errf(vv, field, "interface %q is already the port of %s", iface, other)
				}
				ifaces[iface] = vk.Value
				c.Ports[vk.Value] = iface
			})
		case "control":
			c.Control = d.path(v, "control")
		case "metrics":
			c.Metrics = d.str(v, "metrics")
			if c.Metrics != "" {
				if _, _, err := net.SplitHostPort(c.Metrics); err != nil {
					d.errf(v, "metrics", "want host:port (%v)", err)
				}
			}
		case "log_level":
			if err := c.LogLevel.UnmarshalText([]byte(d.str(v, "log_level"))); err != nil {
				d.errf(v, "log_level", "want debug, info, warn or error")
			}
		case "next_hop_mac":
			c.NextHopMAC = d.mac(v, "next_hop_mac")
		case "uplink_mac":
			c.UplinkMAC = d.mac(v, "uplink_mac")
		case "flow_idle":
			c.FlowIdle = d.duration(v, "flow_idle")
		case "watch_interval":
			c.WatchInterval = d.duration(v, "watch_interval")
		case "netns":
			c.NetNS = d.str(v, "netns")
		case "tunnels":
			c.Tunnels = map[hal.EncapKind]string{}
			d.entries(v, "tunnels", "encapsulation (vxlan, geneve, nvgre) to device", func(vk, vv *yaml.Node, field string) {
				kind, ok := map[string]hal.EncapKind{"vxlan": hal.EncapVXLAN, "geneve": hal.EncapGeneve, "nvgre": hal.EncapNVGRE}[vk.Value]
				if !ok {
					d.errf(vk, field, "unknown encapsulation (want vxlan, geneve or nvgre)")
					return
				}
				c.Tunnels[kind] = d.str(vv, field)
			})
		case "driver_options":
			c.DriverOptions = map[string]string{}
			d.entries(v, "driver_options", "the driver's option names to values", func(vk, vv *yaml.Node, field string) {
				if _, dup := c.DriverOptions[vk.Value]; dup {
					d.errf(vk, field, "given twice")
					return
				}
				c.DriverOptions[vk.Value] = d.str(vv, field)
				optKeys = append(optKeys, vk)
				optVals = append(optVals, vv)
			})
		case "gateway":
			c.Gateway = d.gateway(k, v)
		case "seal_public_key":
			c.SealPublicKey = d.path(v, "seal_public_key")
		default:
			d.errf(k, k.Value, "unknown field (known: %s)", strings.Join(knownFields, ", "))
		}
	})
	for _, f := range []struct {
		name string
		val  string
	}{{"host", c.Host}, {"driver", c.Driver}, {"uplink", c.Uplink}, {"control", c.Control}} {
		if f.val == "" && seen[f.name] == nil {
			d.errs = append(d.errs, &ConfigError{File: path, Line: top.Line, Column: top.Column, Field: f.name, Msg: "missing"})
		}
	}
	switch {
	case seen["policy"] == nil && seen["store"] == nil:
		d.errs = append(d.errs, &ConfigError{File: path, Line: top.Line, Column: top.Column, Field: "policy",
			Msg: "missing (give a policy file, or a store to follow)"})
	case seen["policy"] != nil && seen["store"] != nil:
		d.errf(seen["store"], "store", "a configuration has a policy file or a store, not both (policy is on line %d)", seen["policy"].Line)
	}
	if seen["store_timeout"] != nil && seen["store"] == nil {
		d.errf(seen["store_timeout"], "store_timeout", "only meaningful with a store")
	}
	if c.StoreTimeout == 0 {
		c.StoreTimeout = 30 * time.Second
	}
	if c.Driver != "softnic" && seen["binding"] != nil {
		d.errf(seen["binding"], "binding", "only the softnic driver is bound by the daemon; %s attaches to the interfaces itself", c.Driver)
	}
	if driver.Known(c.Driver) {
		takes := driver.Options(c.Driver)
		for i, k := range optKeys {
			if !contains(takes, k.Value) {
				known := "it takes none"
				if len(takes) > 0 {
					known = "it takes " + strings.Join(takes, ", ")
				}
				d.errf(k, "driver_options."+k.Value, "the %s driver has no such option (%s)", c.Driver, known)
				continue
			}
			if ownDriver(c.Driver) && contains(limitOptions, k.Value) {
				if _, err := limitOption(c.Driver, c.DriverOptions, k.Value); err != nil {
					d.errf(optVals[i], "driver_options."+k.Value, "%v", err)
				}
			}
		}
	}
	if c.WatchInterval <= 0 {
		d.errf(seen["watch_interval"], "watch_interval", "must be positive")
	}
	d.checkGatewayRole(c, seen)
	if len(d.errs) > 0 {
		sort.SliceStable(d.errs, func(i, j int) bool { return d.errs[i].Line < d.errs[j].Line })
		return nil, d.errs
	}
	return c, nil
}

var knownFields = []string{"host", "driver", "binding", "policy", "store", "store_timeout", "uplink", "ports", "control", "metrics",
	"log_level", "next_hop_mac", "uplink_mac", "flow_idle", "watch_interval", "netns", "tunnels", "driver_options", "gateway", "seal_public_key"}

// ownDriver reports whether name is one of the drivers this package
// registers (a program may register another under a name of its own).
func ownDriver(name string) bool {
	return name == "softnic" || name == "xdp" || name == "tcflower"
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

type cfgDecoder struct {
	file string
	errs ConfigErrors
}

func (d *cfgDecoder) errf(n *yaml.Node, field, format string, a ...any) {
	e := &ConfigError{File: d.file, Field: field, Msg: fmt.Sprintf(format, a...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	d.errs = append(d.errs, e)
}

// fields calls each with every field of the mapping n, in order: the
// key's node, the value's, and the field's name (prefix and key). A field
// given twice is reported and skipped. It returns the key's node of each
// field by name, for the checks between fields.
func (d *cfgDecoder) fields(n *yaml.Node, prefix string, each func(k, v *yaml.Node, field string)) map[string]*yaml.Node {
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if prev, dup := seen[k.Value]; dup {
			d.errf(k, prefix+k.Value, "given twice (first on line %d)", prev.Line)
			continue
		}
		seen[k.Value] = k
		each(k, n.Content[i+1], prefix+k.Value)
	}
	return seen
}

// entries calls each with every entry of the mapping n, given for field,
// in order: the key's node, the value's, and the entry's own field
// (field.key). When n is no mapping, it says so ("want a mapping of "
// what) and calls each with nothing.
func (d *cfgDecoder) entries(n *yaml.Node, field, what string, each func(k, v *yaml.Node, field string)) {
	if n.Kind != yaml.MappingNode {
		d.errf(n, field, "want a mapping of %s", what)
		return
	}
	for j := 0; j+1 < len(n.Content); j += 2 {
		k := n.Content[j]
		each(k, n.Content[j+1], field+"."+k.Value)
	}
}

func (d *cfgDecoder) str(n *yaml.Node, field string) string {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		d.errf(n, field, "want a string")
		return ""
	}
	return n.Value
}

// path resolves a relative path against the configuration file's directory,
// so that a configuration and its policy can move together.
func (d *cfgDecoder) path(n *yaml.Node, field string) string {
	p := d.str(n, field)
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(d.file), p)
}

// store checks a store's name: a scheme://… is kept as it is (the program
// that opens it says whether it knows the scheme); file:PATH and a bare path
// are resolved against the configuration's directory, like policy.
func (d *cfgDecoder) store(n *yaml.Node, field string) string {
	s := d.str(n, field)
	switch {
	case s == "":
		if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
			d.errf(n, field, "want a store: etcd://HOST:PORT/PREFIX/ or file:PATH")
		}
		return ""
	case strings.Contains(s, "://"):
		return s
	case strings.HasPrefix(s, "file:"):
		p := strings.TrimPrefix(s, "file:")
		if p == "" {
			d.errf(n, field, "file: needs a path")
			return ""
		}
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(d.file), p)
		}
		return "file:" + p
	case s == "mem:":
		d.errf(n, field, "mem: is an in-process store that nothing else can write; a daemon follows etcd://… or file:PATH")
		return ""
	}
	if !filepath.IsAbs(s) {
		s = filepath.Join(filepath.Dir(d.file), s)
	}
	return "file:" + s
}

func (d *cfgDecoder) mac(n *yaml.Node, field string) hal.MAC {
	s := d.str(n, field)
	if s == "" {
		return hal.MAC{}
	}
	m, err := hal.ParseMAC(s)
	if err != nil {
		d.errf(n, field, "not a MAC address: %q", s)
	}
	return m
}

func (d *cfgDecoder) duration(n *yaml.Node, field string) time.Duration {
	s := d.str(n, field)
	if s == "" {
		return 0
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		d.errf(n, field, "not a duration such as 30s or 500ms: %q", s)
	}
	return v
}

// IsConfigError reports whether err comes from the checks of a
// configuration file (as opposed to, say, a file that cannot be read).
func IsConfigError(err error) bool {
	var l ConfigErrors
	var e *ConfigError
	return errors.As(err, &l) || errors.As(err, &e)
}

package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/nicpath/nicpath/agent/driver"
	_ "github.com/nicpath/nicpath/drivers/remote" // registers "remote"
	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/drivers/softnic/afpacket"
	"github.com/nicpath/nicpath/drivers/tcflower"
	"github.com/nicpath/nicpath/drivers/xdp"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/haltest"
	"github.com/nicpath/nicpath/internal/nsexec"
	"github.com/nicpath/nicpath/policy"
)

// portPlan is the daemon's port numbering: the VMs of Config.Ports in name
// order get IDs 1…n, the uplink n+1. Every driver is given the same IDs, so
// that flows name the same ports whatever the driver.
type portPlan struct {
	vms    []string // by port ID - 1
	ifname map[hal.PortID]string
	vmPort map[string]hal.PortID
	vmOf   map[hal.PortID]string
	uplink hal.PortID
}

func planPorts(c *Config) portPlan {
	p := portPlan{ifname: map[hal.PortID]string{}, vmPort: map[string]hal.PortID{}, vmOf: map[hal.PortID]string{}}
	for vm := range c.Ports {
		p.vms = append(p.vms, vm)
	}
	sort.Strings(p.vms)
	for i, vm := range p.vms {
		id := hal.PortID(i + 1)
		p.vmPort[vm], p.vmOf[id] = id, vm
		p.ifname[id] = c.Ports[vm]
	}
	p.uplink = hal.PortID(len(p.vms) + 1)
	p.ifname[p.uplink] = c.Uplink
	return p
}

// planFromNIC numbers the ports the way a NIC the caller opened does:
// every configured interface must be one of its ports, by name.
func planFromNIC(c *Config, nic hal.NIC) (portPlan, error) {
	byName := map[string]hal.Port{}
	for _, p := range nic.Ports() {
		byName[p.Name] = p
	}
	p := portPlan{ifname: map[hal.PortID]string{}, vmPort: map[string]hal.PortID{}, vmOf: map[hal.PortID]string{}}
	for vm := range c.Ports {
		p.vms = append(p.vms, vm)
	}
	sort.Strings(p.vms)
	for _, vm := range p.vms {
		np, ok := byName[c.Ports[vm]]
		if !ok || np.Kind != hal.PortVPort {
			return p, fmt.Errorf("%s: ports.%s: the NIC has no vport named %q", c.File, vm, c.Ports[vm])
		}
		p.vmPort[vm], p.vmOf[np.ID], p.ifname[np.ID] = np.ID, vm, np.Name
	}
	up, ok := byName[c.Uplink]
	if !ok || up.Kind != hal.PortUplink {
		return p, fmt.Errorf("%s: uplink: the NIC has no uplink named %q", c.File, c.Uplink)
	}
	p.uplink, p.ifname[up.ID] = up.ID, up.Name
	return p, nil
}

// matches reports whether the NIC numbers and names its ports as the plan
// does (the drivers given the plan's ports do; a remote NIC names its own).
func (p portPlan) matches(nic hal.NIC) bool {
	ports := nic.Ports()
	if len(ports) != len(p.ifname) {
		return false
	}
	for _, np := range ports {
		name, ok := p.ifname[np.ID]
		if !ok || name != np.Name || (np.ID == p.uplink) != (np.Kind == hal.PortUplink) {
			return false
		}
	}
	return true
}

// uplinkMTU is the MTU an unbound softnic uplink gets: room for a 1500-byte
// inner packet and the largest encapsulation the vswitch uses over IPv4.
const uplinkMTU = 1600

// defaultUplinkMAC is the uplink's MAC when neither the interface nor the
// configuration gives one (a locally administered address).
var defaultUplinkMAC = hal.MustMAC("02:6e:70:00:00:01")

// opened is a NIC the daemon opened, or the caller's.
type opened struct {
	nic      hal.NIC // closed with the daemon
	external hal.NIC // the caller's (NewWithNIC): left open
}

func (o *opened) device() hal.NIC {
	if o.external != nil {
		return o.external
	}
	return o.nic
}

func (o *opened) close() error {
	if o.nic != nil {
		return o.nic.Close()
	}
	return nil
}

// The drivers of this module; others register with driver.Register (or
// RegisterDriver), from their own package or the program's.
func init() {
	driver.Register("softnic", openSoftnic, "crypto", "seal_key", "max_rules", "max_batch")
	driver.Register("xdp", openXDP, "max_rules", "max_batch")
	driver.Register("tcflower", openTCFlower, "max_rules", "max_batch")
}

// limitOptions are the driver_options of this module's drivers that size
// the rule table (Capabilities.MaxRules) and bound one Apply call
// (Capabilities.MaxBatch): whole numbers, 0 or absent for the driver's
// default.
var limitOptions = []string{"max_rules", "max_batch"}

// limitMost is the largest value a driver takes for a limit option, where
// the driver has one.
var limitMost = map[string]map[string]int{"softnic": {"max_rules": softnic.MostRules}, "xdp": {"max_rules": xdp.MostRules}}

// limitOption reads the limit option name of driver drv from opts (0 when
// absent). Its error does not name the field; callers do.
func limitOption(drv string, opts map[string]string, name string) (int, error) {
	s := opts[name]
	if s == "" {
		return 0, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%q: want a whole number, 0 or more (0: the driver's default)", s)
	}
	if most, ok := limitMost[drv][name]; ok && v > most {
		return 0, fmt.Errorf("%d is above the %s driver's maximum, %d", v, drv, most)
	}
	return v, nil
}

// limits reads max_rules and max_batch of driver drv from opts.
func limits(drv string, opts map[string]string) (rules, batch int, err error) {
	if rules, err = limitOption(drv, opts, "max_rules"); err != nil {
		return 0, 0, fmt.Errorf("driver_options.max_rules: %w", err)
	}
	if batch, err = limitOption(drv, opts, "max_batch"); err != nil {
		return 0, 0, fmt.Errorf("driver_options.max_batch: %w", err)
	}
	return rules, batch, nil
}

// RegisterDriver makes a driver known to configurations by name, with the
// driver_options it takes; see package driver (a driver package, which may
// not import the agent, calls driver.Register: it is the same registry).
func RegisterDriver(name string, open driver.Opener, options ...string) {
	driver.Register(name, open, options...)
}

// openNIC opens the driver the configuration names on its interfaces.
// onReconnect is called after the driver got its device back (a remote
// NIC's channel).
func openNIC(ctx context.Context, c *Config, st *policy.State, p portPlan, log *slog.Logger, onReconnect func()) (hal.NIC, error) {
	dc := driver.Config{Host: c.Host, NetNS: c.NetNS, Binding: c.Binding, Tunnels: c.Tunnels,
		Options: c.DriverOptions, Dir: filepath.Dir(c.File), Logger: log, OnReconnect: onReconnect}
	for _, vm := range p.vms {
		id := p.vmPort[vm]
		dp := driver.Port{ID: id, Name: p.ifname[id], Kind: hal.PortVPort, VM: vm}
		if v, ok := st.VM(vm); ok {
			dp.MAC = hal.MAC(v.MAC)
		}
		dc.Ports = append(dc.Ports, dp)
	}
	dc.Ports = append(dc.Ports, driver.Port{ID: p.uplink, Name: c.Uplink, Kind: hal.PortUplink, MAC: c.UplinkMAC})
	return driver.Open(ctx, c.Driver, dc)
}

func openXDP(ctx context.Context, c driver.Config) (hal.NIC, error) {
	pcs := make([]xdp.PortConfig, 0, len(c.Ports))
	for _, p := range c.Ports {
		pcs = append(pcs, xdp.PortConfig{ID: p.ID, Name: p.Name, Kind: p.Kind})
	}
	rules, batch, err := limits("xdp", c.Options)
	if err != nil {
		return nil, err
	}
	return xdp.Open(ctx, xdp.Config{NetNS: c.NetNS, Ports: pcs, MaxRules: rules, MaxBatch: batch})
}

func openTCFlower(ctx context.Context, c driver.Config) (hal.NIC, error) {
	cfg, err := tcflowerConfig(c)
	if err != nil {
		return nil, err
	}
	return tcflower.Open(ctx, cfg)
}

func tcflowerConfig(c driver.Config) (tcflower.Config, error) {
	pcs := make([]tcflower.PortConfig, 0, len(c.Ports))
	for _, p := range c.Ports {
		pcs = append(pcs, tcflower.PortConfig{ID: p.ID, Name: p.Name, Kind: p.Kind})
	}
	rules, batch, err := limits("tcflower", c.Options)
	if err != nil {
		return tcflower.Config{}, err
	}
	return tcflower.Config{NetNS: c.NetNS, Ports: pcs, Tunnels: c.Tunnels, MaxRules: rules, MaxBatch: batch}, nil
}

// boundSoftnic is a softnic whose ports are bound to interfaces: closing it
// closes the bindings first. It embeds the NIC, so it has every method of
// it (the optional interfaces, and Port for Agent.SoftPort).
type boundSoftnic struct {
	*softnic.NIC
	bindings []*afpacket.Binding
}

func (b *boundSoftnic) Close() error {
	for _, x := range b.bindings {
		x.Close()
	}
	return b.NIC.Close()
}

func openSoftnic(_ context.Context, c driver.Config) (hal.NIC, error) {
	rules, batch, err := limits("softnic", c.Options)
	if err != nil {
		return nil, err
	}
	var pcs []softnic.PortConfig
	ifaces := map[hal.PortID]*net.Interface{}
	if c.Binding == BindAFPacket {
		err := nsexec.Do(c.NetNS, func() error {
			for _, p := range c.Ports {
				ifi, err := net.InterfaceByName(p.Name)
				if err != nil {
					return fmt.Errorf("port %d: interface %s: %w", p.ID, p.Name, err)
				}
				ifaces[p.ID] = ifi
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	for _, p := range c.Ports {
		if p.Kind != hal.PortVPort {
			continue
		}
		pc := softnic.PortConfig{Name: p.Name, Kind: hal.PortVPort, MAC: p.MAC}
		if ifi := ifaces[p.ID]; ifi != nil {
			pc.MTU = ifi.MTU
		}
		pcs = append(pcs, pc)
	}
	uplink := c.Ports[len(c.Ports)-1]
	up := softnic.PortConfig{Name: uplink.Name, Kind: hal.PortUplink, MAC: uplink.MAC, MTU: uplinkMTU}
	if ifi := ifaces[uplink.ID]; ifi != nil {
		up.MTU = ifi.MTU
		if up.MAC == (hal.MAC{}) && len(ifi.HardwareAddr) == 6 {
			up.MAC = hal.MAC(ifi.HardwareAddr)
		}
	}
	if up.MAC == (hal.MAC{}) {
		up.MAC = defaultUplinkMAC
	}
	pcs = append(pcs, up)
	sc := softnic.Config{Device: c.Host, Ports: pcs, MaxRules: rules, MaxBatch: batch}
	if err := softnicCrypto(&sc, c); err != nil {
		return nil, err
	}
	n, err := softnic.New(sc)
	if err != nil {
		return nil, err
	}
	if c.Binding != BindAFPacket {
		return n, nil
	}
	o := &boundSoftnic{NIC: n}
	// The bindings' sockets are opened in the interfaces' namespace and
	// stay there; the daemon itself (its store client, its control socket)
	// stays in its own.
	err = nsexec.Do(c.NetNS, func() error {
		for _, p := range c.Ports {
			port, err := n.Port(p.ID)
			if err != nil {
				return err
			}
			b, err := afpacket.Bind(port, p.Name, afpacket.Options{Logger: c.Logger})
			if err != nil {
				return err
			}
			o.bindings = append(o.bindings, b)
		}
		return nil
	})
	if err != nil {
		o.Close()
		return nil, err
	}
	return o, nil
}

// observedNIC decorates the opened NIC for the daemon's observers: rule
// programming latency and errors for the metrics, and a tap on the
// exception path for captures. The vswitch programs the NIC through it;
// haltest.Wrap gives it exactly the optional interfaces of the NIC (the
// vswitch finds hal.AtomicApplier and hal.TunnelTerminator by type
// assertion), atomic batches observed as Apply's are.
type observedNIC struct {
	haltest.Decorator
	m   *metrics
	cap *capturer
}

func (o *observedNIC) Apply(ctx context.Context, ops []hal.Op, results []hal.OpResult) error {
	start := time.Now()
	err := o.Inner.Apply(ctx, ops, results)
	o.m.observeApply(time.Since(start), ops, results[:len(ops)])
	return err
}

func (o *observedNIC) ApplyAtomic(ctx context.Context, ops []hal.Op, results []hal.OpResult) error {
	start := time.Now()
	err := o.Inner.(hal.AtomicApplier).ApplyAtomic(ctx, ops, results)
	o.m.observeApply(time.Since(start), ops, results[:len(ops)])
	return err
}

func (o *observedNIC) Activate(ctx context.Context, scope hal.Scope, gen hal.Generation) error {
	start := time.Now()
	err := o.Inner.Activate(ctx, scope, gen)
	o.m.observeActivate(time.Since(start), err)
	return err
}

func (o *observedNIC) ReadExceptions(ctx context.Context, batch []hal.Exception) (int, error) {
	n, err := o.Inner.ReadExceptions(ctx, batch)
	if n > 0 {
		o.cap.write(batch[:n])
	}
	return n, err
}

func observe(n hal.NIC, m *metrics, c *capturer) hal.NIC {
	return haltest.Wrap(&observedNIC{Decorator: haltest.Decorator{Inner: n}, m: m, cap: c})
}

// errClass names an operation's failure for the metrics.
func errClass(err error) string {
	switch {
	case errors.Is(err, hal.ErrNotSupported):
		return "not_supported"
	case errors.Is(err, hal.ErrTableFull):
		return "table_full"
	case errors.Is(err, hal.ErrNotApplied):
		return "not_applied"
	case errors.Is(err, hal.ErrClosed):
		return "closed"
	}
	var op *hal.OpError
	if errors.As(err, &op) {
		return "device"
	}
	return "other"
}

package driver

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/nicpath/nicpath/hal"
)

// Port is one port the opener opens.
type Port struct {
	ID   hal.PortID
	Name string // the interface (or the device's own name for the port)
	Kind hal.PortKind
	// VM is the name, in the policy, of the VM on a vport.
	VM string
	// MAC is the VM's MAC in the policy for a vport, the configured
	// uplink_mac for the uplink; zero when there is none.
	MAC hal.MAC
}

// Config is what an opener is given.
type Config struct {
	// Host is this host's name in the policy.
	Host string
	// Ports are the VMs' ports with IDs 1…n and the uplink n+1, last.
	// Every driver numbers them so, that flows name the same ports
	// whatever the driver.
	Ports []Port
	// NetNS is the network namespace (a path such as /run/netns/x) of
	// the interfaces; empty is the agent's own.
	NetNS string
	// Binding says how softnic's ports reach the interfaces ("afpacket"
	// or "none"); the other drivers attach to the interfaces themselves.
	Binding string
	// Tunnels names flow-based tunnel devices by encapsulation (tcflower).
	Tunnels map[hal.EncapKind]string
	// Options are the configuration's driver_options, among those the
	// driver registered.
	Options map[string]string
	// Dir is the configuration file's directory: a relative path among
	// Options is relative to it.
	Dir string
	// Logger is the agent's.
	Logger *slog.Logger
	// OnReconnect, for a driver whose device can go away and come back
	// (a remote NIC's channel), is called after each reconnect, on a
	// goroutine of the driver's: the agent reconciles its switch against
	// the NIC's table then. Drivers that never reconnect ignore it.
	OnReconnect func()
}

// Opener opens a NIC. Close on the NIC it returns releases everything the
// opener set up for it.
type Opener func(ctx context.Context, cfg Config) (hal.NIC, error)

type entry struct {
	open    Opener
	options []string
}

var (
	mu      sync.RWMutex
	drivers = map[string]entry{}
	order   []string
)

// Register makes a driver known by name, with the driver_options it takes
// (a configuration naming another option is refused). It panics if the
// name is empty or taken, or open is nil, as database/sql.Register does:
// two drivers under one name is a program's mistake.
func Register(name string, open Opener, options ...string) {
	mu.Lock()
	defer mu.Unlock()
	if name == "" || open == nil {
		panic("driver: Register needs a name and an opener")
	}
	if _, dup := drivers[name]; dup {
		panic(fmt.Sprintf("driver: Register called twice for %q", name))
	}
	drivers[name] = entry{open: open, options: slices.Clone(options)}
	order = append(order, name)
}

// Names returns the registered drivers, in the order they registered.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	return slices.Clone(order)
}

// Known reports whether name is registered.
func Known(name string) bool {
	mu.RLock()
	defer mu.RUnlock()
	_, ok := drivers[name]
	return ok
}

// Options returns the driver_options name takes.
func Options(name string) []string {
	mu.RLock()
	defer mu.RUnlock()
	return slices.Clone(drivers[name].options)
}

// Open opens a NIC with the driver registered as name.
func Open(ctx context.Context, name string, cfg Config) (hal.NIC, error) {
	mu.RLock()
	e, ok := drivers[name]
	mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("unknown driver %q", name)
	}
	for k := range cfg.Options {
		if !slices.Contains(e.options, k) {
			return nil, fmt.Errorf("driver %s takes no option %q", name, k)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return e.open(ctx, cfg)
}

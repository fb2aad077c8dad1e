// Package acme is the driver of a fictional vendor's SmartNIC, the "Acme
// 9000", written the way a vendor would write theirs: it implements hal.NIC
// for its device and nothing else, and the vendor's agent hands it to
// nicpath's vswitch (see the integration guide in examples/agent).
//
// The Acme 9000 is a fixed-function pipeline: exact and masked matches on
// every field, VXLAN encapsulation and decapsulation, MAC rewrites, TTL,
// VLANs, counters and drops, 4096 rules — and no NAT stage (no IP address or
// port rewrites), no Geneve or NVGRE, no generations. Its driver says so:
// Capabilities lists only what the device does, and Validate refuses every
// rule that needs something else with a typed *hal.UnsupportedError naming
// the action, so that the vswitch keeps those flows in the host and explains
// why.
//
// There is no Acme hardware: the device's pipeline is emulated by softnic
// with the missing features disabled (a vendor's own simulator plays this
// role in their tests). Everything above the pipeline (capabilities,
// validation, the refusal errors, the port naming) is the driver's own, and
// its tests hold it to nicpath's conformance suite.
package acme

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
)

// DriverName is what Capabilities and errors call this driver.
const DriverName = "acme"

// MaxRules is the Acme 9000's rule table: 4096 entries of on-chip TCAM.
const MaxRules = 4096

// noNAT are the actions the Acme 9000's pipeline has no stage for.
var noNAT = hal.ActionsOf(hal.ActionSetIPSrc, hal.ActionSetIPDst, hal.ActionSetL4Src, hal.ActionSetL4Dst)

// Port describes one of the device's ports as the agent configures it.
type Port struct {
	Name string
	Kind hal.PortKind
	MAC  hal.MAC
	MTU  int
}

// NIC is an opened Acme 9000.
type NIC struct {
	dev    *softnic.NIC // the emulated pipeline
	caps   hal.Capabilities
	closed atomic.Bool
}

var (
	_ hal.NIC              = (*NIC)(nil)
	_ hal.TunnelTerminator = (*NIC)(nil)
)

// Open opens the device with the given ports (IDs 1…n in order).
func Open(serial string, ports []Port) (*NIC, error) {
	pcs := make([]softnic.PortConfig, len(ports))
	for i, p := range ports {
		pcs[i] = softnic.PortConfig{Name: p.Name, Kind: p.Kind, MAC: p.MAC, MTU: p.MTU}
	}
	dev, err := softnic.New(softnic.Config{Device: serial, Ports: pcs, MaxRules: MaxRules,
		Disable: softnic.Disable{Actions: noNAT, Encaps: hal.EncapsOf(hal.EncapGeneve, hal.EncapNVGRE),
			Decaps: hal.EncapsOf(hal.EncapGeneve, hal.EncapNVGRE), Generations: true}})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", DriverName, err)
	}
	caps := dev.Capabilities()
	caps.Driver = DriverName
	caps.Device = "Acme 9000 (emulated) serial " + serial
	caps.Notes = append(caps.Notes, "pipeline emulated in software: there is no Acme hardware")
	// The device programs rule by rule: it cannot promise all or nothing,
	// and does not implement hal.AtomicApplier.
	caps.AtomicBatch = false
	// Nor does it report the addresses it sees (no hal.AddressLearner).
	caps.AddressLearning = false
	return &NIC{dev: dev, caps: caps}, nil
}

// Capabilities reports what the device does.
func (n *NIC) Capabilities() hal.Capabilities { return n.caps }

// SetTunnelEndpoint gives the pipeline's tunnel filter the uplink's
// endpoint: tunnelled frames for another address or MAC are dropped
// (hal.ReasonNotLocal) before the flow table.
func (n *NIC) SetTunnelEndpoint(ctx context.Context, ep hal.TunnelEndpoint) error {
	if n.closed.Load() {
		return hal.ErrClosed
	}
	return n.dev.SetTunnelEndpoint(ctx, ep)
}

// Ports lists the device's ports.
func (n *NIC) Ports() []hal.Port { return n.dev.Ports() }

// Validate refuses, with the driver's own typed error, what the pipeline
// has no stage for; the rest is checked by the pipeline.
func (n *NIC) Validate(r *hal.Rule) error {
	for i, a := range r.Actions {
		if noNAT.Has(a.Kind) {
			return &hal.UnsupportedError{Driver: DriverName, Field: fmt.Sprintf("actions[%d] %s", i, a.Kind),
				Reason: "the Acme 9000 has no NAT stage: addresses and ports cannot be rewritten"}
		}
	}
	return n.dev.Validate(r)
}

// Apply programs a batch; operations the pipeline cannot take fail alone,
// with Validate's error.
func (n *NIC) Apply(ctx context.Context, ops []hal.Op, results []hal.OpResult) error {
	if err := hal.CheckApply(ctx, &n.caps, n.closed.Load(), ops, results); err != nil {
		return err
	}
	pass := make([]hal.Op, 0, len(ops))
	idx := make([]int, 0, len(ops))
	for i := range ops {
		results[i] = hal.OpResult{}
		if ops[i].Kind != hal.OpDelete {
			if err := n.Validate(&ops[i].Rule); err != nil {
				results[i].Err = err
				continue
			}
		}
		pass = append(pass, ops[i])
		idx = append(idx, i)
	}
	if len(pass) > 0 {
		res := make([]hal.OpResult, len(pass))
		n.dev.Apply(ctx, pass, res)
		for j, i := range idx {
			results[i] = res[j]
		}
	}
	return hal.Summarize(results[:len(ops)])
}

// Dump lists the installed rules.
func (n *NIC) Dump(ctx context.Context, fn func(*hal.RuleInfo) error) error {
	return n.dev.Dump(ctx, fn)
}

// Activate is refused: the Acme 9000 has no generations.
func (n *NIC) Activate(ctx context.Context, scope hal.Scope, gen hal.Generation) error {
	if n.closed.Load() {
		return hal.ErrClosed
	}
	return &hal.UnsupportedError{Driver: DriverName, Field: "generations", Reason: "the Acme 9000 has no generations"}
}

// ActiveGeneration is refused as Activate is.
func (n *NIC) ActiveGeneration(scope hal.Scope) (hal.Generation, error) {
	if n.closed.Load() {
		return 0, hal.ErrClosed
	}
	return 0, &hal.UnsupportedError{Driver: DriverName, Field: "generations", Reason: "the Acme 9000 has no generations"}
}

// ReadExceptions reads the device's exception queue.
func (n *NIC) ReadExceptions(ctx context.Context, batch []hal.Exception) (int, error) {
	return n.dev.ReadExceptions(ctx, batch)
}

// Inject sends frames out of a port.
func (n *NIC) Inject(ctx context.Context, port hal.PortID, frames [][]byte) error {
	return n.dev.Inject(ctx, port, frames)
}

// RuleCounters reads per-rule counters.
func (n *NIC) RuleCounters(ctx context.Context, ids []hal.RuleID, out []hal.Counters) error {
	return n.dev.RuleCounters(ctx, ids, out)
}

// PortCounters reads a port's counters.
func (n *NIC) PortCounters(ctx context.Context, port hal.PortID) (hal.PortCounters, error) {
	return n.dev.PortCounters(ctx, port)
}

// Stats reads the device-wide counters.
func (n *NIC) Stats(ctx context.Context) (hal.Stats, error) { return n.dev.Stats(ctx) }

// Close releases the device and removes its rules.
func (n *NIC) Close() error {
	n.closed.Store(true)
	return n.dev.Close()
}

// Wire returns the far side of a port: what is cabled to it (a VM, the
// network). The emulator exposes it so that the agent's demo and tests can
// play the VMs; real hardware would have real cables.
func (n *NIC) Wire(port hal.PortID) (*softnic.Port, error) { return n.dev.Port(port) }

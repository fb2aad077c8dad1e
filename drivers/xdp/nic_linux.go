//go:build linux

package xdp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/perf"
	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/internal/afpacket"
	"github.com/nicpath/nicpath/internal/nsexec"
)

var (
	_ hal.NIC              = (*NIC)(nil)
	_ hal.TunnelTerminator = (*NIC)(nil)
)

// ErrDetached means the program of a port is no longer attached to its
// interface: someone detached the link, or the interface went away.
var ErrDetached = errors.New("XDP program detached")

// port is one opened port.
type port struct {
	hal.Port
	cfg     PortConfig
	ifindex int
	mode    Mode
	prog    *ebpf.Program
	link    link.Link        // nil for a port without a device
	sock    *afpacket.Socket // for Inject; nil without a device
	tracer  *ebpf.Program
	injectN atomic.Uint64 // frames injected (added to tx)
	injectB atomic.Uint64
}

// NIC is a nicpath NIC whose rules live in BPF maps and whose datapath is an
// XDP program attached to every port's interface. See the package doc.
type NIC struct {
	cfg   Config
	caps  hal.Capabilities
	spec  *ebpf.CollectionSpec
	maps  map[string]*ebpf.Map
	ports map[hal.PortID]*port
	order []hal.PortID
	ncpu  int

	reader *perf.Reader
	readMu sync.Mutex // one ReadExceptions at a time: the reader and rec are shared
	rec    perf.Record
	lost   atomic.Uint64

	mu     sync.Mutex
	closed bool
	tab    *table
	active map[hal.Scope]hal.Generation
}

// Open loads the datapath, attaches it to every port of cfg and returns the
// NIC. On failure nothing stays attached or loaded.
func Open(ctx context.Context, cfg Config) (_ *NIC, err error) {
	c := cfg.withDefaults()
	for _, p := range c.Ports {
		if p.ID == 0 || p.ID >= MaxPorts {
			return nil, fmt.Errorf("xdp: port %q: ID %d is outside 1..%d", p.Name, p.ID, MaxPorts-1)
		}
	}
	spec, err := loadNicpath()
	if err != nil {
		return nil, fmt.Errorf("xdp: load program spec: %w", err)
	}
	spec.Maps["flows"].MaxEntries = uint32(c.MaxRules)
	spec.Maps["active_gen"].MaxEntries = uint32(c.MaxScopes)
	spec.Maps["rule_counters"].MaxEntries = uint32(c.MaxRules + 1)
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("xdp: possible CPUs: %w", err)
	}
	n := &NIC{cfg: c, spec: spec, maps: map[string]*ebpf.Map{}, ports: map[hal.PortID]*port{}, ncpu: ncpu,
		active: map[hal.Scope]hal.Generation{}}
	defer func() {
		if err != nil {
			n.release()
		}
	}()
	for name, ms := range spec.Maps {
		if name == ".rodata" || name == ".data" || name == ".bss" {
			continue
		}
		m, err := ebpf.NewMap(ms)
		if err != nil {
			return nil, fmt.Errorf("xdp: create map %s: %w", name, err)
		}
		n.maps[name] = m
	}
	n.caps = baseCapabilities(&c)
	n.caps.Device = ""
	// Table sizes as the kernel created them, not as asked.
	if info, err := n.maps["flows"].Info(); err == nil {
		n.caps.MaxRules = int(info.MaxEntries)
	}
	if info, err := n.maps["active_gen"].Info(); err == nil {
		n.caps.MaxScopes = int(info.MaxEntries)
	}
	if err := n.maps["config"].Update(uint32(0), uint32(0), ebpf.UpdateAny); err != nil {
		return nil, fmt.Errorf("xdp: init config: %w", err)
	}
	for _, pc := range c.Ports {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := n.openPort(pc); err != nil {
			return nil, err
		}
	}
	n.caps.Notes = append(n.caps.Notes, fmt.Sprintf("program verified with every action (%d instances, one per port)", len(c.Ports)))
	n.reader, err = perf.NewReader(n.maps["exceptions"], c.ExceptionBuffer)
	if err != nil {
		return nil, fmt.Errorf("xdp: exception ring: %w", err)
	}
	n.tab = newTable(DriverName, c.MaxRules, c.MaxScopes, c.MaxRules+1, func(id hal.PortID) bool {
		_, ok := n.ports[id]
		return ok
	}, &mapBackend{n: n})
	return n, nil
}

// loadInstance loads one instance of the program for a port, sharing the
// NIC's maps; trace makes it record its verdicts (for Run).
func (n *NIC) loadInstance(id hal.PortID, trace bool) (*ebpf.Program, error) {
	spec := n.spec.Copy()
	if err := spec.Variables["in_port"].Set(uint32(id)); err != nil {
		return nil, err
	}
	var t uint32
	if trace {
		t = 1
	}
	if err := spec.Variables["trace_on"].Set(t); err != nil {
		return nil, err
	}
	var objs struct {
		Prog *ebpf.Program `ebpf:"nicpath_xdp"`
	}
	if err := spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: n.maps}); err != nil {
		return nil, fmt.Errorf("xdp: load program for port %d: %w", id, err)
	}
	return objs.Prog, nil
}

func (n *NIC) openPort(pc PortConfig) error {
	p := &port{cfg: pc, Port: hal.Port{ID: pc.ID, Name: pc.Name, Kind: pc.Kind, MTU: 1500}}
	n.ports[pc.ID] = p
	n.order = append(n.order, pc.ID)
	prog, err := n.loadInstance(pc.ID, false)
	if err != nil {
		return err
	}
	p.prog = prog
	err = inNetNS(n.cfg.NetNS, func() error {
		if pc.Name == "" {
			// A port without a device: outputs to it redirect to the
			// loopback device's entry, which Run never transmits.
			p.ifindex = 1
			return n.maps["tx_ports"].Update(uint32(pc.ID), uint32(1), ebpf.UpdateAny)
		}
		ifi, err := net.InterfaceByName(pc.Name)
		if err != nil {
			return fmt.Errorf("xdp: port %d: %w", pc.ID, err)
		}
		p.ifindex, p.MTU = ifi.Index, ifi.MTU
		copy(p.MAC[:], ifi.HardwareAddr)
		if err := n.attach(p); err != nil {
			return err
		}
		n.caps.Notes = append(n.caps.Notes, probeAttached(p))
		if err := n.maps["tx_ports"].Update(uint32(pc.ID), uint32(ifi.Index), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("xdp: port %d: devmap: %w", pc.ID, err)
		}
		// Send only: a socket that received would copy every frame on
		// the interface into a queue nobody reads.
		sock, err := afpacket.Open(pc.Name, afpacket.Options{SendOnly: true})
		if err != nil {
			return fmt.Errorf("xdp: port %d: inject socket: %w", pc.ID, err)
		}
		p.sock = sock
		return nil
	})
	if err != nil {
		return err
	}
	return n.maps["ports"].Update(uint32(pc.ID), bpfPortCfg{MTU: uint32(p.MTU), Ifindex: uint32(p.ifindex)}, ebpf.UpdateAny)
}

// attach links p's program to its interface in the configured mode; in auto
// mode driver mode first, generic mode when the driver refuses.
func (n *NIC) attach(p *port) error {
	try := func(m Mode, f link.XDPAttachFlags) error {
		l, err := link.AttachXDP(link.XDPOptions{Program: p.prog, Interface: p.ifindex, Flags: f})
		if err != nil {
			return err
		}
		p.link, p.mode = l, m
		return nil
	}
	var err error
	switch n.cfg.Mode {
	case ModeDriver:
		err = try(ModeDriver, link.XDPDriverMode)
	case ModeGeneric:
		err = try(ModeGeneric, link.XDPGenericMode)
	case ModeOffload:
		err = try(ModeOffload, link.XDPOffloadMode)
		if err != nil {
			n.caps.Notes = append(n.caps.Notes, fmt.Sprintf("%s: offload attach refused: %v", p.Name, err))
		}
	default:
		if err = try(ModeDriver, link.XDPDriverMode); err != nil {
			n.caps.Notes = append(n.caps.Notes, fmt.Sprintf("%s: driver mode refused (%v); generic mode", p.Name, err))
			err = try(ModeGeneric, link.XDPGenericMode)
		}
	}
	if err != nil {
		return &hal.OpError{Driver: DriverName, Op: "attach " + p.Name, Err: err}
	}
	n.caps.Notes = append(n.caps.Notes, fmt.Sprintf("%s: attached in %s mode", p.Name, p.mode))
	if p.mode == ModeOffload {
		n.caps.Location = hal.LocationHardware
	}
	if n.caps.Device != "" {
		n.caps.Device += ","
	}
	n.caps.Device += p.Name
	return nil
}

// inNetNS runs fn on a locked OS thread inside the namespace at path (or
// directly when path is empty); see nsexec.Do.
func inNetNS(path string, fn func() error) error { return nsexec.Do(path, fn) }

// release frees everything Open or the NIC acquired. Links first, so the
// interfaces stop running the program before its maps go.
func (n *NIC) release() error {
	var errs []error
	for _, id := range n.order {
		p := n.ports[id]
		if p.link != nil {
			if err := p.link.Close(); err != nil {
				errs = append(errs, fmt.Errorf("detach %s: %w", p.Name, err))
			}
			p.link = nil
		}
	}
	if n.reader != nil {
		n.reader.Close()
	}
	for _, id := range n.order {
		p := n.ports[id]
		if p.sock != nil {
			p.sock.Close()
			p.sock = nil
		}
		if p.prog != nil {
			p.prog.Close()
		}
		if p.tracer != nil {
			p.tracer.Close()
		}
	}
	for _, m := range n.maps {
		m.Close()
	}
	return errors.Join(errs...)
}

// Close detaches the program from every interface and frees every program
// and map: the interfaces are left as they were before Open.
func (n *NIC) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return hal.ErrClosed
	}
	n.closed = true
	n.mu.Unlock()
	// The reader's Close wakes a blocked ReadExceptions; take readMu after
	// it so that no read is left using freed rings.
	err := n.release()
	n.readMu.Lock()
	//lint:ignore SA2001 the lock waits for a running read to leave; nothing is guarded
	n.readMu.Unlock()
	return err
}

func (n *NIC) closedErr() error {
	if n.closed {
		return hal.ErrClosed
	}
	return nil
}

// Capabilities are what Open found: see the package doc.
func (n *NIC) Capabilities() hal.Capabilities {
	c := n.caps
	c.Notes = append([]string(nil), n.caps.Notes...)
	return c
}

// Ports lists the ports in the order of the Config.
func (n *NIC) Ports() []hal.Port {
	out := make([]hal.Port, 0, len(n.order))
	for _, id := range n.order {
		out = append(out, n.ports[id].Port)
	}
	return out
}

// PortMode says how the program is attached to a port's interface
// (ModeAuto for a port without a device).
func (n *NIC) PortMode(id hal.PortID) (Mode, error) {
	p, ok := n.ports[id]
	if !ok {
		return 0, fmt.Errorf("xdp: port %d: %w", id, hal.ErrNotFound)
	}
	return p.mode, nil
}

// Attached checks that every port's program is still attached to its
// interface. It returns an error wrapping ErrDetached naming the ports
// whose program someone detached, or whose interface is gone.
func (n *NIC) Attached() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.closedErr(); err != nil {
		return err
	}
	var errs []error
	for _, id := range n.order {
		p := n.ports[id]
		if p.link == nil {
			continue
		}
		info, err := p.link.Info()
		if err != nil {
			errs = append(errs, fmt.Errorf("port %d (%s): %w", id, p.Name, err))
			continue
		}
		if x := info.XDP(); x == nil || x.Ifindex == 0 {
			errs = append(errs, fmt.Errorf("port %d (%s): %w", id, p.Name, ErrDetached))
		}
	}
	return errors.Join(errs...)
}

// Replace loads a fresh instance of the datapath for every port and swaps
// it in on each link in one step, keeping the maps (and so the rules,
// counters and generations). The old programs are freed.
func (n *NIC) Replace() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.closedErr(); err != nil {
		return err
	}
	for _, id := range n.order {
		p := n.ports[id]
		prog, err := n.loadInstance(id, false)
		if err != nil {
			return err
		}
		if p.link != nil {
			if err := p.link.Update(prog); err != nil {
				prog.Close()
				return &hal.OpError{Driver: DriverName, Op: "replace " + p.Name, Err: err}
			}
		}
		p.prog.Close()
		p.prog = prog
	}
	return nil
}

// ProgramIDs returns the kernel IDs of the programs the NIC has loaded (for
// leak checks and bpftool).
func (n *NIC) ProgramIDs() []ebpf.ProgramID {
	n.mu.Lock()
	defer n.mu.Unlock()
	var ids []ebpf.ProgramID
	for _, id := range n.order {
		p := n.ports[id]
		for _, pr := range []*ebpf.Program{p.prog, p.tracer} {
			if pr == nil {
				continue
			}
			if info, err := pr.Info(); err == nil {
				if pid, ok := info.ID(); ok {
					ids = append(ids, pid)
				}
			}
		}
	}
	return ids
}

// Validate says whether the NIC can take r; see hal.RuleTable.
func (n *NIC) Validate(r *hal.Rule) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.closedErr(); err != nil {
		return err
	}
	return n.validate(r)
}

func (n *NIC) validate(r *hal.Rule) error {
	if err := hal.CheckRule(&n.caps, r); err != nil {
		return err
	}
	return n.tab.validate(r)
}

// Apply runs a batch of operations; see hal.RuleTable. Adds are written
// with BPF batch updates; each result says whether its operation landed.
func (n *NIC) Apply(ctx context.Context, ops []hal.Op, results []hal.OpResult) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := hal.CheckApply(ctx, &n.caps, n.closed, ops, results); err != nil {
		return err
	}
	n.tab.apply(ops, results[:len(ops)], n.validate)
	return hal.Summarize(results[:len(ops)])
}

// Dump reports every installed rule, with its counters when it counts.
func (n *NIC) Dump(ctx context.Context, fn func(*hal.RuleInfo) error) error {
	n.mu.Lock()
	if err := n.closedErr(); err != nil {
		n.mu.Unlock()
		return err
	}
	infos := make([]hal.RuleInfo, 0, len(n.tab.rules))
	for _, rs := range n.tab.rules {
		ri := hal.RuleInfo{Rule: rs.rule.Clone(), Location: n.caps.Location,
			Live: n.active[rs.rule.Scope] == rs.rule.Generation}
		if rs.enc.Flags&actCount != 0 {
			ri.Counters, _ = n.readCounter(rs.enc.Counter)
		}
		infos = append(infos, ri)
	}
	n.mu.Unlock()
	sort.Slice(infos, func(i, j int) bool { return infos[i].Rule.ID < infos[j].Rule.ID })
	for i := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(&infos[i]); err != nil {
			return err
		}
	}
	return nil
}

// Activate makes gen the live generation of scope: one write to the
// active-generation array, whatever the number of rules.
func (n *NIC) Activate(ctx context.Context, scope hal.Scope, gen hal.Generation) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.closedErr(); err != nil {
		return err
	}
	if int(scope) >= n.cfg.MaxScopes {
		return hal.Unsupported(DriverName, "scope", "scope %d is beyond the %d scopes of the generation map", scope, n.cfg.MaxScopes)
	}
	if err := n.maps["active_gen"].Update(uint32(scope), uint32(gen), ebpf.UpdateAny); err != nil {
		return &hal.OpError{Driver: DriverName, Op: "activate", Err: err}
	}
	n.active[scope] = gen
	return nil
}

// ActiveGeneration returns the live generation of scope (0 at first).
func (n *NIC) ActiveGeneration(scope hal.Scope) (hal.Generation, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.closedErr(); err != nil {
		return 0, err
	}
	return n.active[scope], nil
}

func (n *NIC) readCounter(idx uint32) (hal.Counters, error) {
	vals := make([]bpfCounters, n.ncpu)
	if err := n.maps["rule_counters"].Lookup(idx, &vals); err != nil {
		return hal.Counters{}, err
	}
	var c hal.Counters
	for _, v := range vals {
		c.Packets += v.Packets
		c.Bytes += v.Bytes
	}
	return c, nil
}

// RuleCounters fills out[i] for ids[i]: zero for a rule without a Count
// action, ErrNotFound for a rule that is not installed.
func (n *NIC) RuleCounters(ctx context.Context, ids []hal.RuleID, out []hal.Counters) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.closedErr(); err != nil {
		return err
	}
	for i, id := range ids {
		rs, ok := n.tab.rules[id]
		if !ok {
			return fmt.Errorf("xdp: counters of rule %d: %w", id, hal.ErrNotFound)
		}
		out[i] = hal.Counters{}
		if rs.enc.Flags&actCount != 0 {
			c, err := n.readCounter(rs.enc.Counter)
			if err != nil {
				return &hal.OpError{Driver: DriverName, Op: "read counters", Rule: id, Err: err}
			}
			out[i] = c
		}
	}
	return nil
}

// PortCounters sums the port's per-CPU counters; Tx includes injected frames.
func (n *NIC) PortCounters(ctx context.Context, id hal.PortID) (hal.PortCounters, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.closedErr(); err != nil {
		return hal.PortCounters{}, err
	}
	p, ok := n.ports[id]
	if !ok {
		return hal.PortCounters{}, fmt.Errorf("xdp: port %d: %w", id, hal.ErrNotFound)
	}
	vals := make([]bpfPortStats, n.ncpu)
	if err := n.maps["port_stats"].Lookup(uint32(id), &vals); err != nil {
		return hal.PortCounters{}, &hal.OpError{Driver: DriverName, Op: "port counters", Err: err}
	}
	var pc hal.PortCounters
	for _, v := range vals {
		pc.Rx.Packets += v.RxPackets
		pc.Rx.Bytes += v.RxBytes
		pc.Tx.Packets += v.TxPackets
		pc.Tx.Bytes += v.TxBytes
		pc.Drops += v.Drops
		pc.Exceptions += v.Exceptions
	}
	pc.Tx.Packets += p.injectN.Load()
	pc.Tx.Bytes += p.injectB.Load()
	return pc, nil
}

// Stats sums the exception and drop counters by reason. Exception events
// the ring had no room for count as queue_full drops.
func (n *NIC) Stats(ctx context.Context) (hal.Stats, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.closedErr(); err != nil {
		return hal.Stats{}, err
	}
	var s hal.Stats
	vals := make([]uint64, n.ncpu)
	for r := 0; r < int(hal.NumReasons); r++ {
		for j, dst := range []*uint64{&s.Exceptions[r], &s.Drops[r]} {
			if err := n.maps["reason_stats"].Lookup(uint32(j*int(hal.NumReasons)+r), &vals); err != nil {
				return s, &hal.OpError{Driver: DriverName, Op: "stats", Err: err}
			}
			for _, v := range vals {
				*dst += v
			}
		}
	}
	s.Drops[hal.ReasonQueueFull] += n.lost.Load()
	return s, nil
}

// ReadExceptions returns frames the datapath handed to the host: misses,
// ToHost actions and frames it could not process, each with its reason.
func (n *NIC) ReadExceptions(ctx context.Context, batch []hal.Exception) (int, error) {
	n.readMu.Lock()
	defer n.readMu.Unlock()
	n.mu.Lock()
	closed := n.closed
	n.mu.Unlock()
	if closed {
		return 0, hal.ErrClosed
	}
	count := 0
	for count < len(batch) {
		if count == 0 {
			// Wake up now and then to notice ctx.
			d := time.Now().Add(50 * time.Millisecond)
			if dl, ok := ctx.Deadline(); ok && dl.Before(d) {
				d = dl
			}
			n.reader.SetDeadline(d)
		} else {
			n.reader.SetDeadline(time.Now())
		}
		err := n.reader.ReadInto(&n.rec)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			if count > 0 {
				return count, nil
			}
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			continue
		case errors.Is(err, perf.ErrClosed):
			return count, hal.ErrClosed
		case err != nil:
			return count, &hal.OpError{Driver: DriverName, Op: "read exceptions", Err: err}
		}
		if n.rec.LostSamples > 0 {
			n.lost.Add(n.rec.LostSamples)
			continue
		}
		raw := n.rec.RawSample
		if len(raw) < excMetaLen {
			continue
		}
		e := &batch[count]
		e.Rule = hal.RuleID(binary.NativeEndian.Uint64(raw[0:8]))
		e.InPort = hal.PortID(binary.NativeEndian.Uint32(raw[8:12]))
		e.Reason = hal.Reason(binary.NativeEndian.Uint32(raw[12:16]))
		e.VNI = binary.NativeEndian.Uint32(raw[16:20])
		flen := int(binary.NativeEndian.Uint32(raw[20:24]))
		frame := raw[excMetaLen:]
		if flen < len(frame) {
			frame = frame[:flen] // the ring pads samples to 8 bytes
		}
		e.Len = copy(e.Buf, frame)
		e.Truncated = e.Len < len(frame)
		count++
	}
	return count, nil
}

// Inject sends frames out of port as they are, through an AF_PACKET socket
// on the port's interface: they leave on the wire (or the veth peer) without
// meeting the XDP program, which only sees received frames.
func (n *NIC) Inject(ctx context.Context, id hal.PortID, frames [][]byte) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.closedErr(); err != nil {
		return err
	}
	p, ok := n.ports[id]
	if !ok {
		return fmt.Errorf("xdp: inject on port %d: %w", id, hal.ErrNotFound)
	}
	if p.sock == nil {
		return hal.Unsupported(DriverName, "inject", "port %d has no device", id)
	}
	for _, f := range frames {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := p.sock.Send(f); err != nil {
			return &hal.OpError{Driver: DriverName, Op: "inject", Err: err}
		}
		p.injectN.Add(1)
		p.injectB.Add(uint64(len(f)))
	}
	return nil
}

// SetTunnelEndpoint makes an uplink accept tunnelled frames only for ep:
// the program drops any other (ReasonNotLocal) before decapsulating,
// matching or handing it to the host. An endpoint without Addrs turns the
// filter off for the port. See hal.TunnelTerminator.
func (n *NIC) SetTunnelEndpoint(ctx context.Context, ep hal.TunnelEndpoint) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.closedErr(); err != nil {
		return err
	}
	p, ok := n.ports[ep.Port]
	if !ok {
		return fmt.Errorf("xdp: tunnel endpoint on port %d: %w", ep.Port, hal.ErrNotFound)
	}
	if p.Kind != hal.PortUplink {
		return hal.Unsupported(DriverName, "tunnel endpoint", "port %d is a %v; tunnels end on uplinks", ep.Port, p.Kind)
	}
	v, on, err := encodeTunnelEndpoint(&ep, p.MAC)
	if err != nil {
		return err
	}
	m := n.maps["tun_eps"]
	if !on {
		if err := m.Delete(uint32(ep.Port)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return &hal.OpError{Driver: DriverName, Op: "tunnel endpoint", Err: err}
		}
		return nil
	}
	// One update replaces the whole entry (a hash element is swapped in),
	// so a frame never meets half an endpoint.
	if err := m.Update(uint32(ep.Port), &v, ebpf.UpdateAny); err != nil {
		return &hal.OpError{Driver: DriverName, Op: "tunnel endpoint", Err: err}
	}
	return nil
}

// mapBackend writes the table into the BPF maps.
type mapBackend struct{ n *NIC }

func fullErr(err error) error {
	if errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.ENOMEM) {
		return fmt.Errorf("%w: %v", errFull, err)
	}
	return err
}

func (b *mapBackend) putEntries(keys []bpfKey, vals []bpfFlowVal) (int, error) {
	m := b.n.maps["flows"]
	if len(keys) == 1 {
		if err := m.Update(&keys[0], &vals[0], ebpf.UpdateAny); err != nil {
			return 0, fullErr(err)
		}
		return 1, nil
	}
	done := 0
	for done < len(keys) {
		c, err := m.BatchUpdate(keys[done:], vals[done:], &ebpf.BatchOptions{ElemFlags: uint64(ebpf.UpdateAny)})
		done += c
		if err != nil {
			return done, fullErr(err)
		}
		if c == 0 {
			return done, errors.New("batch update made no progress")
		}
	}
	return done, nil
}

func (b *mapBackend) deleteEntry(k *bpfKey) error {
	return b.n.maps["flows"].Delete(k)
}

func (b *mapBackend) putMasks(bank uint32, s *bpfMaskSet) error {
	if err := b.n.maps["mask_sets"].Update(bank, s, ebpf.UpdateAny); err != nil {
		return err
	}
	return b.n.maps["config"].Update(uint32(0), bank, ebpf.UpdateAny)
}

func (b *mapBackend) resetCounter(idx uint32) error {
	return b.n.maps["rule_counters"].Update(idx, make([]bpfCounters, b.n.ncpu), ebpf.UpdateAny)
}

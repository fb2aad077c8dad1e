//go:build linux

package xdp

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/perf"
	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/learn"
	"github.com/nicpath/nicpath/internal/afpacket"
	"github.com/nicpath/nicpath/internal/nsexec"
)

var (
	_ hal.NIC              = (*NIC)(nil)
	_ hal.TunnelTerminator = (*NIC)(nil)
	_ hal.AddressLearner   = (*NIC)(nil)
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
	learn  *learn.Learner // fed by ReadExceptions (learn_linux.go)

	mu     sync.Mutex
	closed bool
	tab    *table
	active map[hal.Scope]hal.Generation
	t4mem  []byte // table4's mmap, unmapped by release
	p4mem  []byte // progs4's mmap, likewise
	s4mem  []byte // sides4's mmap, likewise
}

// Open loads the datapath, attaches it to every port of cfg and returns the
// NIC. On failure nothing stays attached or loaded.
func Open(ctx context.Context, cfg Config) (_ *NIC, err error) {
	if cfg.MaxBatch < 0 {
		return nil, fmt.Errorf("xdp: MaxBatch %d is negative", cfg.MaxBatch)
	}
	if cfg.MaxRules < 0 || cfg.MaxRules > MostRules {
		return nil, fmt.Errorf("xdp: MaxRules %d is outside 0..%d", cfg.MaxRules, MostRules)
	}
	if err := checkScopes(cfg.MaxScopes); err != nil {
		return nil, err
	}
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
	spec.Maps["flows4"].MaxEntries = uint32(c.MaxRules)
	slots4 := slots4For(c.MaxRules)
	spec.Maps["table4"].MaxEntries = slots4 + probe4
	// A program per rule at most, and room for a rule's new version
	// published before its old one is retired.
	progs4 := uint32(c.MaxRules + 2)
	spec.Maps["progs4"].MaxEntries = progs4
	// A side entry per entry with two rules at most, room for one's new
	// version published before its old one is retired, and entry 0,
	// which stands for none.
	sides4 := uint32(c.MaxRules + 2)
	spec.Maps["sides4"].MaxEntries = sides4
	var seed [8]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("xdp: table4 seed: %w", err)
	}
	t4 := &table4{slots: slots4, seed: binary.LittleEndian.Uint64(seed[:]), tags: make([]uint16, slots4+probe4)}
	if err := spec.Variables["slots4"].Set(t4.slots); err != nil {
		return nil, err
	}
	if err := spec.Variables["seed4"].Set(t4.seed); err != nil {
		return nil, err
	}
	spec.Maps["active_gen"].MaxEntries = uint32(c.MaxScopes)
	spec.Maps["rule_counters"].MaxEntries = uint32(c.MaxRules + 1)
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("xdp: possible CPUs: %w", err)
	}
	n := &NIC{cfg: c, spec: spec, maps: map[string]*ebpf.Map{}, ports: map[hal.PortID]*port{}, ncpu: ncpu,
		active: map[hal.Scope]hal.Generation{}, learn: learn.New()}
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
	size := (int(slots4+probe4)*int(slot4Size) + os.Getpagesize() - 1) &^ (os.Getpagesize() - 1)
	if t4.mem, err = unix.Mmap(n.maps["table4"].FD(), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return nil, fmt.Errorf("xdp: map table4: %w", err)
	}
	n.t4mem = t4.mem
	psize := (int(progs4)*int(bpfRuleSize) + os.Getpagesize() - 1) &^ (os.Getpagesize() - 1)
	pmem, err := unix.Mmap(n.maps["progs4"].FD(), 0, psize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("xdp: map progs4: %w", err)
	}
	n.p4mem = pmem
	t4.progs = newProgs4(pmem, progs4)
	ssize := (int(sides4)*int(side4Size) + os.Getpagesize() - 1) &^ (os.Getpagesize() - 1)
	smem, err := unix.Mmap(n.maps["sides4"].FD(), 0, ssize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("xdp: map sides4: %w", err)
	}
	n.s4mem = smem
	t4.sides = newSides4(smem, sides4)
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
	}, &mapBackend{n: n, t4: t4, over: map[bpfKey4]struct{}{}})
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
	if n.t4mem != nil {
		unix.Munmap(n.t4mem)
		n.t4mem = nil
	}
	if n.p4mem != nil {
		unix.Munmap(n.p4mem)
		n.p4mem = nil
	}
	if n.s4mem != nil {
		unix.Munmap(n.s4mem)
		n.s4mem = nil
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
	n.learn.Close()
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

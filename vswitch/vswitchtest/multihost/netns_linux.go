//go:build linux

package multihost

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nicpath/nicpath/agent"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/internal/afpacket"
	"github.com/nicpath/nicpath/internal/nsexec"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/store"
	"github.com/nicpath/nicpath/store/migrate"
)

// NSBed is the migration bed on Linux network namespaces: every host is a
// namespace whose interfaces a vswitchd (package agent, softnic
// bound through AF_PACKET, or the XDP driver: NSOptions.Drivers) drives
// while following the store; every VM is a
// namespace with a real kernel stack behind a veth into its host; the hosts'
// uplinks meet at an underlay router (one more namespace, routing the
// provider addresses). The migrating VM has a namespace on its old host and
// one on its new host (the two incarnations a live migration has while
// memory is copied); the streaming VM sends it UDP through its kernel.
//
// The vswitchds run in this process, each on its host's interfaces (the
// daemon's netns option), and reach the store from this process's own
// namespace. Nothing is added to the namespace the bed is created from;
// Close deletes everything.
type NSBed struct {
	opt    NSOptions
	st     *policy.State
	prefix string

	created []string // namespaces, in creation order
	undo    []func() // XDP_PASS programs to detach
	daemons map[string]*agent.Agent
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	// Where the stream can land: the migrating VM's two incarnations and
	// every other VM, each watched by a packet socket on its eth0.
	sniffers map[string]*afpacket.Socket // by place: "vm@host"
	apps     []*net.UDPConn              // the receivers' sockets (no ICMP unreachables)
	sender   *net.UDPConn
	seq      uint64 // the stream's last sequence number, across migrations
	mover    policy.VM
}

// NSOptions configure an NSBed.
type NSOptions struct {
	// Store is the store every vswitchd follows, in store.Open's syntax
	// (the caller registers the schemes the core module does not have).
	Store string
	// Mover is the VM that migrates and To the host it may move to: it gets
	// a namespace on both. Sender is the streaming VM.
	Mover, To, Sender string
	// Dir holds the control sockets.
	Dir    string
	Logger *slog.Logger
	// Drivers is each host's driver, by host name: softnic (the default
	// for a host not named) or xdp. Hosts on different drivers exchange
	// VXLAN through the underlay router as any two hosts do.
	Drivers map[string]string
}

// driver is host's driver.
func (o *NSOptions) driver(host string) string {
	if d := o.Drivers[host]; d != "" {
		return d
	}
	return "softnic"
}

// CanRunNS says whether this machine can build an NSBed, and if not why.
func CanRunNS() (bool, string) {
	if os.Geteuid() != 0 {
		return false, "not root: network namespaces need root"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return false, "iproute2's ip is not installed"
	}
	return true, ""
}

// hostIf names a VM's port in its host's namespace (15 bytes at most).
func hostIf(vm string) string {
	s := "v-" + vm
	if len(s) > 15 {
		s = s[:15]
	}
	return s
}

func place(vm, host string) string { return vm + "@" + host }

// NewNSBed builds the topology of st (which the store must hold) and starts
// one vswitchd per host; it returns once every host has reported the
// store's state.
func NewNSBed(ctx context.Context, st *policy.State, o NSOptions) (_ *NSBed, err error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	for h, d := range o.Drivers {
		if _, ok := st.Host(h); !ok {
			return nil, fmt.Errorf("nsbed: a driver for %q, which is no host", h)
		}
		if d != "softnic" && d != "xdp" {
			return nil, fmt.Errorf("nsbed: %s: driver %q (want softnic or xdp)", h, d)
		}
	}
	mover, ok := st.VM(o.Mover)
	if !ok {
		return nil, fmt.Errorf("nsbed: no VM %q", o.Mover)
	}
	if _, ok := st.Host(o.To); !ok || mover.Host == o.To {
		return nil, fmt.Errorf("nsbed: %q is not another host for %s", o.To, o.Mover)
	}
	b := &NSBed{opt: o, st: st, prefix: fmt.Sprintf("nmh%d-", os.Getpid()%100000), daemons: map[string]*agent.Agent{},
		sniffers: map[string]*afpacket.Socket{}, mover: mover}
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	hosts := st.Hosts()
	// The underlay router.
	ul := b.prefix + "ul"
	if err := b.addNS(ul); err != nil {
		return nil, err
	}
	for _, k := range []string{"net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"} {
		if err := b.run("ip", "netns", "exec", ul, "sysctl", "-qw", k); err != nil {
			return nil, err
		}
	}
	for i, h := range hosts {
		ns := b.prefix + h.Name
		if err := b.addNS(ns); err != nil {
			return nil, err
		}
		rif := "ul-" + h.Name
		if len(rif) > 15 {
			rif = fmt.Sprintf("ul-%d", i)
		}
		if err := b.ip("-n", ul, "link", "add", rif, "address", routerMAC(i).String(), "type", "veth",
			"peer", "name", "up0", "address", uplinkMACOf(i).String(), "netns", ns); err != nil {
			return nil, err
		}
		for _, args := range [][]string{
			{"-n", ul, "link", "set", rif, "up"},
			{"-n", ns, "link", "set", "up0", "up"},
			{"-n", ul, "route", "replace", netip.PrefixFrom(h.PA, h.PA.BitLen()).String(), "dev", rif},
			{"-n", ul, "neigh", "replace", h.PA.String(), "lladdr", uplinkMACOf(i).String(), "dev", rif, "nud", "permanent"},
		} {
			if err := b.ip(args...); err != nil {
				return nil, err
			}
		}
		// The router receives what an XDP host's program redirects to
		// its uplink.
		if o.driver(h.Name) == "xdp" {
			if err := b.xdpPass(ul, rif); err != nil {
				return nil, err
			}
		}
	}
	// The VMs: each on its host, the mover on its new host too.
	ports := map[string]map[string]string{}
	for _, h := range hosts {
		ports[h.Name] = map[string]string{}
	}
	vms := st.VMs()
	for _, vm := range vms {
		ports[vm.Host][vm.Name] = hostIf(vm.Name)
		if err := b.addVM(vm, vm.Host); err != nil {
			return nil, err
		}
	}
	ports[o.To][mover.Name] = hostIf(mover.Name)
	if err := b.addVM(mover, o.To); err != nil {
		return nil, err
	}
	// The sender's socket, in its namespace.
	sender, ok := st.VM(o.Sender)
	if !ok {
		return nil, fmt.Errorf("nsbed: no VM %q", o.Sender)
	}
	err = nsexec.Do(b.nsPath(place(sender.Name, sender.Host)), func() error {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ca4(mover), streamPort)))
		b.sender = c
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("nsbed: the sender's socket: %w", err)
	}

	// The receivers' applications drain their sockets until Close.
	for _, a := range b.apps {
		go func() {
			buf := make([]byte, 2048)
			for {
				if _, _, err := a.ReadFromUDP(buf); err != nil {
					return
				}
			}
		}()
	}

	// One vswitchd per host.
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.cancel = cancel
	for i, h := range hosts {
		cfg := &agent.Config{File: filepath.Join(o.Dir, h.Name+".yaml"), Host: h.Name, Driver: o.driver(h.Name),
			Store: o.Store, StoreTimeout: 30 * time.Second, Uplink: "up0",
			Ports: ports[h.Name], Control: filepath.Join(o.Dir, h.Name+".sock"), LogLevel: slog.LevelWarn,
			NextHopMAC: routerMAC(i), WatchInterval: time.Second, NetNS: b.nsPath(h.Name), Logger: o.Logger}
		if cfg.Driver == "softnic" {
			cfg.Binding = agent.BindAFPacket
		}
		d, err := agent.New(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("nsbed: %s's vswitchd: %w", h.Name, err)
		}
		b.daemons[h.Name] = d
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			d.Run(rctx)
		}()
	}
	return b, nil
}

// routerMAC is the underlay router's MAC toward host i, uplinkMACOf host
// i's uplink.
func routerMAC(i int) hal.MAC   { return hal.MAC{0x02, 0xfe, 0, 0, 0, byte(i + 1)} }
func uplinkMACOf(i int) hal.MAC { return hal.MAC{0x02, 0xfd, 0, 0, 0, byte(i + 1)} }

// ca4 is a VM's first IPv4 customer address.
func ca4(vm policy.VM) netip.Addr {
	for _, a := range vm.CAs {
		if a.Is4() {
			return a
		}
	}
	return netip.Addr{}
}

func (b *NSBed) nsPath(name string) string { return filepath.Join("/run/netns", b.nsName(name)) }
func (b *NSBed) nsName(name string) string { return b.prefix + strings.ReplaceAll(name, "@", "-at-") }

func (b *NSBed) run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (b *NSBed) ip(args ...string) error { return b.run("ip", args...) }

func (b *NSBed) addNS(name string) error {
	if err := b.ip("netns", "add", name); err != nil {
		return err
	}
	b.created = append(b.created, name)
	// IPv6 off before any interface exists: router solicitations and MLD
	// reports would be exception-path noise.
	for _, k := range []string{"all", "default"} {
		if err := b.run("ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf."+k+".disable_ipv6=1"); err != nil {
			return err
		}
	}
	return b.ip("-n", name, "link", "set", "lo", "up")
}

// addVM makes the namespace of vm's incarnation on host: eth0 with the
// VM's MAC and address, a veth into the host, static neighbours for its
// VNET's peers (the vswitch does not answer ARP), a packet socket that
// watches what arrives, and a UDP socket on the stream's port.
func (b *NSBed) addVM(vm policy.VM, host string) error {
	name := place(vm.Name, host)
	ns := b.nsName(name)
	if err := b.addNS(ns); err != nil {
		return err
	}
	hns := b.prefix + host
	hif := hostIf(vm.Name)
	if err := b.ip("-n", hns, "link", "add", hif, "type", "veth", "peer", "name", "eth0", "netns", ns); err != nil {
		return err
	}
	ca := ca4(vm)
	vn, _ := b.st.VNET(vm.Tenant, vm.VNET)
	bits := 32
	for _, p := range vn.Subnets {
		if p.Contains(ca) {
			bits = p.Bits()
		}
	}
	for _, args := range [][]string{
		{"-n", hns, "link", "set", hif, "mtu", "1450", "up"},
		{"-n", ns, "link", "set", "eth0", "address", hal.MAC(vm.MAC).String(), "mtu", "1450", "up"},
		{"-n", ns, "addr", "replace", netip.PrefixFrom(ca, bits).String(), "dev", "eth0"},
	} {
		if err := b.ip(args...); err != nil {
			return err
		}
	}
	if b.opt.driver(host) == "xdp" {
		if err := b.xdpPass(ns, "eth0"); err != nil {
			return err
		}
	}
	for _, peer := range b.st.VMs() {
		if peer.Tenant == vm.Tenant && peer.VNET == vm.VNET && peer.Name != vm.Name {
			if err := b.ip("-n", ns, "neigh", "replace", ca4(peer).String(), "lladdr", hal.MAC(peer.MAC).String(), "dev", "eth0", "nud", "permanent"); err != nil {
				return err
			}
		}
	}
	if vm.Name == b.opt.Sender {
		return nil
	}
	return nsexec.Do(b.nsPath(name), func() error {
		s, err := afpacket.Open("eth0", afpacket.Options{SkipOutgoing: true, PollInterval: 20 * time.Millisecond})
		if err != nil {
			return fmt.Errorf("nsbed: watching %s: %w", name, err)
		}
		b.sniffers[name] = s
		app, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.IPv4Unspecified(), streamPort)))
		if err != nil {
			return err
		}
		b.apps = append(b.apps, app)
		return nil
	})
}

// xdpPass attaches an XDP_PASS program to dev in namespace ns (see
// attachXDPPass), detached by Close.
func (b *NSBed) xdpPass(ns, dev string) error {
	undo, err := attachXDPPass(filepath.Join("/run/netns", ns), dev)
	if err != nil {
		return err
	}
	b.undo = append(b.undo, undo)
	return nil
}

// Daemon returns a host's vswitchd.
func (b *NSBed) Daemon(host string) *agent.Agent { return b.daemons[host] }

// Close stops the vswitchds and deletes every namespace the bed made.
func (b *NSBed) Close() error {
	if b.cancel != nil {
		b.cancel()
	}
	b.wg.Wait()
	var errs []error
	for _, d := range b.daemons {
		errs = append(errs, d.Close())
	}
	for _, s := range b.sniffers {
		s.Close()
	}
	for _, a := range b.apps {
		a.Close()
	}
	if b.sender != nil {
		b.sender.Close()
	}
	for _, u := range b.undo {
		u()
	}
	for i := len(b.created) - 1; i >= 0; i-- {
		if err := b.ip("netns", "del", b.created[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// arrival is a stream packet seen on a VM's eth0.
type arrival struct {
	place string
	seq   uint64
	at    time.Time
}

// streamSeqOf reads the sequence number of a stream packet from an
// Ethernet frame (IPv4, UDP to streamPort, magic, sequence).
func streamSeqOf(f []byte) (uint64, bool) {
	if len(f) < 14+20+8+12 || binary.BigEndian.Uint16(f[12:14]) != 0x0800 {
		return 0, false
	}
	ihl := int(f[14]&0x0f) * 4
	if f[14+9] != 17 || len(f) < 14+ihl+8+12 {
		return 0, false
	}
	u := f[14+ihl:]
	if binary.BigEndian.Uint16(u[2:4]) != streamPort || binary.BigEndian.Uint32(u[8:12]) != streamMagic {
		return 0, false
	}
	return binary.BigEndian.Uint64(u[12:20]), true
}

// Migrate streams from the sender to the mover while mgr migrates it to
// the bed's other host, and says what the stream saw (see Result; Tail is
// how long the stream goes on after the migration, default 300ms;
// Interval defaults to 200µs). status reads the hosts' reports, to know
// when the old host applied the activation.
func (b *NSBed) Migrate(ctx context.Context, mgr *migrate.Manager, status store.StatusReader, o MigrateOptions) (Result, error) {
	o.defaults(200*time.Microsecond, 20, 300*time.Millisecond)
	res := Result{Interval: o.Interval}
	oldPlace, newPlace := place(o.VM, o.From), place(o.VM, o.To)
	if b.sniffers[oldPlace] == nil || b.sniffers[newPlace] == nil {
		return res, fmt.Errorf("nsbed: %s has no incarnation on %s and %s", o.VM, o.From, o.To)
	}
	snap := b.daemons[o.From].Follower().Applied()
	vm, ok := snap.State.VM(o.VM)
	if !ok {
		return res, fmt.Errorf("nsbed: no VM %q", o.VM)
	}
	newGen := max(vm.Generation, 1) + 1

	// Everything that lands anywhere, from now on.
	w := b.watch(ctx)
	defer w.stop()
	var mu sync.Mutex

	// When the old host applied the activation, from its status reports.
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	var oldActivated time.Time
	if ch, err := status.WatchStatuses(wctx, 0); err == nil {
		go func() {
			for s := range ch {
				if s.Host == o.From && s.Active[o.VM] == newGen {
					mu.Lock()
					if oldActivated.IsZero() {
						oldActivated = s.Time
					}
					mu.Unlock()
				}
			}
		}()
	} else {
		return res, err
	}

	sent := map[uint64]time.Time{}
	var lastSend time.Time
	send := func() error {
		t0 := time.Now()
		if !lastSend.IsZero() && t0.Sub(lastSend) > res.SenderStall {
			res.SenderStall = t0.Sub(lastSend)
		}
		lastSend = t0
		q, err := b.send()
		sent[q] = t0
		return err
	}
	// Warm-up: the stream must reach the VM on its old host (its flows
	// are on the NICs then).
	deadline := time.Now().Add(15 * time.Second)
	for {
		if err := send(); err != nil {
			return res, err
		}
		time.Sleep(o.Interval)
		if n := w.count(oldPlace); n >= o.Warmup {
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("nsbed: the stream does not reach %s before the migration (%d of %d warm-up packets)", oldPlace, w.count(oldPlace), len(sent))
		}
		time.Sleep(2 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // the warm-up's stragglers land
	start := b.seq + 1
	lastSend = time.Time{}

	var moved time.Time
	o.Manager.BeforeActivate = chainBefore(o.Manager.BeforeActivate, func() {
		mu.Lock()
		moved = time.Now()
		mu.Unlock()
	})
	const migrationStart = 50
	next := time.Now()
	var stopAt time.Time
	var mig *background
	for n := 0; ; n++ {
		if n == migrationStart {
			mig = startMigration(ctx, mgr, o)
		}
		if mig != nil && stopAt.IsZero() && mig.poll(&res) {
			stopAt = time.Now().Add(o.Tail)
		}
		if !stopAt.IsZero() && time.Now().After(stopAt) {
			break
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		// A sender that fell behind does not catch up with a burst.
		next = next.Add(o.Interval)
		if now := time.Now(); next.Before(now) {
			next = now
		}
		if err := send(); err != nil {
			return res, err
		}
		res.Sent++
	}
	time.Sleep(100 * time.Millisecond) // the last packets land
	arrivals := w.stop()
	mu.Lock()
	defer mu.Unlock()
	sort.Slice(arrivals, func(i, j int) bool { return arrivals[i].at.Before(arrivals[j].at) })
	t := newTally(start)
	for _, a := range arrivals {
		if a.seq < start {
			continue // a warm-up straggler
		}
		t0, ok := sent[a.seq]
		if !ok {
			res.wrong("not sent")
			continue
		}
		switch {
		case a.place != oldPlace && a.place != newPlace:
			res.wrong("another VM")
			continue
		case a.place == oldPlace && (moved.IsZero() || t0.Before(moved)):
		case a.place == oldPlace:
			// Judged by the send time: a packet sent before the old host
			// applied the activation may still land there.
			if !oldActivated.IsZero() && oldActivated.Before(t0) {
				res.wrong("old host after its activation")
			} else {
				res.Stale++
			}
			continue
		case a.place == newPlace && !moved.IsZero() && !a.at.Before(moved):
		default:
			res.wrong("new host before the move")
			continue
		}
		t.deliver(&res, a.seq, a.at, a.place == oldPlace)
	}
	if mig.err != nil {
		return res, mig.err
	}
	return res, t.finish(&res, b.seq)
}

// send sends the stream's next packet and returns its sequence number.
func (b *NSBed) send() (uint64, error) {
	b.seq++
	var payload [4 + 8]byte
	binary.BigEndian.PutUint32(payload[:], streamMagic)
	binary.BigEndian.PutUint64(payload[4:], b.seq)
	_, err := b.sender.Write(payload[:])
	return b.seq, err
}

// Stream sends n packets of the stream, one every 200µs, and returns how
// many of them reached place ("vm@host").
func (b *NSBed) Stream(ctx context.Context, place string, n int) (int, error) {
	w := b.watch(ctx)
	defer w.stop()
	first := b.seq + 1
	for range n {
		if _, err := b.send(); err != nil {
			return 0, err
		}
		time.Sleep(200 * time.Microsecond)
	}
	time.Sleep(100 * time.Millisecond)
	got := map[uint64]bool{}
	for _, a := range w.stop() {
		if a.place == place && a.seq >= first {
			got[a.seq] = true
		}
	}
	return len(got), nil
}

// watcher records the stream packets that land on any watched VM.
type watcher struct {
	mu       sync.Mutex
	arrivals []arrival
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	once     sync.Once
}

func (b *NSBed) watch(ctx context.Context) *watcher {
	w := &watcher{}
	sctx, cancel := context.WithCancel(ctx)
	w.cancel = cancel
	for name, s := range b.sniffers {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			buf := make([]byte, 2048)
			for sctx.Err() == nil {
				f, err := s.Recv(buf)
				if errors.Is(err, afpacket.ErrTimeout) {
					continue
				}
				if err != nil {
					return
				}
				if q, ok := streamSeqOf(f); ok {
					at := time.Now()
					w.mu.Lock()
					w.arrivals = append(w.arrivals, arrival{name, q, at})
					w.mu.Unlock()
				}
			}
		}()
	}
	return w
}

// count is how many packets landed on place so far.
func (w *watcher) count(place string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, a := range w.arrivals {
		if a.place == place {
			n++
		}
	}
	return n
}

// stop ends the watch and returns what landed.
func (w *watcher) stop() []arrival {
	w.once.Do(func() {
		w.cancel()
		w.wg.Wait()
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]arrival(nil), w.arrivals...)
}

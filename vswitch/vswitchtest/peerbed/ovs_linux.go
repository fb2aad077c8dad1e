//go:build linux

package peerbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/safchain/ethtool"

	"github.com/nicpath/nicpath/internal/nsexec"
)

// OVS is the Config value of an Open vSwitch host: Debian's
// openvswitch-switch with its userspace datapath (datapath_type=netdev),
// its daemons started by the bed inside the host's namespace with a run
// directory of their own, as a user without nicpath would run it:
//
//	vp0 ── br-int ── vx0 (VXLAN, remote_ip=flow, key=flow)
//	                  ┊ OVS's own tunnel route and neighbour tables
//	up0 ── br-phy (its internal port holds the PA and the uplink's MAC)
//
// br-int takes the VM's veth as a plain port (OVS's netdev-linux reads and
// writes it with AF_PACKET) and runs in fail_mode=secure with the bed's
// policy as OpenFlow flows (ovsFlows: the same two rules rulesFor gives a
// NIC): anything else is dropped. br-phy carries the underlay: up0 and its
// internal port, whose MAC is the host's uplink MAC, so that the peer's
// next hop and OVS's outer source MAC are the bed's.
const OVS = "ovs"

// ovsPairs refuses an OVS host facing a host whose kernel writes the outer
// headers (Linux, tcflower): the kernel's VXLAN device sends its outer UDP
// checksum partial over the veth (udpcsum is its default), OVS 3.1 reads
// it unfinished with AF_PACKET and drops every such packet
// (datapath_drop_tunnel_pop_error), as measured here.
func ovsPairs(cfg Config) error {
	for _, p := range [][2]string{{cfg.A, cfg.B}, {cfg.B, cfg.A}} {
		if p[0] == OVS && (p[1] == Linux || isTCFlower(p[1])) {
			return fmt.Errorf("peerbed: an OVS host facing a %s host: OVS 3.1's userspace datapath drops the kernel VXLAN device's partial outer UDP checksums read over a veth", p[1])
		}
	}
	return nil
}

// ovsSchema is where Debian's openvswitch-common puts the database schema.
const ovsSchema = "/usr/share/openvswitch/vswitch.ovsschema"

// ovsTools are the programs an OVS host runs.
var ovsTools = []string{"ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl"}

// OVSAvailable says whether an OVS host can be built here: nil, or why not.
func OVSAvailable() error {
	if ok, why := CanRun(); !ok {
		return errors.New(why)
	}
	for _, t := range ovsTools {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s is not installed (Debian's openvswitch-switch; scripts/install-deps.sh installs it)", t)
		}
	}
	if _, err := os.Stat(ovsSchema); err != nil {
		return fmt.Errorf("the OVS database schema: %w (Debian's openvswitch-common)", err)
	}
	return nil
}

// The OpenFlow port numbers the OVS host asks for (ofport_request), so that
// its flows need no name lookups.
const (
	ovsPortVM     = 1 // vp0 on br-int
	ovsPortTunnel = 2 // vx0 on br-int
	ovsPortUplink = 1 // up0 on br-phy
)

// ovsCall bounds one ovs-vsctl, ovs-ofctl or ovs-appctl call: ovs-vsctl
// waits for ovs-vswitchd to apply a change, and a loaded machine is slow.
const ovsCall = 30 * time.Second

// ovsStop bounds how long a daemon has to exit after SIGTERM before it is
// killed.
const ovsStop = 5 * time.Second

// OVSDaemons is an OVS host's pair of daemons and their run directory.
type OVSDaemons struct {
	// Dir is the private run directory: database, sockets, pid files and
	// logs. Close removes it.
	Dir   string
	ns    string // the namespace's name
	env   []string
	procs []*ovsProc // in start order: ovsdb-server, ovs-vswitchd
	// thread runs the daemons' starts on one OS thread that outlives them
	// (see start); nil until the first.
	thread chan func()
}

type ovsProc struct {
	name    string
	cmd     *exec.Cmd
	pidfile string
	done    chan struct{} // closed when the process was waited for
	err     error         // Wait's, once done is closed
}

// Pids returns the daemons' process IDs: the processes the bed started,
// which their pid files named once they ran (start checks it).
func (o *OVSDaemons) Pids() []int {
	var pids []int
	for _, p := range o.procs {
		pids = append(pids, p.cmd.Process.Pid)
	}
	return pids
}

// startOVS creates the database and starts ovsdb-server and ovs-vswitchd
// inside the namespace nsName (ip netns exec), with every path of theirs in
// a new private directory.
func startOVS(ctx context.Context, nsName string) (_ *OVSDaemons, err error) {
	if err := OVSAvailable(); err != nil {
		return nil, err
	}
	// Under /tmp with a short name: unix socket paths are limited to 107
	// bytes, and the bridges' management sockets live here too.
	dir, err := os.MkdirTemp("", "npovs-")
	if err != nil {
		return nil, err
	}
	o := &OVSDaemons{Dir: dir, ns: nsName}
	defer func() {
		if err != nil {
			err = errors.Join(err, o.Close())
		}
	}()
	// Every default path of OVS's points into dir: nothing is read from or
	// written to the system's /var/run/openvswitch or /etc/openvswitch.
	o.env = append(os.Environ(), "OVS_RUNDIR="+dir, "OVS_DBDIR="+dir, "OVS_LOGDIR="+dir, "OVS_SYSCONFDIR="+dir)
	db := filepath.Join(dir, "conf.db")
	if _, err := o.run(ctx, "ovsdb-tool", "create", db, ovsSchema); err != nil {
		return o, err
	}
	if err := o.start(ctx, "ovsdb-server", db, "--remote=punix:"+o.dbSock()); err != nil {
		return o, err
	}
	// The database answers once init returns; --no-wait: there is no
	// ovs-vswitchd yet to wait for.
	if err := o.retry(ctx, func() error { _, err := o.vsctl(ctx, "--no-wait", "init"); return err }); err != nil {
		return o, err
	}
	if err := o.start(ctx, "ovs-vswitchd", "unix:"+o.dbSock()); err != nil {
		return o, err
	}
	return o, nil
}

func (o *OVSDaemons) dbSock() string { return filepath.Join(o.Dir, "db.sock") }

// Ctl is ovs-vswitchd's control socket (ovs-appctl -t).
func (o *OVSDaemons) Ctl() string { return filepath.Join(o.Dir, "ovs-vswitchd.ctl") }

// Mgmt is bridge br's OpenFlow management socket (ovs-ofctl's target).
func (o *OVSDaemons) Mgmt(br string) string { return "unix:" + filepath.Join(o.Dir, br+".mgmt") }

// start runs daemon name in the namespace, in the foreground (it is this
// process's child, waited for), with its pid file, control socket and log
// in the run directory, and waits until its pid file names it.
func (o *OVSDaemons) start(ctx context.Context, name string, args ...string) error {
	pidfile := filepath.Join(o.Dir, name+".pid")
	args = append(args, "--pidfile="+pidfile, "--unixctl="+filepath.Join(o.Dir, name+".ctl"),
		"--log-file="+filepath.Join(o.Dir, name+".log"), "--no-chdir", "-vconsole:off")
	cmd := exec.Command("ip", append([]string{"netns", "exec", o.ns, name}, args...)...)
	cmd.Env = o.env
	out, err := os.Create(filepath.Join(o.Dir, name+".out"))
	if err != nil {
		return err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	// Should this process die without closing the bed, the daemon dies
	// with it rather than outlive its namespace (ip netns exec execs the
	// daemon: the setting carries over). The kernel sends the signal when
	// the thread that started the daemon ends, not the process
	// (go.dev/issue/27505), and a Go thread ends when a goroutine locked
	// to it returns: the start happens on a thread of its own, locked
	// until Close.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := o.onThread(cmd.Start); err != nil {
		return fmt.Errorf("peerbed: starting %s: %w", name, err)
	}
	p := &ovsProc{name: name, cmd: cmd, pidfile: pidfile, done: make(chan struct{})}
	o.procs = append(o.procs, p)
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	// Its pid file, written once it runs, is how the bed knows it started
	// (and it must name the process the bed started).
	return o.retry(ctx, func() error {
		select {
		case <-p.done:
			return permanent(fmt.Errorf("%s exited: %v%s", name, p.err, o.logTail(name)))
		default:
		}
		pid, err := readPid(pidfile)
		if err != nil {
			return err
		}
		if pid != cmd.Process.Pid {
			return permanent(fmt.Errorf("%s's pid file names %d, the bed started %d", name, pid, cmd.Process.Pid))
		}
		return nil
	})
}

// onThread runs fn on the daemons' own OS thread.
func (o *OVSDaemons) onThread(fn func() error) error {
	if o.thread == nil {
		o.thread = make(chan func())
		go func() {
			// Never unlocked: the thread ends with this goroutine, when
			// Close closes the channel after the daemons exited.
			runtime.LockOSThread()
			for f := range o.thread {
				f()
			}
		}()
	}
	errc := make(chan error, 1)
	o.thread <- func() { errc <- fn() }
	return <-errc
}

func readPid(file string) (int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// logTail is the end of a daemon's log, for an error.
func (o *OVSDaemons) logTail(name string) string {
	var tail []string
	for _, f := range []string{name + ".log", name + ".out"} {
		b, err := os.ReadFile(filepath.Join(o.Dir, f))
		if err != nil || len(b) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		tail = append(tail, lines[max(0, len(lines)-8):]...)
	}
	if len(tail) == 0 {
		return ""
	}
	return "\n\t" + strings.Join(tail, "\n\t")
}

// permanentError is an error retry gives up on at once.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

func permanent(err error) error { return permanentError{err} }

// retry calls fn every 20ms until it succeeds, returns a permanent error,
// or ctx ends (bounded by ovsCall).
func (o *OVSDaemons) retry(ctx context.Context, fn func() error) error {
	ctx, cancel := context.WithTimeout(ctx, ovsCall)
	defer cancel()
	for {
		err := fn()
		var perm permanentError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &perm):
			return fmt.Errorf("peerbed: OVS: %w", perm.error)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("peerbed: OVS: %w (last: %v)", ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// run runs an OVS tool with the run directory's environment, bounded by
// ovsCall.
func (o *OVSDaemons) run(ctx context.Context, tool string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, ovsCall)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Env = o.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %v: %s", tool, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// vsctl runs ovs-vsctl against this host's database. Without --no-wait it
// waits for ovs-vswitchd to apply the change: --timeout bounds that wait
// on ovs-vsctl's side too.
func (o *OVSDaemons) vsctl(ctx context.Context, args ...string) (string, error) {
	return o.run(ctx, "ovs-vsctl", append([]string{"--db=unix:" + o.dbSock(), "--timeout=" + strconv.Itoa(int(ovsCall/time.Second))}, args...)...)
}

// Appctl runs ovs-appctl against ovs-vswitchd.
func (o *OVSDaemons) Appctl(ctx context.Context, args ...string) (string, error) {
	return o.run(ctx, "ovs-appctl", append([]string{"-t", o.Ctl(), "--timeout=" + strconv.Itoa(int(ovsCall/time.Second))}, args...)...)
}

// Ofctl runs ovs-ofctl with args, where "BR:" stands for bridge BR's
// management socket (e.g. "add-flows", "br-int:", file).
func (o *OVSDaemons) Ofctl(ctx context.Context, cmd, br string, args ...string) (string, error) {
	return o.run(ctx, "ovs-ofctl", append([]string{cmd, o.Mgmt(br)}, args...)...)
}

// Close stops ovs-vswitchd, then ovsdb-server (SIGTERM to the pid in each
// pid file, which is the process the bed started; SIGKILL after ovsStop),
// waits for both and removes the run directory. It may be called more
// than once.
func (o *OVSDaemons) Close() error {
	var errs []error
	for i := len(o.procs) - 1; i >= 0; i-- {
		p := o.procs[i]
		select {
		case <-p.done:
			continue
		default:
		}
		pid, err := readPid(p.pidfile)
		switch {
		case err != nil:
			// It never wrote one (it is being stopped because it did not
			// start): the bed's own child is the one to stop.
			pid = p.cmd.Process.Pid
		case pid != p.cmd.Process.Pid:
			errs = append(errs, fmt.Errorf("peerbed: %s's pid file names %d, not the bed's %d: stopping the bed's", p.name, pid, p.cmd.Process.Pid))
			pid = p.cmd.Process.Pid
		}
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("peerbed: stopping %s (%d): %w", p.name, pid, err))
		}
		select {
		case <-p.done:
		case <-time.After(ovsStop):
			errs = append(errs, fmt.Errorf("peerbed: %s (%d) did not exit within %v of SIGTERM: killed", p.name, pid, ovsStop))
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	o.procs = nil
	if o.thread != nil {
		close(o.thread)
		o.thread = nil
	}
	if o.Dir != "" {
		errs = append(errs, os.RemoveAll(o.Dir))
	}
	return errors.Join(errs...)
}

// ovsHost makes h an OVS host (see OVS) toward peer, for its VM vm and the
// peer's VM other.
func (b *Bed) ovsHost(ctx context.Context, hns string, h, peer *Host, vm, other VM) error {
	if err := txChecksumOff(vm.NS, "eth0"); err != nil {
		return err
	}
	o, err := startOVS(ctx, hns)
	if o != nil {
		h.OVS = o
	}
	if err != nil {
		return fmt.Errorf("peerbed: %s's Open vSwitch: %w", h.Name, err)
	}
	_, err = o.vsctl(ctx,
		"add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev", "fail_mode=secure",
		"--", "add-port", "br-int", "vp0", "--", "set", "interface", "vp0", "ofport_request="+strconv.Itoa(ovsPortVM),
		"--", "add-port", "br-int", "vx0", "--", "set", "interface", "vx0", "type=vxlan", "ofport_request="+strconv.Itoa(ovsPortTunnel),
		"options:remote_ip=flow", "options:key=flow", "options:local_ip="+h.PA.String(),
		"--", "add-br", "br-phy", "--", "set", "bridge", "br-phy", "datapath_type=netdev", "fail_mode=secure",
		"other_config:hwaddr="+h.Uplink.String(),
		"--", "add-port", "br-phy", "up0", "--", "set", "interface", "up0", "ofport_request="+strconv.Itoa(ovsPortUplink))
	if err != nil {
		return fmt.Errorf("peerbed: %s: %w%s", h.Name, err, o.logTail("ovs-vswitchd"))
	}
	// br-phy's internal port (a tap ovs-vswitchd made) owns the PA: OVS's
	// tunnel route for the underlay goes through it, and its neighbour
	// table holds the peer's MAC (the peer may be nicpath, which answers
	// no ARP).
	for _, args := range [][]string{
		{"-n", hns, "addr", "replace", netip.PrefixFrom(h.PA, 24).String(), "dev", "br-phy"},
		{"-n", hns, "link", "set", "br-phy", "up"},
	} {
		if err := b.ip(args...); err != nil {
			return err
		}
	}
	// ovs-vswitchd learns br-phy's new address from a netlink
	// notification, a moment after ip returns, and refuses a route through
	// a port without an address ("Error while inserting route"): the
	// calls are retried until it has it.
	for _, args := range [][]string{
		{"ovs/route/add", netip.PrefixFrom(h.PA, 24).Masked().String(), "br-phy"},
		{"tnl/arp/set", "br-phy", peer.PA.String(), peer.Uplink.String()},
	} {
		if err := o.retry(ctx, func() error { _, err := o.Appctl(ctx, args...); return err }); err != nil {
			return fmt.Errorf("peerbed: %s: %w", h.Name, err)
		}
	}
	for br, flows := range map[string][]string{"br-int": ovsFlows(h, peer, vm, other), "br-phy": ovsUnderlayFlows()} {
		if err := o.AddFlows(ctx, br, flows); err != nil {
			return fmt.Errorf("peerbed: %s: %w", h.Name, err)
		}
	}
	return nil
}

// AddFlows writes flows to a file in the run directory and adds them to
// bridge br with ovs-ofctl add-flows (which returns once the switch has
// them: it ends with a barrier).
func (o *OVSDaemons) AddFlows(ctx context.Context, br string, flows []string) error {
	f := filepath.Join(o.Dir, br+".flows")
	if err := os.WriteFile(f, []byte(strings.Join(flows, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	_, err := o.Ofctl(ctx, "add-flows", br, f)
	return err
}

// ovsPriority is the flows' priority: rulesFor's.
const ovsPriority = 0x4000

// ovsFlows are rulesFor's two rules as OpenFlow flows on br-int: outbound,
// the per-destination rule (in_port, source MAC, both IPv4 addresses → the
// destination's MAC, the VNI and the peer's PA as tunnel metadata, out of
// the VXLAN port); inbound, VXLAN from the peer's PA to this host's with
// the VNI, for the VM's MAC and address → the VM's port (OVS pops the
// outer headers before br-int sees the packet).
func ovsFlows(h, peer *Host, vm, other VM) []string {
	return []string{
		fmt.Sprintf("priority=%d,in_port=%d,ip,dl_src=%s,nw_src=%s,nw_dst=%s,actions=mod_dl_dst:%s,set_field:%d->tun_id,set_field:%s->tun_dst,output:%d",
			ovsPriority, ovsPortVM, vm.MAC, vm.CA, other.CA, other.MAC, VNI, peer.PA, ovsPortTunnel),
		fmt.Sprintf("priority=%d,in_port=%d,tun_id=%d,tun_src=%s,tun_dst=%s,ip,dl_dst=%s,nw_dst=%s,actions=output:%d",
			ovsPriority, ovsPortTunnel, VNI, peer.PA, h.PA, vm.MAC, vm.CA, ovsPortVM),
	}
}

// ovsUnderlayFlows join up0 and br-phy's internal port (LOCAL), where
// ovs-vswitchd terminates and originates the tunnel.
func ovsUnderlayFlows() []string {
	return []string{
		fmt.Sprintf("priority=%d,in_port=%d,actions=LOCAL", ovsPriority, ovsPortUplink),
		fmt.Sprintf("priority=%d,in_port=LOCAL,actions=output:%d", ovsPriority, ovsPortUplink),
	}
}

// txChecksumOff turns transmit checksum offload off on dev in the
// namespace at ns (`ethtool -K dev tx off`; TSO goes with it, the kernel
// segments in software). The bed does this only to the VM of an OVS host,
// because Open vSwitch 3.1's userspace datapath cannot carry a VM's
// default offloads over a veth: it reads the port with AF_PACKET and
// forwards a partial checksum as it found it (the receiving VM's kernel
// drops the packet: UdpInCsumErrors), and with userspace-tso-enable it
// drops every such packet at the tunnel ("Tunneling packets with HW
// offload flags is not supported"). Both were measured here; OVS's own
// test suite turns tx offload off on every veth for its userspace
// datapath for the same reason (CONFIGURE_VETH_OFFLOADS).
func txChecksumOff(ns, dev string) error {
	return nsexec.Do(ns, func() error {
		e, err := ethtool.NewEthtool()
		if err != nil {
			return err
		}
		defer e.Close()
		feats, err := e.Features(dev)
		if err != nil {
			return fmt.Errorf("peerbed: %s's features: %w", dev, err)
		}
		off := map[string]bool{}
		for name, on := range feats {
			if on && strings.HasPrefix(name, "tx-checksum-") {
				off[name] = false
			}
		}
		if len(off) == 0 {
			return nil
		}
		if err := e.Change(dev, off); err != nil {
			return fmt.Errorf("peerbed: tx checksum offload off on %s: %w", dev, err)
		}
		feats, err = e.Features(dev)
		if err != nil {
			return err
		}
		for name := range off {
			if feats[name] {
				return fmt.Errorf("peerbed: %s still has %s on", dev, name)
			}
		}
		return nil
	})
}

// report is what OVS counted, for Bed.Report: the datapath's flows and its
// drop counters.
func (o *OVSDaemons) report(ctx context.Context) string {
	var sb strings.Builder
	if out, err := o.Appctl(ctx, "dpctl/dump-flows"); err == nil {
		lines := strings.Split(strings.TrimSpace(out), "\n")
		for i, l := range lines {
			if i == 8 {
				fmt.Fprintf(&sb, "  … %d datapath flows more\n", len(lines)-i)
				break
			}
			fmt.Fprintf(&sb, "  dp flow: %s\n", l)
		}
	} else {
		fmt.Fprintf(&sb, "  dpctl/dump-flows: %v\n", err)
	}
	if out, err := o.Appctl(ctx, "coverage/show"); err == nil {
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 0 && (strings.Contains(f[0], "drop") || strings.Contains(f[0], "error")) {
				fmt.Fprintf(&sb, "  coverage: %s\n", strings.Join(f, " "))
			}
		}
	}
	if out, err := o.Ofctl(ctx, "dump-flows", "br-int"); err == nil {
		for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
			fmt.Fprintf(&sb, "  br-int: %s\n", strings.TrimSpace(l))
		}
	}
	return sb.String()
}

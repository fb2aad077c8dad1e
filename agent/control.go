package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nicpath/nicpath/control"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/vswitch"
)

// connIdle bounds how long a control connection may stay silent, so that a
// stuck client cannot hold a goroutine forever.
const connIdle = 30 * time.Second

// answer answers one request on the control socket.
func (d *Agent) answer(ctx context.Context, req control.Request) (any, error) {
	d.log.Debug("control", "cmd", req.Cmd, "args", req.Args)
	return d.Do(ctx, req)
}

// serveLines answers JSON-line requests on one connection with do, until
// the client closes it. Shutdown (ctx done) interrupts a connection waiting
// for its next request.
func serveLines(ctx context.Context, c net.Conn, do func(context.Context, control.Request) (any, error)) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for {
		c.SetReadDeadline(time.Now().Add(connIdle))
		if !sc.Scan() {
			return
		}
		var req control.Request
		var resp control.Response
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			resp.Error = "not a request: " + err.Error()
		} else if res, err := do(ctx, req); err != nil {
			resp.Error = err.Error()
		} else if resp.Result, err = json.Marshal(res); err != nil {
			resp.Error = err.Error()
		}
		out, _ := json.Marshal(resp)
		c.SetWriteDeadline(time.Now().Add(connIdle))
		if _, err := c.Write(append(out, '\n')); err != nil {
			return
		}
	}
}

// Do carries out one control command (see package control for the
// commands and their results).
func (d *Agent) Do(ctx context.Context, req control.Request) (any, error) {
	a := req.Args
	switch req.Cmd {
	case "flows", "explain", "stats":
		// Merge the NIC's counters first (Run does it every quarter of
		// FlowIdle), so that packets, bytes and idle times are current, as
		// ovs-ofctl dump-flows shows them.
		if err := d.sw.Maintain(ctx); err != nil {
			d.log.Warn("maintenance before "+req.Cmd, "err", err)
		}
	}
	switch req.Cmd {
	case "show":
		return d.show(ctx), nil
	case "caps":
		c := d.nic.Capabilities()
		return control.Caps{Text: c.String()}, nil
	case "flows":
		filter := ""
		if len(a) == 1 && (a[0] == "host" || a[0] == "nic") {
			filter = a[0]
		} else if len(a) > 0 {
			return nil, fmt.Errorf("flows takes nothing, host or nic; got %q", strings.Join(a, " "))
		}
		return d.flows(filter), nil
	case "explain":
		return d.explain(a)
	case "stats":
		return d.stats(ctx), nil
	case "activate":
		if len(a) != 1 {
			return nil, errors.New("activate takes the VM's name")
		}
		if err := d.ActivateShadow(ctx, a[0]); err != nil {
			return nil, err
		}
		return control.Activated{VM: a[0]}, nil
	case "capture":
		return d.captureCmd(a)
	case "seal":
		if len(a) != 0 {
			return nil, errors.New("seal takes no arguments")
		}
		return d.sealStatus(), nil
	case "learned":
		if len(a) != 0 {
			return nil, errors.New("learned takes no argument")
		}
		return d.learned(), nil
	case "reload":
		changed, err := d.Reload(ctx)
		if err != nil {
			return nil, err
		}
		return control.Reloaded{Changed: changed}, nil
	}
	return nil, fmt.Errorf("unknown command %q", req.Cmd)
}

func (d *Agent) show(ctx context.Context) control.Show {
	caps := d.nic.Capabilities()
	st := d.State()
	h, _ := st.Host(d.cfg.Host)
	d.mu.Lock()
	loaded := d.loadedAt
	var rejected *control.PolicyRejection
	if d.rejection != nil {
		r := rejectionInfo(d.source(), d.rejection)
		rejected = &r
	}
	d.mu.Unlock()
	s := control.Show{Host: d.cfg.Host, PA: h.PA.String(), Driver: caps.Driver, Device: caps.Device,
		Location: caps.Location.String(), PolicyFile: d.cfg.Policy, PolicyLoad: loaded, Uptime: time.Since(d.started).Round(time.Millisecond),
		Store: d.storeStatus(), PolicyRejected: rejected}
	if file, _, on := d.capture.status(); on {
		s.Capture = file
	}
	s.SealPublicKey = d.sealPublicKeyHex()
	for _, p := range d.nic.Ports() {
		cp := control.Port{ID: uint32(p.ID), Name: d.portLabel(p), Kind: p.Kind.String(), Interface: d.plan.ifname[p.ID],
			MAC: p.MAC.String(), MTU: p.MTU}
		if p.ID != d.plan.uplink {
			cp.VM = cp.Name
		}
		if pc, err := d.nic.PortCounters(ctx, p.ID); err == nil {
			cp.RxPackets, cp.RxBytes, cp.TxPackets, cp.TxBytes = pc.Rx.Packets, pc.Rx.Bytes, pc.Tx.Packets, pc.Tx.Bytes
			cp.Drops, cp.Exceptions = pc.Drops, pc.Exceptions
		}
		s.Ports = append(s.Ports, cp)
	}
	sort.Slice(s.Ports, func(i, j int) bool { return s.Ports[i].ID < s.Ports[j].ID })
	return s
}

func (d *Agent) flows(filter string) []control.Flow {
	fs := d.sw.Flows()
	out := make([]control.Flow, 0, len(fs))
	for _, f := range fs {
		loc := f.Path.String()
		if filter != "" && loc != filter {
			continue
		}
		cf := control.Flow{Rule: uint64(f.ID), Location: loc, Why: f.Why.String(), Match: f.Match.String(),
			Scope: uint32(f.Scope), Gen: uint64(f.Gen), Shadow: uint64(f.ShadowID), Packets: f.Packets, Bytes: f.Bytes,
			Age: f.Age, Idle: f.Idle}
		if f.Err != nil {
			cf.Detail = f.Err.Error()
		}
		for _, a := range f.Actions {
			cf.Actions = append(cf.Actions, a.String())
		}
		out = append(out, cf)
	}
	// NIC flows first, then by rule; host flows (rule 0) by match.
	sort.Slice(out, func(i, j int) bool {
		if out[i].Location != out[j].Location {
			return out[i].Location > out[j].Location
		}
		if out[i].Rule != out[j].Rule {
			return out[i].Rule < out[j].Rule
		}
		return out[i].Match < out[j].Match
	})
	return out
}

func explanation(e vswitch.Explanation) control.Explanation {
	x := control.Explanation{Text: e.String(), Where: e.Where.String(), Verdict: e.Verdict, Detail: e.Detail}
	if e.Where == vswitch.PathHost {
		x.Why = e.Why.String()
	}
	if e.Flow != nil {
		x.CachedAt = uint64(e.Flow.ID)
	}
	return x
}

// ExplainUsage is the grammar of explain's arguments.
const ExplainUsage = "explain <rule-id> | explain <vm> <src> <dst> [icmp|tcp|udp|<proto> [sport dport]] | explain uplink <vni> <outer-src> <src> <dst> [proto [sport dport]]"

// explain answers explain: a cached flow by rule ID, a packet a local VM
// sends, or a packet arriving on the uplink.
func (d *Agent) explain(a []string) (any, error) {
	if len(a) == 1 {
		id, err := strconv.ParseUint(a[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a rule ID; usage: %s", a[0], ExplainUsage)
		}
		e, ok := d.sw.ExplainFlow(hal.RuleID(id))
		if !ok {
			return nil, fmt.Errorf("no flow has rule %d (see flows)", id)
		}
		return explanation(e), nil
	}
	st := d.State()
	desc := vswitch.Description{}
	var vni uint32
	var srcMAC policy.MAC
	if len(a) >= 1 && a[0] == "uplink" {
		if len(a) < 5 {
			return nil, errors.New("usage: " + ExplainUsage)
		}
		v, err := strconv.ParseUint(a[1], 10, 24)
		if err != nil {
			return nil, fmt.Errorf("vni %q: want a number below 2^24", a[1])
		}
		outer, err := netip.ParseAddr(a[2])
		if err != nil {
			return nil, fmt.Errorf("outer source %q: %v", a[2], err)
		}
		vni = uint32(v)
		desc.Uplink, desc.VNI, desc.OuterSrc = true, vni, outer
		a = a[3:]
	} else {
		if len(a) < 3 {
			return nil, errors.New("usage: " + ExplainUsage)
		}
		vm, ok := st.VM(a[0])
		if !ok {
			return nil, fmt.Errorf("no VM %q in the policy", a[0])
		}
		if _, ok := d.plan.vmPort[a[0]]; !ok {
			return nil, fmt.Errorf("VM %q has no port on this host", a[0])
		}
		desc.VM = a[0]
		srcMAC = vm.MAC
		if vn, ok := st.VNET(vm.Tenant, vm.VNET); ok {
			vni = vn.VNI
		}
		a = a[1:]
	}
	p, err := parsePacket(a)
	if err != nil {
		return nil, err
	}
	p.SrcMAC = srcMAC
	// The destination MAC a sender would use: the peer's in the same VNET
	// (no router on the way), the router's otherwise.
	p.DstMAC = st.RouterMAC()
	if m, ok := st.Lookup(vni, p.Dst); ok {
		p.DstMAC = m.MAC
	}
	if desc.Uplink {
		if m, ok := st.Lookup(vni, p.Src); ok {
			p.SrcMAC = m.MAC
		}
	}
	desc.Packet = p
	x := explanation(d.sw.Explain(desc))
	d.explainDirectory(&x, desc.VM, desc.Uplink, vni, p.Src, p.Dst)
	return x, nil
}

// parsePacket reads "src dst [proto [sport dport]]".
func parsePacket(a []string) (policy.Packet, error) {
	var p policy.Packet
	if len(a) < 2 || len(a) > 5 || len(a) == 4 {
		return p, errors.New("usage: " + ExplainUsage)
	}
	var err error
	if p.Src, err = netip.ParseAddr(a[0]); err != nil {
		return p, fmt.Errorf("source address %q: %v", a[0], err)
	}
	if p.Dst, err = netip.ParseAddr(a[1]); err != nil {
		return p, fmt.Errorf("destination address %q: %v", a[1], err)
	}
	if p.Src.Is4() != p.Dst.Is4() {
		return p, errors.New("source and destination must both be IPv4 or both IPv6")
	}
	p.EtherType, p.TTL = policy.EtherTypeIPv4, 64
	p.Protocol, p.ICMPType = policy.ProtoICMP, 8 // echo request, as ping sends
	if p.Src.Is6() {
		p.EtherType, p.Protocol, p.ICMPType = policy.EtherTypeIPv6, policy.ProtoICMPv6, 128
	}
	if len(a) >= 3 {
		switch a[2] {
		case "icmp", "icmp6", "icmpv6":
		case "tcp":
			p.Protocol, p.ICMPType = policy.ProtoTCP, 0
		case "udp":
			p.Protocol, p.ICMPType = policy.ProtoUDP, 0
		default:
			v, err := strconv.ParseUint(a[2], 10, 8)
			if err != nil {
				return p, fmt.Errorf("protocol %q: want icmp, tcp, udp or a number", a[2])
			}
			p.Protocol, p.ICMPType = uint8(v), 0
		}
	}
	if len(a) == 5 {
		sp, err1 := strconv.ParseUint(a[3], 10, 16)
		dp, err2 := strconv.ParseUint(a[4], 10, 16)
		if err1 != nil || err2 != nil {
			return p, fmt.Errorf("ports %q %q: want numbers up to 65535", a[3], a[4])
		}
		if p.Protocol == policy.ProtoICMP || p.Protocol == policy.ProtoICMPv6 {
			if sp > 255 || dp > 255 {
				return p, errors.New("for ICMP the two numbers are type and code, up to 255")
			}
			p.ICMPType, p.ICMPCode = uint8(sp), uint8(dp)
		} else {
			p.SrcPort, p.DstPort = uint16(sp), uint16(dp)
		}
	} else if p.Protocol == policy.ProtoTCP || p.Protocol == policy.ProtoUDP {
		return p, fmt.Errorf("%s needs source and destination ports", a[2])
	}
	return p, nil
}

func (d *Agent) stats(ctx context.Context) control.Stats {
	st := d.sw.Stats()
	out := control.Stats{Text: st.String(), FlowsNIC: st.FlowsNIC, FlowsHost: st.FlowsHost,
		Exceptions: map[string]uint64{}, Drops: map[string]uint64{}, NICDrops: map[string]uint64{}}
	for r := hal.Reason(0); r < hal.NumReasons; r++ {
		if v := st.Exceptions[r]; v > 0 {
			out.Exceptions[r.String()] = v
		}
	}
	for r, v := range st.Drops {
		out.Drops[r] = v
	}
	if ns, err := d.nic.Stats(ctx); err == nil {
		for r := hal.Reason(0); r < hal.NumReasons; r++ {
			if v := ns.Drops[r]; v > 0 {
				out.NICDrops[r.String()] = v
			}
		}
	}
	if od := d.onDemandStats(); od != nil {
		out.OnDemand = od
		out.Text += od.String()
	}
	d.mu.Lock()
	out.Updates, out.Rejected = d.updates, d.rejected
	d.mu.Unlock()
	return out
}

func (d *Agent) captureCmd(a []string) (any, error) {
	switch {
	case len(a) == 2 && a[0] == "start":
		if !filepath.IsAbs(a[1]) {
			return nil, fmt.Errorf("capture file %q: give an absolute path (the daemon's working directory is not yours)", a[1])
		}
		if err := d.capture.start(a[1], d.nic.Ports()); err != nil {
			return nil, err
		}
		d.log.Info("capture started", "file", a[1])
		return control.CaptureStatus{File: a[1], Active: true}, nil
	case len(a) == 1 && a[0] == "stop":
		file, n, err := d.capture.stop()
		if err != nil {
			return nil, err
		}
		d.log.Info("capture stopped", "file", file, "packets", n)
		return control.CaptureStatus{File: file, Packets: n}, nil
	}
	return nil, errors.New("usage: capture start <file> | capture stop")
}

// learned answers learned: what the switch kept of the NIC's learned
// addresses and announcements.
func (d *Agent) learned() control.Learned {
	addrs, anns := d.sw.Learned()
	out := control.Learned{Supported: d.nic.Capabilities().AddressLearning, Addresses: []control.LearnedAddress{},
		Announcements: []control.AddressAnnouncement{}, Spoofed: d.sw.Stats().Spoofed}
	for _, a := range addrs {
		out.Addresses = append(out.Addresses, control.LearnedAddress{VM: a.VM, Port: uint32(a.Port), MAC: a.MAC.String(), Addr: a.Addr.String(),
			Owned: a.Owned, Reports: a.Reports, Announced: a.Announced, First: a.First, Last: a.Last})
	}
	for _, a := range anns {
		out.Announcements = append(out.Announcements, control.AddressAnnouncement{VM: a.VM, Port: uint32(a.Port), MAC: a.MAC.String(),
			Addr: a.Addr.String(), At: a.At, Owned: a.Owned, Local: a.Local, First: a.First})
	}
	return out
}

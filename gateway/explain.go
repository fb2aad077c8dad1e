package gateway

import (
	"fmt"
	"strings"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
)

// Explanation says what the gateway does with one frame, without doing it.
type Explanation struct {
	// Trace is the walk in words: the policy's checks, the connection.
	Trace []string
	// Verdict is "translate", "answer", "drop (<reason>)" or "arp".
	Verdict string
	// Handled says where the frame's flow runs: "nic (rules N, M)",
	// "host: <why>", or "not yet tracked" for a first packet.
	Handled string
}

func (e Explanation) String() string {
	var b strings.Builder
	for i, s := range e.Trace {
		fmt.Fprintf(&b, "%2d. %s\n", i+1, s)
	}
	fmt.Fprintf(&b, "=> %s\nHandled: %s\n", e.Verdict, e.Handled)
	return b.String()
}

// Explain says what the gateway would do with frame arriving on port in:
// the policy's judgement of a tenant frame, the connection it belongs to
// (or would create), and where that connection's flow runs.
func (g *Gateway) Explain(in hal.PortID, frame []byte) Explanation {
	g.mu.Lock()
	defer g.mu.Unlock()
	var x Explanation
	var k hal.FlowKey
	var l wire.Layout
	step := func(f string, a ...any) { x.Trace = append(x.Trace, fmt.Sprintf(f, a...)) }
	if err := wire.Parse(frame, in, &k, &l); err != nil {
		if l.Flags&wire.FlagLaterFragment != 0 {
			step("a non-first fragment carries no transport header: no ports to find its connection by, and the gateway does not reassemble")
			step("first fragments pass with their connection; DF traffic (TCP) does not fragment, since the ICMP errors of path MTU discovery are translated back to the VM")
			x.Verdict, x.Handled = "drop (non-first-fragment)", "host: counted as non-first-fragment"
			return x
		}
		x.Verdict, x.Handled = "drop ("+wire.ReasonOf(err).String()+")", "host: "+err.Error()
		return x
	}
	switch in {
	case g.cfg.Uplink:
		if !l.Tunnelled() || hal.AddrFrom16(k.TunDst) != g.gw.PA {
			step("not a tunnelled frame for gateway %s's PA %s", g.gw.Name, g.gw.PA)
			x.Verdict, x.Handled = "drop (not_local)", "host"
			return x
		}
		kind, _ := encapKind(k.TunKind)
		v := g.st.EvaluateAtGateway(g.gw.Name, policy.FromTunnel(kind, k.VNI, hal.AddrFrom16(k.TunSrc)), policyPacket(&k, ttlOf(frame, &l)))
		x.Trace = append(x.Trace, v.Trace...)
		if !v.Allow {
			x.Verdict = "drop (" + v.Reason.String() + ")"
			x.Handled = "host"
			if r, ok := g.refused[k]; ok {
				if r.rule != 0 {
					x.Handled = fmt.Sprintf("nic (drop rule %d, counted)", r.rule)
				} else {
					x.Handled = "host: " + r.why
				}
			}
			return x
		}
		x.Verdict = "translate"
		if v6 := k.Proto == hal.ProtoICMPv6; (v6 || k.Proto == hal.ProtoICMP) && l.L4 >= 0 && l.L4 < l.End && icmpErrorType(frame[l.L4], v6) {
			x.Handled = "host: ICMP errors are always handled on the host (the quoted packet is rewritten)"
			e, err := ParseICMPError(frame[l.L4:l.End], v6)
			if err != nil {
				step("%v", err)
				x.Verdict = "drop (" + icmpErrorDrop(err) + ")"
				return x
			}
			kind, _ := encapKind(k.TunKind)
			ik := insideKey{vni: k.VNI, encapKind: kind, outerSrcPA: hal.AddrFrom16(k.TunSrc), src: e.Dst, dst: e.Src,
				sport: e.DstPort, dport: e.SrcPort, proto: e.Proto}
			if e.Echo {
				ik.sport, ik.dport = e.SrcPort, 0
			}
			if c, ok := g.conns[ik]; ok && k.Src() == c.inside.src && k.Dst() == c.outside.remote {
				step("ICMP error (type %d code %d) from the VM about connection %s:%d > %s:%d: sent from %s, the quoted packet's destination made %s:%d again",
					e.Type, e.Code, c.inside.src, c.inside.sport, c.inside.dst, c.inside.dport, c.outside.local, c.outside.local, c.outside.extPort)
				x.Verdict = "icmp-error"
				return x
			}
			step("ICMP error quoting %s:%d > %s:%d: no tracked connection", e.Src, e.SrcPort, e.Dst, e.DstPort)
			x.Verdict = "drop (icmp-error-no-connection)"
			return x
		}
		for _, c := range g.conns {
			if c.fwdKey == k {
				step("connection %s:%d > %s:%d translated to %s:%d (tenant %s)", c.inside.src, c.inside.sport,
					c.inside.dst, c.inside.dport, c.outside.local, c.outside.extPort, c.tenant)
				x.Handled = g.handled(c)
				return x
			}
		}
		step("no connection yet: the first packet takes an external port of %s", g.cfg.Address.Addr())
		x.Handled = "not yet tracked"
		if k.Proto == hal.ProtoICMP || k.Proto == hal.ProtoICMPv6 {
			x.Handled = "host: ICMP echo: connections are told apart (and translated) by the identifier, which no NIC match field or action reads or writes"
		}
		return x
	case g.cfg.External:
		if k.EthType == hal.EtherTypeARP {
			x.Verdict, x.Handled = "arp", "host"
			step("ARP on the external network: answered for %s, next hops learned", g.cfg.Address.Addr())
			return x
		}
		if isND(&k) {
			x.Verdict, x.Handled = "nd", "host"
			step("IPv6 neighbour discovery on the external network: solicitations for %s answered, next hops learned", g.cfg.Address.Addr())
			return x
		}
		if v6 := k.Proto == hal.ProtoICMPv6; (v6 || k.Proto == hal.ProtoICMP) && l.L4 >= 0 && l.L4 < l.End && icmpErrorType(frame[l.L4], v6) {
			e, err := ParseICMPError(frame[l.L4:l.End], v6)
			if err != nil {
				step("%v", err)
				x.Verdict, x.Handled = "drop ("+icmpErrorDrop(err)+")", "host"
				return x
			}
			if c, ok := g.errorConn(&e); ok && e.Src == k.Dst() {
				step("ICMP error (type %d code %d) about connection %s:%d > %s:%d of tenant %s (vm %s on %s)", e.Type, e.Code,
					c.inside.src, c.inside.sport, c.inside.dst, c.inside.dport, c.tenant, c.vm, c.host)
				step("error and quoted packet translated back to the VM's address and port, checksums made again, encapsulated in %s vni %d toward %s",
					c.inside.encapKind, c.inside.vni, c.hostPA)
				x.Verdict, x.Handled = "icmp-error", "host: ICMP errors are always handled on the host (the quoted packet is rewritten)"
				return x
			}
			step("ICMP error quoting %s:%d > %s:%d: no tracked connection", e.Src, e.SrcPort, e.Dst, e.DstPort)
			x.Verdict, x.Handled = "drop (icmp-error-no-connection)", "host"
			return x
		}
		for _, c := range g.conns {
			if c.revKey == k || (c.icmp && k.IsIP() && k.Src() == c.outside.remote && k.Proto == c.outside.proto) {
				step("answer to connection %s:%d > %s:%d of tenant %s (vm %s on %s)", c.inside.src, c.inside.sport,
					c.inside.dst, c.inside.dport, c.tenant, c.vm, c.host)
				step("translated back and encapsulated in %s vni %d toward %s", c.inside.encapKind, c.inside.vni, c.hostPA)
				x.Verdict, x.Handled = "answer", g.handled(c)
				return x
			}
		}
		step("no tracked connection has this answer's remote address, port and external port")
		x.Verdict, x.Handled = "drop (no-connection)", "host"
		return x
	}
	x.Verdict, x.Handled = "drop (unknown-port)", "host"
	return x
}

func (g *Gateway) handled(c *conn) string {
	if c.why != "" {
		return "host: " + c.why
	}
	return fmt.Sprintf("nic (rules %d, %d)", c.fwdID, c.revID)
}

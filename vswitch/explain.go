package vswitch

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
)

// Description describes a packet by its headers, for Explain: the local VM
// that sends it, or the uplink with its encapsulation, and the inner packet.
type Description struct {
	VM     string // sending local VM; empty for the uplink
	Uplink bool
	// Encap is the encapsulation the packet arrives in from the uplink;
	// EncapNone means that of the VNET the VNI names (VXLAN for a VNI no
	// VNET has).
	Encap    hal.EncapKind
	VNI      uint32
	OuterSrc netip.Addr // the sending host's (or gateway's) PA
	OuterDst netip.Addr // default: this host's PA
	Packet   policy.Packet
}

// Explanation says where a packet (or flow) is handled and why.
type Explanation struct {
	Key     hal.FlowKey
	Trace   []string // the layers walked, one step a line
	Verdict string   // the policy outcome
	Action  policy.Action
	Reason  policy.Reason
	Actions []hal.Action // the unified flow's header operations
	// Where it is handled: the NIC or the host; PathNone for a packet the
	// host drops before any flow (sealed, TTL, malformed), or a sealed
	// frame the NIC drops itself (Capabilities.SealedDrop).
	Where Path
	Why   Why
	// Detail is the refusal, failure or host drop behind Why, in words.
	Detail string
	// HostDrop names the host drop (a key of Stats.Drops: "not_local",
	// "sealed", "ttl", …) when the host drops the packet before any flow;
	// empty otherwise (a sealed frame the NIC drops itself included).
	HostDrop string
	// Flow is the cached flow, when the switch has one for the key.
	Flow *FlowInfo
}

// String prints the explanation the way ofproto/trace does: the flow, the
// layers, the verdict, the unified flow and where it runs.
func (e Explanation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Flow: %s\n", e.Key)
	for _, s := range e.Trace {
		fmt.Fprintf(&b, "    %s\n", s)
	}
	fmt.Fprintf(&b, "Verdict: %s\n", e.Verdict)
	if len(e.Actions) > 0 {
		acts := make([]string, len(e.Actions))
		for i, a := range e.Actions {
			acts[i] = a.String()
		}
		m := hal.Exact(&e.Key)
		if e.Flow != nil {
			m = e.Flow.Match
		}
		fmt.Fprintf(&b, "Unified flow: %s actions=%s\n", m.String(), strings.Join(acts, ","))
	}
	switch e.Where {
	case PathNIC:
		fmt.Fprintf(&b, "Handled: NIC")
	case PathHost:
		fmt.Fprintf(&b, "Handled: host (%s)", e.Why)
	default:
		fmt.Fprintf(&b, "Handled: nowhere")
	}
	if e.Detail != "" {
		fmt.Fprintf(&b, ": %s", e.Detail)
	}
	b.WriteString("\n")
	if f := e.Flow; f != nil {
		fmt.Fprintf(&b, "Cached flow: rule %d scope %d gen %d, %d packets, %d bytes, age %s, idle %s\n",
			f.ID, f.Scope, f.Gen, f.Packets, f.Bytes, f.Age, f.Idle)
	} else {
		b.WriteString("Cached flow: none yet (the first packet creates it)\n")
	}
	return b.String()
}

// Explain says what the switch does with a packet described by its headers.
func (s *Switch) Explain(d Description) Explanation {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := s.keyOf(&d)
	if err != nil {
		return Explanation{Where: PathNone, Detail: err.Error(), Verdict: "not a packet of this host"}
	}
	return s.explainKey(&k, d.Packet.TTL)
}

// ExplainFrame says what the switch does with a frame arriving on inPort.
func (s *Switch) ExplainFrame(inPort hal.PortID, frame []byte) Explanation {
	s.mu.Lock()
	defer s.mu.Unlock()
	var k hal.FlowKey
	var l wire.Layout
	if err := wire.Parse(frame, inPort, &k, &l); err != nil {
		drop := DropMalformed
		switch wire.ReasonOf(err) {
		case hal.ReasonFragment:
			drop = DropFragment
		case hal.ReasonUnsupported:
			drop = DropUnparsable
		}
		return Explanation{Key: k, Where: PathNone, Verdict: "drop", Detail: "the host drops it: " + err.Error(), HostDrop: drop.String()}
	}
	if k.EthType == hal.EtherTypeSealed {
		return s.explainSealed(k)
	}
	if s.notLocal(frame, &k) && s.cur.terminates(hal.AddrFrom16(k.TunDst)) {
		// The address is this host's, the MAC is not: the walk cannot
		// see that (a flow key has no outer MAC), the frame can.
		dst := hal.MAC(frame[0:6])
		e := Explanation{Key: k, Verdict: "drop (" + DropNotLocal.String() + ")", Where: PathNone, HostDrop: DropNotLocal.String()}
		e.Trace = []string{fmt.Sprintf("from uplink: %s vni %d, outer destination %s, outer destination MAC %s", k.TunKind, k.VNI, hal.AddrFrom16(k.TunDst), dst)}
		e.Detail = fmt.Sprintf("the host drops it before any flow: outer destination MAC %s is not the uplink's %s (a frame for another station, flooded or seen in promiscuous mode)", dst, s.uplinkMAC)
		return e
	}
	e := s.explainKey(&k, ttlOf(frame, &l))
	s.explainMTU(&e, &k, frame, &l) // a frame too big for its egress (mtu.go)
	return e
}

// ExplainFlow explains the flow with rule ID id (as listed by Flows).
func (s *Switch) ExplainFlow(id hal.RuleID) (Explanation, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for f := range s.flows.all() {
		if f.h.id == id || f.h.shadowID == id {
			return s.explainKey(&f.key, 64), true
		}
	}
	return Explanation{}, false
}

// explainSealed says what becomes of a sealed-address frame, as the NIC
// reports it: Crypto (it opens them) and SealedDrop (what it cannot open or
// route it drops itself, never handing it to the host).
func (s *Switch) explainSealed(k hal.FlowKey) Explanation {
	e := Explanation{Key: k, Verdict: "drop", Where: PathNone}
	var b strings.Builder
	if s.caps.Crypto {
		b.WriteString("sealed-address frame: the NIC opens it and forwards it on the sealed routes the host pushed (" +
			strconv.Itoa(len(s.seal.pushed[k.InPort])) + " for this vport); ")
		if s.caps.SealedDrop {
			b.WriteString("one it cannot open or route (no key, a bad seal, no route) the NIC drops itself (reason sealed): none reaches the host")
		} else {
			b.WriteString("one it cannot open or route (no key, a bad seal, no route) it hands to the host, which drops it (fail closed) and never opens it")
			e.HostDrop = DropSealed.String()
		}
	} else {
		b.WriteString("sealed-address frame and the NIC has no crypto capability: ")
		if s.caps.SealedDrop {
			b.WriteString("the NIC drops it (fail closed, reason sealed, see its notes); it never reaches the host")
		} else {
			b.WriteString("the NIC hands it to the host, which drops it (fail closed) and never opens it")
			e.HostDrop = DropSealed.String()
		}
	}
	e.Detail = b.String()
	return e
}

func (s *Switch) keyOf(d *Description) (hal.FlowKey, error) {
	p := &d.Packet
	k := hal.FlowKey{EthSrc: hal.MAC(p.SrcMAC), EthDst: hal.MAC(p.DstMAC), EthType: p.EtherType}
	if d.Uplink {
		k.InPort = s.cfg.Uplink
		k.TunKind, k.VNI = d.Encap, d.VNI
		if k.TunKind == hal.EncapNone {
			k.TunKind = hal.EncapVXLAN
			if dv := s.cur.vnetByVNI[d.VNI]; dv != nil {
				k.TunKind = dv.encap
			}
		}
		k.TunSrc = d.OuterSrc.As16()
		dst := d.OuterDst
		if !dst.IsValid() {
			dst = s.cur.pa
		}
		k.TunDst = dst.As16()
	} else {
		port, ok := s.cfg.Ports[d.VM]
		if !ok {
			return k, fmt.Errorf("VM %q has no vport on this switch", d.VM)
		}
		k.InPort = port
	}
	if k.EthType == hal.EtherTypeSealed {
		return k, nil
	}
	if p.Src.IsValid() && p.Dst.IsValid() && (p.EtherType == hal.EtherTypeIPv4 || p.EtherType == hal.EtherTypeIPv6) {
		k.IPSrc, k.IPDst = p.Src.As16(), p.Dst.As16()
		k.Proto = p.Protocol
		switch p.Protocol {
		case policy.ProtoTCP, policy.ProtoUDP, policy.ProtoSCTP:
			k.L4Src, k.L4Dst = p.SrcPort, p.DstPort
		case policy.ProtoICMP, policy.ProtoICMPv6:
			k.L4Src, k.L4Dst = uint16(p.ICMPType), uint16(p.ICMPCode)
		}
	}
	return k, nil
}

func (s *Switch) explainKey(k *hal.FlowKey, ttl uint8) Explanation {
	if k.EthType == hal.EtherTypeSealed {
		return s.explainSealed(*k)
	}
	if ttl == 0 {
		ttl = wire.DefaultTTL
	}
	var tr tracer
	var v verdict
	anyPorts := s.cur.classify(k, s.cfg.Uplink, ttl, s.ct, &tr, &v)
	wild := ttl > 1 && s.wildcards() && wildVerdict(k, anyPorts, &v)
	e := Explanation{Key: *k, Trace: tr.steps, Action: v.action, Reason: v.reason}
	e.Verdict = verdictString(&v)
	if v.action == policy.Drop && v.reason == policy.ReasonSpoofedSource {
		e.Trace = append(e.Trace, s.spoofNote(k, &v))
	}
	if v.action == policy.Drop && v.reason == policy.ReasonTTLExpired {
		e.Where, e.Detail = PathNone, "the host drops this packet for its TTL; the flow itself is unaffected"
		e.HostDrop = DropTTL.String()
		return e
	}
	if v.notLocal {
		e.Where, e.HostDrop = PathNone, DropNotLocal.String()
		e.Detail = "the host drops it before any flow: a tunnelled frame for another tunnel endpoint is neither decapsulated nor remembered"
		if s.tunnelFilter() {
			e.Detail += "; the NIC's tunnel filter drops it first (hal.ReasonNotLocal)"
		}
		return e
	}
	now := s.now()
	f := s.flows.get(k)
	covered := false
	if f == nil && wild {
		f = s.coveringWild(k, &v)
		covered = f != nil
	}
	if f != nil {
		fi := s.flowInfo(f, now)
		e.Flow = &fi
		e.Actions = fi.Actions
		e.Where, e.Why = f.h.loc, f.why
		switch {
		case f.failure() != nil && f.why == WhyNotSupported:
			e.Detail = s.hostPathDetail(f.current(), k, f.failure())
		case f.failure() != nil:
			e.Detail = f.failure().Error()
		case f.h.loc == PathNIC && covered:
			e.Detail = fmt.Sprintf("covered by the port-wildcard rule %d (%s): another connection between the same endpoints made it, and the verdict does not depend on the ports", f.h.id, s.caps.Location)
		case f.h.loc == PathNIC && f.wild:
			e.Detail = fmt.Sprintf("offloaded as the port-wildcard rule %d (%s): every connection between the same endpoints uses it", f.h.id, s.caps.Location)
		case f.h.loc == PathNIC:
			e.Detail = fmt.Sprintf("offloaded as rule %d (%s)", f.h.id, s.caps.Location)
		case f.why == WhyPolicy:
			e.Detail = "the policy hands these packets to the host"
		case f.why == WhyNoOffload:
			e.Detail = s.noOffloadDetail()
		}
		if covered && f.h.loc != PathNIC {
			e.Detail += fmt.Sprintf(" (the port-wildcard flow of rule %d covers it)", f.h.id)
		}
		if f.current().key != actKeyOf(&v) {
			e.Detail += " (the cached flow predates a change; it is revalidated on the next update)"
		}
		return e
	}
	// Not seen yet: say where the first packet would put it.
	a := s.buildActions(actKeyOf(&v))
	e.Actions = a.acts
	if r := s.proFor(k); r != nil && r.id != 0 && r.landed && a.key == r.current().key {
		e.Actions = r.current().acts
		e.Where, e.Why = PathNIC, WhyOffloaded
		e.Detail = fmt.Sprintf("per-destination rule %d, programmed ahead of traffic: no packet of it reaches the host", r.id)
		return e
	}
	switch {
	case s.tunnelMissUnseen(k):
		e.Where, e.Detail = PathNone, unseenDetail(k.TunKind)
	case !a.offload:
		e.Where, e.Why, e.Detail = PathHost, WhyPolicy, "the policy hands these packets to the host"
	case !s.offloading():
		e.Where, e.Why, e.Detail = PathHost, WhyNoOffload, s.noOffloadDetail()
	default:
		var sc hal.Scope
		if v.scopeVM != "" && s.caps.Generations {
			if x := s.scopes[v.scopeVM]; x != nil {
				sc = x.id
			} else {
				sc = hal.Scope(s.vmIDs.id(v.scopeVM))
			}
		}
		r := s.off.rule(1, k, a, sc, 0, wild)
		if wild && s.nic.Validate(&r) != nil {
			wild = false
			r = s.off.rule(1, k, a, sc, 0, false)
		}
		if err := s.nic.Validate(&r); err != nil {
			e.Where, e.Why, e.Detail = PathHost, whyOf(err), err.Error()
			if e.Why == WhyNotSupported {
				e.Detail = s.hostPathDetail(a, k, err)
			}
		} else if s.caps.MaxRules > 0 && s.countNIC() >= s.caps.MaxRules {
			e.Where, e.Why, e.Detail = PathHost, WhyTableFull, fmt.Sprintf("the NIC's table holds %d rules and is full", s.caps.MaxRules)
		} else {
			e.Where, e.Why, e.Detail = PathNIC, WhyOffloaded, "the NIC accepts the rule; the first packet offloads it"
			if wild {
				e.Detail += " as a port-wildcard rule (the verdict does not depend on the ports): later connections between the same endpoints use it"
			}
		}
	}
	return e
}

// tunnelMissUnseen reports whether the first packet of k, a frame from the
// uplink in a tunnel the NIC decapsulates, never reaches the host: the NIC
// says that a tunnelled frame no rule takes goes on into its own stack
// (Capabilities.TunnelMissesUnseen), so the walk that would make its flow
// never runs.
func (s *Switch) tunnelMissUnseen(k *hal.FlowKey) bool {
	return s.caps.ExceptionPath && s.caps.TunnelMissesUnseen && k.TunKind != hal.EncapNone && s.caps.Decaps.Has(k.TunKind)
}

func unseenDetail(kind hal.EncapKind) string {
	return fmt.Sprintf("the NIC never hands a %s frame that no rule takes to the host (Capabilities.TunnelMissesUnseen; see its notes): the first packet of a connection a remote VM opens goes into the NIC's own stack, is never walked, and no flow is made for it; only a reply this host predicted (reverse.go: the reply of a connection a local VM opened through a stateful allow) reaches the VM", kind)
}

// hostPathDetail says why a flow the NIC refused stays on the host path:
// an encapsulation the NIC cannot write or a tunnel it cannot strip (the
// switch does either in software), else the NIC's refusal as it is.
func (s *Switch) hostPathDetail(a *actSet, k *hal.FlowKey, err error) string {
	ak := &a.key
	switch {
	case (ak.action == policy.Encap || ak.action == policy.ToGateway) && !s.caps.Encaps.Has(ak.encap):
		return fmt.Sprintf("NIC cannot encapsulate %s: kept on the host path, which encapsulates in software (%v)", ak.encap, err)
	case ak.decap && !s.caps.Decaps.Has(k.TunKind):
		return fmt.Sprintf("NIC cannot decapsulate %s: kept on the host path, which decapsulates in software (%v)", k.TunKind, err)
	}
	return err.Error()
}

// noOffloadDetail says which of the two reasons offloading() gives keeps
// flows off the NIC.
func (s *Switch) noOffloadDetail() string {
	if s.cfg.DisableOffload {
		return "offload is disabled by configuration"
	}
	return "the NIC has no exception path (its capabilities say so; see the driver's notes): no first packet reaches the switch to offload a flow from"
}

func (s *Switch) countNIC() int {
	n := 0
	for f := range s.flows.all() {
		if f.h.id != 0 {
			n++
		}
		if f.h.shadowID != 0 {
			n++
		}
	}
	return n
}

func verdictString(v *verdict) string {
	if v.notLocal {
		return "drop (" + DropNotLocal.String() + ")"
	}
	switch v.action {
	case policy.Drop:
		return "drop (" + v.reason.String() + ")"
	case policy.ToHost:
		return "to host (" + v.reason.String() + ")"
	case policy.Deliver:
		return fmt.Sprintf("deliver to port %d, rewrite %s", v.port, v.rw)
	case policy.Encap:
		return fmt.Sprintf("encapsulate in %s vni %d to %s, rewrite %s", v.encap, v.vni, v.pa, v.rw)
	case policy.ToGateway:
		return fmt.Sprintf("to gateway %s in %s vni %d, rewrite %s", v.pa, v.encap, v.vni, v.rw)
	}
	return v.action.String()
}

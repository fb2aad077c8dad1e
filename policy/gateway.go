package policy

import (
	"fmt"
	"net/netip"
)

// GatewayVerdict is what a virtualization gateway must do with a tenant
// packet that reached it encapsulated: let it out to the physical network
// (Allow) or drop it (Reason says why). It is the reference the gateway
// role (package gateway) is tested against, as Verdict is for the vswitch.
type GatewayVerdict struct {
	Allow  bool
	Reason Reason // set when !Allow
	// Tenant, VNET, VNI and Encap name the VNET the packet came from.
	Tenant string
	VNET   string
	VNI    uint32
	Encap  EncapKind
	// VM, Host and PA are the sending VM, its host and the host's PA: where
	// the answers go back to.
	VM   string
	Host string
	PA   netip.Addr
	MAC  MAC // the sending VM's MAC, the inner destination MAC of answers
	// Route is the tenant's route that sent the packet to this gateway, and
	// Rule the gateway rule behind it (empty for an explicit route).
	Route Route
	Rule  string
	// Dst is the destination as the tenant addressed it, before the
	// sender's host applied the gateway rule's NAT (the packet's own
	// destination when the route has no NAT).
	Dst netip.Addr
	// Trace is the walk in words (EvaluateAtGateway; CheckAtGateway leaves
	// it empty).
	Trace []string

	quiet bool
}

func (v *GatewayVerdict) step(format string, args ...any) {
	if !v.quiet {
		v.Trace = append(v.Trace, fmt.Sprintf(format, args...))
	}
}

func (v GatewayVerdict) drop(r Reason, format string, args ...any) GatewayVerdict {
	v.step(format, args...)
	v.Allow, v.Reason = false, r
	return v
}

func (v GatewayVerdict) String() string {
	if !v.Allow {
		return "drop (" + v.Reason.String() + ")"
	}
	return fmt.Sprintf("to the external network for tenant %s (vnet %s, vm %s on %s)", v.Tenant, v.VNET, v.VM, v.Host)
}

// EvaluateAtGateway answers what gateway must do with pkt, which arrived
// decapsulated from in (an uplink in-port: encapsulation, VNI, outer
// source). The packet may leave toward the physical network only when:
//
//   - its VNI names a VNET, carried in the encapsulation it came in;
//   - the gateway serves the VNET's tenant (a dedicated gateway serves only
//     its own tenant; a shared one every tenant);
//   - the outer source is the host where the tenant's VM owning the inner
//     source address runs now (no tenant or stale host speaks for
//     another's addresses);
//   - the tenant's routing domain sends the destination, as the tenant
//     addressed it, to this gateway: a gateway rule whose NAT holds the
//     (translated) destination, or a route to the gateway without NAT
//     whose prefix is the longest match.
//
// Connection tracking and the translation toward the physical network are
// the gateway's own (the policy says which traffic may pass, not which
// external address it takes).
func (s *State) EvaluateAtGateway(gateway string, in InPort, pkt Packet) GatewayVerdict {
	return s.atGateway(gateway, in, pkt, false)
}

// CheckAtGateway is EvaluateAtGateway without the trace, for a data path:
// the same decision, no words.
func (s *State) CheckAtGateway(gateway string, in InPort, pkt Packet) GatewayVerdict {
	return s.atGateway(gateway, in, pkt, true)
}

func (s *State) atGateway(gateway string, in InPort, pkt Packet, quiet bool) GatewayVerdict {
	v := GatewayVerdict{quiet: quiet}
	gi, ok := s.gwIdx[gateway]
	if !ok {
		return v.drop(ReasonUnknownHost, "gateway %q is not in the policy", gateway)
	}
	gw := &s.gateways[gi]
	if !in.Uplink {
		return v.drop(ReasonUnknownPort, "gateway %s takes tenant packets from the uplink only", gw.Name)
	}
	v.step("gateway %s: %s vni %d from %s", gw.Name, in.Encap, in.VNI, in.OuterSrc)
	vi, ok := s.vnetByVNI[in.VNI]
	if !ok {
		return v.drop(ReasonUnknownVNI, "no VNET has vni %d", in.VNI)
	}
	vn := &s.vnets[vi]
	v.Tenant, v.VNET, v.VNI, v.Encap = vn.Tenant, vn.Name, vn.VNI, vn.Encap
	v.step("vni %d is vnet %s of tenant %s", vn.VNI, vn.Name, vn.Tenant)
	if in.Encap != vn.Encap {
		return v.drop(ReasonEncapMismatch, "vnet %s is carried in %s, not %s", vn.Name, vn.Encap, in.Encap)
	}
	if !s.gatewayServes(gi, vn.Tenant) {
		return v.drop(ReasonTenantIsolation, "gateway %s is dedicated to tenant %s, not %s", gw.Name, gw.Tenant, vn.Tenant)
	}
	switch pkt.EtherType {
	case EtherTypeIPv4:
		if !pkt.Src.Is4() || !pkt.Dst.Is4() {
			return v.drop(ReasonMalformed, "IPv4 EtherType with addresses %s > %s", pkt.Src, pkt.Dst)
		}
	case EtherTypeIPv6:
		if !pkt.Src.Is6() || !pkt.Dst.Is6() || pkt.Src.Is4In6() || pkt.Dst.Is4In6() {
			return v.drop(ReasonMalformed, "IPv6 EtherType with addresses %s > %s", pkt.Src, pkt.Dst)
		}
	default:
		return v.drop(ReasonUnsupportedEtherType, "EtherType %#04x: a gateway forwards IPv4 and IPv6 only", pkt.EtherType)
	}
	ti := s.tenantIdx[vn.Tenant]

	// The sender: the tenant's VM owning the inner source, on the host the
	// outer source names.
	sr, ok := lpm(s.routes[ti], pkt.Src)
	if !ok || sr.NextHop.Kind != NextHopVNET {
		return v.drop(ReasonTenantIsolation, "source %s is no address of tenant %s's VNETs", pkt.Src, vn.Tenant)
	}
	sv := &s.vnets[s.vnetIdx[VNETKey{vn.Tenant, sr.NextHop.VNET}]]
	mi, ok := s.table.lookup(sv.VNI, pkt.Src)
	if !ok {
		return v.drop(ReasonTenantIsolation, "vnet %s has no VM with address %s", sv.Name, pkt.Src)
	}
	m := s.mappingAt(mi, true)
	if m.PA != in.OuterSrc {
		return v.drop(ReasonTenantIsolation, "outer source %s does not host tenant %s's address %s (VM %s is on %s, %s)",
			in.OuterSrc, vn.Tenant, pkt.Src, m.VM, m.Host, m.PA)
	}
	if sv.VNI != vn.VNI {
		return v.drop(ReasonTenantIsolation, "address %s is in vnet %s, not in vnet %s the packet came from", pkt.Src, sv.Name, vn.Name)
	}
	v.VM, v.Host, v.PA, v.MAC = m.VM, m.Host, m.PA, m.MAC
	v.step("sender %s is VM %s on %s (%s)", pkt.Src, m.VM, m.Host, m.PA)

	// The destination: routed here by the tenant.
	for _, r := range s.routes[ti] {
		if r.NextHop.Kind != NextHopGateway || r.NextHop.Gateway != gw.Name {
			continue
		}
		orig := pkt.Dst
		if r.NextHop.NAT.IsValid() {
			if !r.NextHop.NAT.Contains(pkt.Dst) {
				continue
			}
			orig = translate(pkt.Dst, r.NextHop.NAT, r.Prefix)
		}
		best, ok := lpm(s.routes[ti], orig)
		if !ok || best.Prefix != r.Prefix {
			continue
		}
		v.Route, v.Rule, v.Dst = r, r.Rule, orig
		if r.NextHop.NAT.IsValid() {
			v.step("gateway rule %s: the tenant addressed %s (%s), translated to %s", r.Rule, orig, r.Prefix, pkt.Dst)
		} else {
			v.step("route %s (%s) -> %s", r.Prefix, r.Origin, r.NextHop)
		}
		v.Allow = true
		v.step("out to the external network")
		return v
	}
	return v.drop(ReasonNoRoute, "tenant %s routes no destination %s to gateway %s", vn.Tenant, pkt.Dst, gw.Name)
}

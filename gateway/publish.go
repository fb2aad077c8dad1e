package gateway

import (
	"fmt"
	"net/netip"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
)

// Target is a tenant's customer address that a published address on the
// external network stands for (Config.Publish).
type Target struct {
	Tenant string
	CA     netip.Addr
}

func (t Target) String() string { return t.Tenant + "/" + t.CA.String() }

// CheckTarget says whether gateway gw of st may publish t: the gateway
// serves t's tenant, whose routes lead t's address to a VM.
func CheckTarget(st *policy.State, gw policy.Gateway, t Target) error {
	_, _, err := resolve(st, gw, t)
	return err
}

// resolve finds where a published target lives now: the tenant's VNET that
// routes the address and the mapping of the VM that has it. The gateway
// must serve the tenant.
func resolve(st *policy.State, gw policy.Gateway, t Target) (policy.Mapping, policy.VNET, error) {
	if gw.Tenant != "" && gw.Tenant != t.Tenant {
		return policy.Mapping{}, policy.VNET{}, fmt.Errorf("gateway %s is dedicated to tenant %s, not %s", gw.Name, gw.Tenant, t.Tenant)
	}
	r, ok := st.LookupRoute(t.Tenant, t.CA)
	if !ok || r.NextHop.Kind != policy.NextHopVNET {
		return policy.Mapping{}, policy.VNET{}, fmt.Errorf("tenant %s routes %s to no VNET", t.Tenant, t.CA)
	}
	vn, _ := st.VNET(t.Tenant, r.NextHop.VNET)
	m, ok := st.Lookup(vn.VNI, t.CA)
	if !ok {
		return policy.Mapping{}, vn, fmt.Errorf("vnet %s of tenant %s has no VM with address %s", vn.Name, t.Tenant, t.CA)
	}
	return m, vn, nil
}

// openInbound opens a connection from the external network to a published
// address: the frame's remote endpoint, toward the target VM, whose answers
// leave from the published address with the ports untouched.
func (g *Gateway) openInbound(k *hal.FlowKey, ok outsideKey, t Target, icmp bool, now int64) (*conn, bool) {
	m, vn, err := resolve(g.st, g.gw, t)
	if err != nil {
		g.stats.Drops["published-unreachable"]++
		return nil, false
	}
	ik := insideKey{vni: vn.VNI, encapKind: vn.Encap, outerSrcPA: m.PA, src: t.CA, sport: ok.extPort,
		dst: ok.remote, dport: ok.remotePort, proto: ok.proto}
	if _, taken := g.conns[ik]; taken {
		g.stats.Drops["inbound-conflict"]++
		return nil, false
	}
	c := &conn{inside: ik, outside: ok, tenant: t.Tenant, vnet: vn.Name, vm: m.VM, host: m.Host, hostPA: m.PA,
		gwPA: g.gw.PA, vmMAC: hal.MAC(m.MAC), nhMAC: k.EthSrc, icmp: icmp, inbound: true, created: now, seen: now}
	g.conns[ik] = c
	g.byOut[ok] = c
	g.stats.NewConns++
	g.stats.Inbound++
	g.build(c)
	g.place(c)
	return c, true
}

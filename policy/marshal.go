package policy

import (
	"encoding/hex"
	"strconv"

	"gopkg.in/yaml.v3"
)

// The doc* types mirror the document format for writing it out; reading
// goes through yaml.Node (yaml.go) so that every field keeps its line.
type (
	docRoot struct {
		RouterMAC   string          `yaml:"router_mac,omitempty"`
		Hosts       []docHost       `yaml:"hosts,omitempty"`
		Gateways    []docGateway    `yaml:"gateways,omitempty"`
		Tenants     []docTenant     `yaml:"tenants,omitempty"`
		Shadows     []docShadow     `yaml:"shadows,omitempty"`
		Activations []docActivation `yaml:"activations,omitempty"`
		Relocated   []docRelocated  `yaml:"relocated,omitempty"`
	}
	docHost struct {
		Name string `yaml:"name"`
		PA   string `yaml:"pa"`
	}
	docGateway struct {
		Name   string `yaml:"name"`
		PA     string `yaml:"pa"`
		Tenant string `yaml:"tenant,omitempty"`
	}
	docTenant struct {
		Name         string           `yaml:"name"`
		VNETs        []docVNET        `yaml:"vnets,omitempty"`
		Routes       []docRoute       `yaml:"routes,omitempty"`
		ACLs         []docACL         `yaml:"acls,omitempty"`
		GatewayRules []docGatewayRule `yaml:"gateway_rules,omitempty"`
	}
	docVNET struct {
		Name    string   `yaml:"name"`
		VNI     uint32   `yaml:"vni"`
		Encap   string   `yaml:"encap,omitempty"`
		Subnets []string `yaml:"subnets,flow"`
		VMs     []docVM  `yaml:"vms,omitempty"`
	}
	docVM struct {
		Name       string       `yaml:"name"`
		MAC        string       `yaml:"mac"`
		CA         []string     `yaml:"ca,flow"`
		Host       string       `yaml:"host"`
		Generation uint64       `yaml:"generation,omitempty"`
		SealKeys   []docSealKey `yaml:"seal_keys,omitempty"`
	}
	docSealKey struct {
		ID     uint8  `yaml:"id"`
		Public string `yaml:"public"`
	}
	docRoute struct {
		Prefix  string `yaml:"prefix"`
		NextHop any    `yaml:"next_hop"`
	}
	docACL struct {
		ID        string   `yaml:"id"`
		Priority  uint32   `yaml:"priority"`
		Direction string   `yaml:"direction"`
		VNET      string   `yaml:"vnet,omitempty"`
		Src       []string `yaml:"src,omitempty,flow"`
		Dst       []string `yaml:"dst,omitempty,flow"`
		Protocol  string   `yaml:"protocol,omitempty"`
		SrcPorts  []string `yaml:"src_ports,omitempty,flow"`
		DstPorts  []string `yaml:"dst_ports,omitempty,flow"`
		Action    string   `yaml:"action"`
		Stateful  bool     `yaml:"stateful,omitempty"`
	}
	docGatewayRule struct {
		Name    string `yaml:"name"`
		Prefix  string `yaml:"prefix"`
		Gateway string `yaml:"gateway"`
		NAT     string `yaml:"nat,omitempty"`
	}
	docShadow struct {
		VM         string `yaml:"vm"`
		Host       string `yaml:"host"`
		Generation uint64 `yaml:"generation"`
	}
	docActivation struct {
		VM         string `yaml:"vm"`
		Generation uint64 `yaml:"generation"`
	}
)

func strs[T interface{ String() string }](list []T) []string {
	if len(list) == 0 {
		return nil
	}
	out := make([]string, len(list))
	for i, v := range list {
		out[i] = v.String()
	}
	return out
}

// Marshal writes s as a policy document that Parse reads back into an
// equal state (Diff reports nothing). Activations are written only where
// they differ from the VM's own generation.
func Marshal(s *State) ([]byte, error) {
	var d docRoot
	if s.routerMAC != DefaultRouterMAC {
		d.RouterMAC = s.routerMAC.String()
	}
	for _, h := range s.hosts {
		d.Hosts = append(d.Hosts, docHost{h.Name, h.PA.String()})
	}
	for _, g := range s.gateways {
		d.Gateways = append(d.Gateways, docGateway{g.Name, g.PA.String(), g.Tenant})
	}
	tenantAt := map[string]int{}
	for i, t := range s.tenants {
		tenantAt[t.Name] = i
		dt := docTenant{Name: t.Name}
		for _, r := range s.routes[i] {
			if r.Origin != RouteExplicit {
				continue
			}
			var nh any
			switch r.NextHop.Kind {
			case NextHopDrop, NextHopHost:
				nh = r.NextHop.Kind.String()
			case NextHopVNET:
				nh = map[string]string{"vnet": r.NextHop.VNET}
			case NextHopAddress:
				nh = map[string]string{"via": r.NextHop.Via.String()}
			case NextHopGateway:
				nh = map[string]string{"gateway": r.NextHop.Gateway}
			}
			dt.Routes = append(dt.Routes, docRoute{r.Prefix.String(), nh})
		}
		for _, a := range s.acls[i] {
			da := docACL{ID: a.ID, Priority: a.Priority, Direction: a.Direction.String(), VNET: a.VNET,
				Src: strs(a.Src), Dst: strs(a.Dst), SrcPorts: strs(a.SrcPorts), DstPorts: strs(a.DstPorts),
				Action: a.Action.String(), Stateful: a.Stateful}
			if a.Protocol != ProtoAny {
				da.Protocol = strconv.Itoa(int(a.Protocol))
			}
			dt.ACLs = append(dt.ACLs, da)
		}
		for _, g := range s.gwRules[i] {
			dg := docGatewayRule{Name: g.Name, Prefix: g.Prefix.String(), Gateway: g.Gateway}
			if g.NAT.IsValid() {
				dg.NAT = g.NAT.String()
			}
			dt.GatewayRules = append(dt.GatewayRules, dg)
		}
		d.Tenants = append(d.Tenants, dt)
	}
	vnetAt := map[VNETKey]int{}
	for _, v := range s.vnets {
		t := &d.Tenants[tenantAt[v.Tenant]]
		vnetAt[VNETKey{v.Tenant, v.Name}] = len(t.VNETs)
		dv := docVNET{Name: v.Name, VNI: v.VNI, Subnets: strs(v.Subnets)}
		if v.Encap != EncapVXLAN {
			dv.Encap = v.Encap.String() // VXLAN is the default, left unsaid
		}
		t.VNETs = append(t.VNETs, dv)
	}
	for _, v := range s.ownVMList() {
		dv := &d.Tenants[tenantAt[v.Tenant]].VNETs[vnetAt[VNETKey{v.Tenant, v.VNET}]]
		gen := v.Generation
		if gen == 1 {
			gen = 0
		}
		dvm := docVM{Name: v.Name, MAC: v.MAC.String(), CA: strs(v.CAs), Host: v.Host, Generation: gen}
		for _, k := range v.SealKeys {
			dvm.SealKeys = append(dvm.SealKeys, docSealKey{ID: k.ID, Public: hex.EncodeToString(k.Public[:])})
		}
		dv.VMs = append(dv.VMs, dvm)
	}
	for _, sh := range s.shadows {
		d.Shadows = append(d.Shadows, docShadow{sh.VM, sh.Host, sh.Generation})
	}
	for _, a := range s.Activations() {
		if v, _ := s.VM(a.VM); a.Generation != v.Generation {
			d.Activations = append(d.Activations, docActivation(a))
		}
	}
	d.Relocated = marshalRelocated(s)
	return yaml.Marshal(&d)
}

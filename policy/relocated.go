package policy

// Relocated subnets: a tenant's subnet moved to a remote site behind NAT
// (package tether). The policy names the subnet, its anchor and its tether,
// and compiles the subnet's pool into mappings to the anchor's PA, so that
// every host following the policy (or the store) sends the relocated
// addresses' traffic to the anchor and accepts their traffic from it.

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/nicpath/nicpath/securechan"
)

// Relocated is a relocated subnet: Prefix, a subnet of the tenant's VNET,
// lives at a remote site whose tether (a router behind NAT) dials the
// anchor (a host of the policy). Its nodes are leased the addresses
// PoolFirst…PoolLast and route through Gateway, which the tether answers
// for. Each pool address is a mapping to the anchor's PA, with the VM name
// RelocatedVMName and the MAC RelocatedMAC.
type Relocated struct {
	Name   string
	Tenant string
	VNET   string
	Prefix netip.Prefix
	// Gateway defaults to the prefix's first host address; the pool
	// defaults to the host addresses after it.
	Gateway             netip.Addr
	PoolFirst, PoolLast netip.Addr
	Anchor              string // a host of the policy
	Tether              Tether
}

// Tether is the remote end of a relocated subnet: its name, the public key
// the anchor pins (given, or the path of a file holding it, read by the
// programs that use it) and its tunnel's timers (zero: the tether's
// defaults).
type Tether struct {
	Name      string
	Key       securechan.PublicKey
	KeyFile   string
	Keepalive time.Duration
	Probe     time.Duration
}

// MaxRelocatedPool bounds a relocated pool: each address is a mapping.
const MaxRelocatedPool = 4096

// RelocatedVMName is the VM name of a relocated address's mapping.
func RelocatedVMName(subnet string, a netip.Addr) string {
	return subnet + "-" + strings.ReplaceAll(a.String(), ".", "-")
}

// RelocatedMAC is the MAC of a relocated address's mapping: locally
// administered, 02:74 ("t") and the IPv4 address.
func RelocatedMAC(a netip.Addr) MAC {
	b := a.As4()
	return MAC{0x02, 0x74, b[0], b[1], b[2], b[3]}
}

// PoolVMs returns the VMs that stand for r's pool in the State: one per
// address, on the anchor.
func (r *Relocated) PoolVMs() []VM {
	var out []VM
	if !r.PoolFirst.IsValid() || !r.PoolLast.IsValid() || r.PoolLast.Less(r.PoolFirst) {
		return nil
	}
	for a := r.PoolFirst; a.IsValid() && !r.PoolLast.Less(a) && len(out) < MaxRelocatedPool; a = a.Next() {
		out = append(out, VM{Name: RelocatedVMName(r.Name, a), Tenant: r.Tenant, VNET: r.VNET,
			MAC: RelocatedMAC(a), CAs: []netip.Addr{a}, Host: r.Anchor, Generation: 1})
	}
	return out
}

// AddRelocated adds a relocated subnet.
func (b *Builder) AddRelocated(r Relocated) { add(&b.relocated, "relocated", r) }

// Relocated returns the relocated subnets in document order.
func (s *State) Relocated() []Relocated { return s.relocated }

// RelocatedSubnet returns the relocated subnet named name.
func (s *State) RelocatedSubnet(name string) (Relocated, bool) {
	for _, r := range s.relocated {
		if r.Name == name {
			return r, true
		}
	}
	return Relocated{}, false
}

// IsRelocatedVM reports whether the VM named name stands for a relocated
// address (it is compiled from a relocated subnet, not written as a VM).
func (s *State) IsRelocatedVM(name string) bool {
	i, ok := s.vmIdx.get(name, s.vms)
	return ok && i >= s.ownVMs
}

// ownVMList is the VMs the document or the Builder gave, without those
// compiled from relocated subnets.
func (s *State) ownVMList() []VM { return s.vms[:s.ownVMs] }

// relocatedFields are the fields of a relocated entry, and of its tether.
var (
	relocatedFields = []string{"name", "tenant", "vnet", "prefix", "gateway", "pool", "anchor", "tether"}
	tetherFields    = []string{"name", "key", "key_file", "keepalive", "probe"}
)

func (d *decoder) relocated(n *yaml.Node, path string) {
	o := d.obj(n, path, relocatedFields...)
	r := Relocated{Name: o.str("name", true), Tenant: o.str("tenant", true), VNET: o.str("vnet", true),
		Prefix: o.prefix("prefix", true), Gateway: o.addr("gateway", false), Anchor: o.str("anchor", true)}
	if s, sn := o.scalar("pool", false); sn != nil {
		lo, hi, ok := strings.Cut(s, "-")
		a, err1 := netip.ParseAddr(strings.TrimSpace(lo))
		z, err2 := netip.ParseAddr(strings.TrimSpace(hi))
		if !ok || err1 != nil || err2 != nil {
			d.errAt(sn, o.fieldPath("pool"), "invalid range %q (want FIRST-LAST)", s)
		} else {
			r.PoolFirst, r.PoolLast = a, z
		}
	}
	if tn := o.value("tether"); tn == nil {
		d.errAt(o.n, o.fieldPath("tether"), "missing field %q", "tether")
	} else {
		t := d.obj(tn, o.fieldPath("tether"), tetherFields...)
		for _, f := range t.o.fields {
			o.o.set("tether."+f.name, f.idx, f.at)
		}
		r.Tether.Name = t.str("name", true)
		r.Tether.KeyFile = t.str("key_file", false)
		if s, kn := t.scalar("key", false); kn != nil {
			k, err := securechan.ParsePublicKey(s)
			if err != nil || k == (securechan.PublicKey{}) {
				d.errAt(kn, t.fieldPath("key"), "invalid public key %q: want 64 hex digits", s)
			}
			r.Tether.Key = k
		} else if t.value("key_file") == nil && t.n.Kind == yaml.MappingNode {
			d.errAt(t.n, t.fieldPath("key"), "missing field \"key\" (or \"key_file\")")
		}
		r.Tether.Keepalive = d.duration(t, "keepalive", time.Second)
		r.Tether.Probe = d.duration(t, "probe", 100*time.Millisecond)
	}
	d.b.relocated = append(d.b.relocated, item[Relocated]{r, o.o})
}

func (d *decoder) duration(o *object, key string, least time.Duration) time.Duration {
	s, n := o.scalar(key, false)
	if n == nil {
		return 0
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < least {
		d.errAt(n, o.fieldPath(key), "%q: want a duration of at least %v", s, least)
		return 0
	}
	return v
}

// buildRelocated checks the relocated subnets (after the VNETs, before the
// VMs) and returns the VMs standing for their pools, with the origin of
// each (its entry).
func (b *Builder) buildRelocated(c *checker, s *State) ([]VM, []*origin) {
	var vms []VM
	var origins []*origin
	names := map[string]bool{}
	tethers := map[string]securechan.PublicKey{}
	for _, it := range b.relocated {
		r, o := it.v, it.o
		ok := c.name(o, "name", r.Name, "relocated subnet name")
		if ok && names[r.Name] {
			c.errf(o, "name", "duplicate relocated subnet %q", r.Name)
			ok = false
		}
		names[r.Name] = true
		vi, known := s.vnetIdx[VNETKey{r.Tenant, r.VNET}]
		switch {
		case !c.name(o, "tenant", r.Tenant, "tenant"):
			ok = false
		case !tenantKnown(s, r.Tenant):
			c.errf(o, "tenant", "unknown tenant %q", r.Tenant)
			ok = false
		case !c.name(o, "vnet", r.VNET, "VNET"):
			ok = false
		case !known:
			c.errf(o, "vnet", "unknown VNET %q in tenant %s", r.VNET, r.Tenant)
			ok = false
		}
		if !c.prefix(o, "prefix", r.Prefix, "relocated prefix") {
			ok = false
		} else if !r.Prefix.Addr().Is4() {
			c.errf(o, "prefix", "%s: only IPv4 subnets are relocated (the nodes' leases are DHCPv4)", r.Prefix)
			ok = false
		} else if r.Prefix.Bits() > 30 {
			c.errf(o, "prefix", "%s leaves no address for nodes", r.Prefix)
			ok = false
		} else if known && !insideAny(s.vnets[vi].Subnets, r.Prefix) {
			c.errf(o, "prefix", "%s is not inside a subnet of VNET %s (%v)", r.Prefix, r.VNET, s.vnets[vi].Subnets)
			ok = false
		}
		if r.Prefix.IsValid() && ok {
			if !r.Gateway.IsValid() {
				r.Gateway = r.Prefix.Addr().Next()
			} else if !hostOf(r.Prefix, r.Gateway) {
				c.errf(o, "gateway", "%s is not a host address of %s", r.Gateway, r.Prefix)
				ok = false
			}
			if !r.PoolFirst.IsValid() && ok {
				// The host addresses after the gateway.
				r.PoolFirst, r.PoolLast = r.Gateway.Next(), lastOf(r.Prefix).Prev()
			}
			switch {
			case !ok:
			case !hostOf(r.Prefix, r.PoolFirst) || !hostOf(r.Prefix, r.PoolLast):
				c.errf(o, "pool", "%s-%s is not inside the host addresses of %s", r.PoolFirst, r.PoolLast, r.Prefix)
				ok = false
			case r.PoolLast.Less(r.PoolFirst):
				c.errf(o, "pool", "%s-%s: the last address comes before the first", r.PoolFirst, r.PoolLast)
				ok = false
			case !r.Gateway.Less(r.PoolFirst) && !r.PoolLast.Less(r.Gateway):
				c.errf(o, "pool", "%s-%s holds the gateway %s", r.PoolFirst, r.PoolLast, r.Gateway)
				ok = false
			case poolLen(r.PoolFirst, r.PoolLast) > MaxRelocatedPool:
				c.errf(o, "pool", "%d addresses: at most %d (each is a mapping)", poolLen(r.PoolFirst, r.PoolLast), MaxRelocatedPool)
				ok = false
			}
		}
		if c.name(o, "anchor", r.Anchor, "anchor host") {
			if _, known := s.hostIdx[r.Anchor]; !known {
				if _, gw := s.gwIdx[r.Anchor]; gw {
					c.errf(o, "anchor", "%q is a virtualization gateway, not a host of the policy", r.Anchor)
				} else {
					c.errf(o, "anchor", "unknown host %q", r.Anchor)
				}
				ok = false
			}
		} else {
			ok = false
		}
		t := r.Tether
		if c.name(o, "tether.name", t.Name, "tether name") {
			if k, dup := tethers[t.Name]; dup && k != t.Key {
				c.errf(o, "tether.key", "tether %q is given another key by another relocated subnet", t.Name)
			}
			tethers[t.Name] = t.Key
		}
		switch {
		case t.Key == (securechan.PublicKey{}) && t.KeyFile == "":
			c.errf(o, "tether.key", "missing the tether's public key (key or key_file)")
		case t.Key != (securechan.PublicKey{}) && t.KeyFile != "":
			c.errf(o, "tether.key_file", "give the tether's key or key_file, not both")
		}
		if t.Keepalive > 0 && t.Probe > t.Keepalive {
			c.errf(o, "tether.probe", "probe interval %v is longer than the keepalive %v", t.Probe, t.Keepalive)
		}
		for _, p := range s.relocated {
			if ok && p.Tenant == r.Tenant && p.Prefix.Overlaps(r.Prefix) {
				c.errf(o, "prefix", "%s overlaps relocated subnet %s (%s)", r.Prefix, p.Name, p.Prefix)
				ok = false
			}
		}
		if !ok {
			continue
		}
		s.relocated = append(s.relocated, r)
		for _, vm := range r.PoolVMs() {
			vms = append(vms, vm)
			origins = append(origins, o)
		}
	}
	return vms, origins
}

// checkRelocatedVMs refuses VMs with an address inside a relocated subnet
// (its addresses live at the remote site).
func (b *Builder) checkRelocatedVMs(c *checker, s *State) {
	if len(s.relocated) == 0 {
		return
	}
	byVNET := map[VNETKey][]int{}
	for i, r := range s.relocated {
		k := VNETKey{r.Tenant, r.VNET}
		byVNET[k] = append(byVNET[k], i)
	}
	for i := range s.ownVMs {
		v := &s.vms[i]
		for _, ri := range byVNET[VNETKey{v.Tenant, v.VNET}] {
			r := &s.relocated[ri]
			for j, ca := range v.CAs {
				if r.Prefix.Contains(ca) {
					c.errf(b.vmOrigin(i), caField(j), "customer address %s is inside relocated subnet %s (%s): its addresses live at the remote site", ca, r.Name, r.Prefix)
				}
			}
		}
	}
}

// poolField says which field of a relocated entry a pool VM's error is
// about.
func poolField(vmField string) string {
	switch {
	case vmField == "host":
		return "anchor"
	case vmField == "name":
		return "name"
	case strings.HasPrefix(vmField, "ca"):
		return "pool"
	}
	return ""
}

func tenantKnown(s *State, name string) bool {
	_, ok := s.tenantIdx[name]
	return ok
}

func insideAny(list []netip.Prefix, p netip.Prefix) bool {
	for _, s := range list {
		if s.Bits() <= p.Bits() && s.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

func lastOf(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | (uint32(1)<<(32-p.Bits()) - 1)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// hostOf reports whether a is an IPv4 address of p other than its network
// and broadcast addresses.
func hostOf(p netip.Prefix, a netip.Addr) bool {
	return a.Is4() && p.Contains(a) && a != p.Addr() && a != lastOf(p)
}

func poolLen(a, z netip.Addr) int {
	x, y := a.As4(), z.As4()
	u := uint32(x[0])<<24 | uint32(x[1])<<16 | uint32(x[2])<<8 | uint32(x[3])
	v := uint32(y[0])<<24 | uint32(y[1])<<16 | uint32(y[2])<<8 | uint32(y[3])
	return int(v-u) + 1
}

type (
	docRelocated struct {
		Name    string    `yaml:"name"`
		Tenant  string    `yaml:"tenant"`
		VNET    string    `yaml:"vnet"`
		Prefix  string    `yaml:"prefix"`
		Gateway string    `yaml:"gateway"`
		Pool    string    `yaml:"pool"`
		Anchor  string    `yaml:"anchor"`
		Tether  docTether `yaml:"tether"`
	}
	docTether struct {
		Name      string `yaml:"name"`
		Key       string `yaml:"key,omitempty"`
		KeyFile   string `yaml:"key_file,omitempty"`
		Keepalive string `yaml:"keepalive,omitempty"`
		Probe     string `yaml:"probe,omitempty"`
	}
)

func marshalRelocated(s *State) []docRelocated {
	var out []docRelocated
	for _, r := range s.relocated {
		d := docRelocated{Name: r.Name, Tenant: r.Tenant, VNET: r.VNET, Prefix: r.Prefix.String(), Gateway: r.Gateway.String(),
			Pool: r.PoolFirst.String() + "-" + r.PoolLast.String(), Anchor: r.Anchor,
			Tether: docTether{Name: r.Tether.Name, KeyFile: r.Tether.KeyFile}}
		if r.Tether.Key != (securechan.PublicKey{}) {
			d.Tether.Key = r.Tether.Key.String()
		}
		if r.Tether.Keepalive > 0 {
			d.Tether.Keepalive = r.Tether.Keepalive.String()
		}
		if r.Tether.Probe > 0 {
			d.Tether.Probe = r.Tether.Probe.String()
		}
		out = append(out, d)
	}
	return out
}

// String describes r in one line.
func (r Relocated) String() string {
	return fmt.Sprintf("%s: %s/%s %s pool %s-%s anchor %s tether %s", r.Name, r.Tenant, r.VNET, r.Prefix, r.PoolFirst, r.PoolLast, r.Anchor, r.Tether.Name)
}

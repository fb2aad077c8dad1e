package tether

import (
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/securechan"
)

// Relocated is one relocated subnet as a configuration file gives it: the
// tenant's VNET and prefix, the addresses its nodes are leased, the anchor
// (a data-center host of the policy and its public UDP endpoint) and the
// tether (its name, its ports toward the nodes, its tunnel's timers).
type Relocated struct {
	Name      string
	Tenant    string
	VNET      string
	Prefix    netip.Prefix
	Gateway   netip.Addr // the nodes' router: the tether answers for it
	PoolFirst netip.Addr // addresses leased to nodes: PoolFirst…PoolLast
	PoolLast  netip.Addr
	LeaseTime time.Duration

	AnchorHost     string
	AnchorEndpoint netip.AddrPort
	AnchorKey      securechan.PublicKey

	TetherName string
	TetherKey  securechan.PublicKey
	Ports      []string
	Keepalive  time.Duration
	Probe      time.Duration
	PathMTU    int

	line  int            // where the entry starts
	lines map[string]int // field → line
}

// Defaults of a Relocated entry.
const (
	DefaultLeaseTime = time.Hour
	// MaxPool bounds a pool: each address is a mapping in the policy.
	MaxPool = 4096
)

// Config is a relocated-subnets configuration file.
type Config struct {
	File    string
	Subnets []Relocated
	byName  map[string]int
}

// ConfigError is one problem of a configuration, with its file, line and
// field (a path such as relocated_subnets[0].tether.key).
type ConfigError struct {
	File  string
	Line  int
	Field string
	Msg   string
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ConfigErrors is every problem of one file.
type ConfigErrors []*ConfigError

func (l ConfigErrors) Error() string {
	s := make([]string, len(l))
	for i, e := range l {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Unwrap lets errors.As find each *ConfigError.
func (l ConfigErrors) Unwrap() []error {
	out := make([]error, len(l))
	for i, e := range l {
		out[i] = e
	}
	return out
}

// LoadConfig reads and checks a file. With any problem it returns no
// Config, only ConfigErrors.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseConfig(path, data)
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

type cfgDec struct {
	file string
	errs ConfigErrors
}

func (d *cfgDec) errf(line int, field, format string, args ...any) {
	d.errs = append(d.errs, &ConfigError{File: d.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// fields reads a mapping node, refusing unknown and repeated keys.
func (d *cfgDec) fields(n *yaml.Node, path string, allowed ...string) map[string]*yaml.Node {
	out := map[string]*yaml.Node{"": n} // "": the mapping itself, for the line of a missing field
	if n.Kind != yaml.MappingNode {
		d.errf(n.Line, path, "want a mapping")
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		f := k.Value
		if path != "" {
			f = path + "." + k.Value
		}
		ok := false
		for _, a := range allowed {
			ok = ok || a == k.Value
		}
		switch {
		case !ok:
			d.errf(k.Line, f, "unknown field (want one of %s)", strings.Join(allowed, ", "))
		case out[k.Value] != nil:
			d.errf(k.Line, f, "given twice")
		default:
			out[k.Value] = v
		}
	}
	return out
}

func (d *cfgDec) str(m map[string]*yaml.Node, key, path string, required bool) (string, int) {
	v := m[key]
	if v == nil {
		if required {
			d.errf(m[""].Line, path+"."+key, "required")
		}
		return "", 0
	}
	if v.Kind != yaml.ScalarNode || v.Value == "" {
		d.errf(v.Line, path+"."+key, "want a non-empty scalar")
		return "", v.Line
	}
	return v.Value, v.Line
}

// ParseConfig parses a document; path names it in errors.
func ParseConfig(path string, data []byte) (*Config, error) {
	d := &cfgDec{file: path}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		e := &ConfigError{File: path, Msg: msg}
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			e.Line, _ = strconv.Atoi(m[1])
		}
		return nil, ConfigErrors{e}
	}
	if len(root.Content) == 0 {
		return nil, ConfigErrors{{File: path, Line: 1, Msg: "empty: want relocated_subnets"}}
	}
	top := d.fields(root.Content[0], "", "relocated_subnets")
	c := &Config{File: path, byName: map[string]int{}}
	list := top["relocated_subnets"]
	switch {
	case list == nil:
		d.errf(root.Content[0].Line, "relocated_subnets", "required")
	case list.Kind != yaml.SequenceNode:
		d.errf(list.Line, "relocated_subnets", "want a list")
	default:
		for i, n := range list.Content {
			r := d.relocated(n, fmt.Sprintf("relocated_subnets[%d]", i))
			if r.Name != "" {
				if j, dup := c.byName[r.Name]; dup {
					d.errf(r.lines["name"], fmt.Sprintf("relocated_subnets[%d].name", i), "%q is also relocated_subnets[%d]", r.Name, j)
				}
				c.byName[r.Name] = i
			}
			c.Subnets = append(c.Subnets, r)
		}
	}
	d.crossCheck(c)
	if len(d.errs) > 0 {
		return nil, d.errs
	}
	return c, nil
}

func (d *cfgDec) relocated(n *yaml.Node, path string) Relocated {
	r := Relocated{line: n.Line, lines: map[string]int{}, LeaseTime: DefaultLeaseTime, Keepalive: DefaultKeepalive, Probe: DefaultProbe, PathMTU: DefaultPathMTU}
	m := d.fields(n, path, "name", "tenant", "vnet", "prefix", "gateway", "pool", "lease_time", "anchor", "tether")
	r.Name, r.lines["name"] = d.str(m, "name", path, true)
	r.Tenant, r.lines["tenant"] = d.str(m, "tenant", path, true)
	r.VNET, r.lines["vnet"] = d.str(m, "vnet", path, true)
	if s, l := d.str(m, "prefix", path, true); s != "" {
		r.lines["prefix"] = l
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			d.errf(l, path+".prefix", "invalid prefix %q", s)
		case p != p.Masked():
			d.errf(l, path+".prefix", "%s is not canonical (want %s)", s, p.Masked())
		case !p.Addr().Is4():
			d.errf(l, path+".prefix", "%s: only IPv4 subnets are relocated (DHCPv4 leases)", s)
		case p.Bits() > 30:
			d.errf(l, path+".prefix", "%s leaves no address for nodes", s)
		default:
			r.Prefix = p
		}
	}
	if r.Prefix.IsValid() {
		r.Gateway = r.Prefix.Addr().Next()
		last := lastAddr(r.Prefix)
		r.PoolFirst, r.PoolLast = r.Gateway.Next(), last.Prev()
	}
	if s, l := d.str(m, "gateway", path, false); s != "" {
		r.lines["gateway"] = l
		a, err := netip.ParseAddr(s)
		switch {
		case err != nil:
			d.errf(l, path+".gateway", "invalid address %q", s)
		case r.Prefix.IsValid() && !hostOf(r.Prefix, a):
			d.errf(l, path+".gateway", "%s is not a host address of %s", a, r.Prefix)
		default:
			r.Gateway = a
		}
	}
	if s, l := d.str(m, "pool", path, false); s != "" {
		r.lines["pool"] = l
		lo, hi, ok := strings.Cut(s, "-")
		a, err1 := netip.ParseAddr(strings.TrimSpace(lo))
		b, err2 := netip.ParseAddr(strings.TrimSpace(hi))
		switch {
		case !ok || err1 != nil || err2 != nil:
			d.errf(l, path+".pool", "invalid range %q (want FIRST-LAST)", s)
		case r.Prefix.IsValid() && (!hostOf(r.Prefix, a) || !hostOf(r.Prefix, b)):
			d.errf(l, path+".pool", "%s is not inside the host addresses of %s", s, r.Prefix)
		case b.Less(a):
			d.errf(l, path+".pool", "%s: the last address comes before the first", s)
		case r.Gateway.IsValid() && !r.Gateway.Less(a) && !b.Less(r.Gateway):
			d.errf(l, path+".pool", "%s holds the gateway %s", s, r.Gateway)
		default:
			r.PoolFirst, r.PoolLast = a, b
		}
	}
	if r.PoolFirst.IsValid() && poolSize(r.PoolFirst, r.PoolLast) > MaxPool {
		d.errf(r.lines["pool"], path+".pool", "%d addresses: at most %d (each is a mapping in the policy)", poolSize(r.PoolFirst, r.PoolLast), MaxPool)
	}
	if s, l := d.str(m, "lease_time", path, false); s != "" {
		r.LeaseTime = d.duration(s, l, path+".lease_time", time.Minute)
	}
	if an := m["anchor"]; an == nil {
		d.errf(n.Line, path+".anchor", "required")
	} else {
		ap := path + ".anchor"
		am := d.fields(an, ap, "host", "endpoint", "key")
		r.AnchorHost, r.lines["anchor.host"] = d.str(am, "host", ap, true)
		if s, l := d.str(am, "endpoint", ap, true); s != "" {
			e, err := netip.ParseAddrPort(s)
			if err != nil || e.Port() == 0 {
				d.errf(l, ap+".endpoint", "invalid endpoint %q (want ADDRESS:PORT)", s)
			}
			r.AnchorEndpoint = e
		}
		r.AnchorKey = d.key(am, ap)
	}
	if tn := m["tether"]; tn == nil {
		d.errf(n.Line, path+".tether", "required")
	} else {
		tp := path + ".tether"
		tm := d.fields(tn, tp, "name", "key", "ports", "keepalive", "probe", "path_mtu")
		r.TetherName, r.lines["tether.name"] = d.str(tm, "name", tp, true)
		r.TetherKey = d.key(tm, tp)
		if pn := tm["ports"]; pn == nil {
			d.errf(tn.Line, tp+".ports", "required: the interfaces toward the nodes")
		} else if pn.Kind != yaml.SequenceNode || len(pn.Content) == 0 {
			d.errf(pn.Line, tp+".ports", "want a non-empty list of interface names")
		} else {
			seen := map[string]bool{}
			for i, p := range pn.Content {
				f := fmt.Sprintf("%s.ports[%d]", tp, i)
				switch {
				case p.Kind != yaml.ScalarNode || p.Value == "" || len(p.Value) > 15:
					d.errf(p.Line, f, "want an interface name (1 to 15 characters)")
				case seen[p.Value]:
					d.errf(p.Line, f, "%q given twice", p.Value)
				default:
					seen[p.Value] = true
					r.Ports = append(r.Ports, p.Value)
				}
			}
		}
		if s, l := d.str(tm, "keepalive", tp, false); s != "" {
			r.Keepalive = d.duration(s, l, tp+".keepalive", time.Second)
		}
		if s, l := d.str(tm, "probe", tp, false); s != "" {
			r.Probe = d.duration(s, l, tp+".probe", 100*time.Millisecond)
		}
		if s, l := d.str(tm, "path_mtu", tp, false); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil || v < 576 || v > 65535 {
				d.errf(l, tp+".path_mtu", "%q: want a number from 576 to 65535", s)
			} else {
				r.PathMTU = v
			}
		}
		if r.Probe > 0 && r.Keepalive > 0 && r.Probe > r.Keepalive {
			d.errf(r.lines["tether.name"], tp+".probe", "probe interval %v is longer than the keepalive %v", r.Probe, r.Keepalive)
		}
	}
	return r
}

func (d *cfgDec) duration(s string, line int, field string, least time.Duration) time.Duration {
	v, err := time.ParseDuration(s)
	if err != nil || v < least {
		d.errf(line, field, "%q: want a duration of at least %v", s, least)
		return 0
	}
	return v
}

func (d *cfgDec) key(m map[string]*yaml.Node, path string) securechan.PublicKey {
	s, l := d.str(m, "key", path, true)
	if s == "" {
		return securechan.PublicKey{}
	}
	k, err := securechan.ParsePublicKey(s)
	if err != nil {
		d.errf(l, path+".key", "%v", err)
	}
	return k
}

// crossCheck looks at the entries together: the same tether twice, two
// subnets overlapping, one port given to two subnets.
func (d *cfgDec) crossCheck(c *Config) {
	tethers := map[string]int{}
	ports := map[string]string{}
	for i, r := range c.Subnets {
		path := fmt.Sprintf("relocated_subnets[%d]", i)
		if r.TetherName != "" {
			if j, dup := tethers[r.TetherName]; dup && c.Subnets[j].TetherKey != r.TetherKey {
				d.errf(r.lines["tether.name"], path+".tether.key", "tether %q has another key in relocated_subnets[%d]", r.TetherName, j)
			}
			tethers[r.TetherName] = i
		}
		for j := range i {
			o := c.Subnets[j]
			if r.Prefix.IsValid() && o.Prefix.IsValid() && r.Tenant == o.Tenant && r.Prefix.Overlaps(o.Prefix) {
				d.errf(r.lines["prefix"], path+".prefix", "%s overlaps %s of relocated_subnets[%d]", r.Prefix, o.Prefix, j)
			}
		}
		for _, p := range r.Ports {
			if other, dup := ports[r.TetherName+"/"+p]; dup && other != r.Name {
				d.errf(r.line, path+".tether.ports", "port %s of tether %s is also subnet %s's", p, r.TetherName, other)
			}
			ports[r.TetherName+"/"+p] = r.Name
		}
	}
}

// CheckPolicy checks the configuration against a policy: the tenant, VNET
// and anchor host exist, the prefix lies in one of the VNET's subnets, and
// every pool address is a mapping to the anchor (PoolVMs, so that every
// host sends the subnet's traffic to the anchor's PA) and no other VM's.
// Problems are ConfigErrors at the configuration's own lines.
func (c *Config) CheckPolicy(st *policy.State) error {
	d := &cfgDec{file: c.File}
	for i, r := range c.Subnets {
		path := fmt.Sprintf("relocated_subnets[%d]", i)
		vn, ok := st.VNET(r.Tenant, r.VNET)
		if !ok {
			d.errf(r.lines["vnet"], path+".vnet", "tenant %s has no VNET %s in the policy", r.Tenant, r.VNET)
			continue
		}
		if _, ok := st.Host(r.AnchorHost); !ok {
			d.errf(r.lines["anchor.host"], path+".anchor.host", "%q is not a host of the policy", r.AnchorHost)
			continue
		}
		inside := false
		for _, s := range vn.Subnets {
			inside = inside || (s.Bits() <= r.Prefix.Bits() && s.Contains(r.Prefix.Addr()))
		}
		if !inside {
			d.errf(r.lines["prefix"], path+".prefix", "%s is not inside a subnet of VNET %s (%v)", r.Prefix, r.VNET, vn.Subnets)
			continue
		}
		for a := r.PoolFirst; a.IsValid() && !r.PoolLast.Less(a); a = a.Next() {
			m, ok := st.Lookup(vn.VNI, a)
			if !ok || m.Host != r.AnchorHost {
				what := "no mapping"
				if ok {
					what = fmt.Sprintf("a mapping to VM %s on %s", m.VM, m.Host)
				}
				line := r.lines["pool"]
				if line == 0 {
					line = r.lines["prefix"]
				}
				d.errf(line, path+".pool", "address %s has %s in the policy, not one to the anchor %s (see tether.PoolVMs)", a, what, r.AnchorHost)
				break
			}
		}
		for _, vm := range st.VMs() {
			for _, ca := range vm.CAs {
				if vm.Tenant == r.Tenant && r.Prefix.Contains(ca) && vm.Host != r.AnchorHost {
					d.errf(r.lines["prefix"], path+".prefix", "VM %s (%s on %s) has an address in the relocated %s", vm.Name, ca, vm.Host, r.Prefix)
				}
			}
		}
	}
	if len(d.errs) > 0 {
		return d.errs
	}
	return nil
}

// Find returns the entry named name.
func (c *Config) Find(name string) (*Relocated, bool) {
	i, ok := c.byName[name]
	if !ok {
		return nil, false
	}
	return &c.Subnets[i], true
}

// PoolVMs returns the policy VMs that advertise r's pool: one per address,
// placed on the anchor host, with a MAC derived from the address. Adding
// them to the policy (policy.Builder.AddVM) is what makes every host send
// the relocated addresses' traffic to the anchor's PA, and accept their
// traffic from it.
func PoolVMs(r *Relocated) []policy.VM {
	var out []policy.VM
	for a := r.PoolFirst; a.IsValid() && !r.PoolLast.Less(a); a = a.Next() {
		out = append(out, policy.VM{Name: PoolVMName(r.Name, a), Tenant: r.Tenant, VNET: r.VNET,
			MAC: PoolMAC(a), CAs: []netip.Addr{a}, Host: r.AnchorHost})
	}
	return out
}

// PoolVMName is the policy name of a relocated address's VM.
func PoolVMName(subnet string, a netip.Addr) string {
	return subnet + "-" + strings.ReplaceAll(a.String(), ".", "-")
}

// PoolMAC is the MAC the policy gives a relocated address: locally
// administered, 02:74 ("t") and the IPv4 address.
func PoolMAC(a netip.Addr) policy.MAC {
	b := a.As4()
	return policy.MAC{0x02, 0x74, b[0], b[1], b[2], b[3]}
}

// Peer returns the tunnel peer the anchor accepts for r.
func (r *Relocated) Peer(vni uint32) Peer {
	return Peer{Name: r.TetherName, Key: r.TetherKey, VNI: vni}
}

// Subnet returns the anchor's view of r.
func (r *Relocated) Subnet() Subnet {
	return Subnet{Name: r.Name, Tenant: r.Tenant, VNET: r.VNET, Prefix: r.Prefix, Tether: r.TetherName}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// hostOf reports whether a is an address of p other than its network and
// broadcast addresses.
func hostOf(p netip.Prefix, a netip.Addr) bool {
	return a.Is4() && p.Contains(a) && a != p.Addr() && a != lastAddr(p)
}

func poolSize(a, b netip.Addr) int {
	x, y := a.As4(), b.As4()
	u := uint32(x[0])<<24 | uint32(x[1])<<16 | uint32(x[2])<<8 | uint32(x[3])
	v := uint32(y[0])<<24 | uint32(y[1])<<16 | uint32(y[2])<<8 | uint32(y[3])
	return int(v-u) + 1
}

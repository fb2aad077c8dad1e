package tether

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/nicpath/nicpath/internal/fileerr"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/securechan"
)

// Relocated is one relocated subnet: what the policy says of it (its
// relocated entry: tenant, VNET, prefix, gateway, pool, anchor host, tether
// name, key and timers, filled in by Config.CheckPolicy) and what only the
// machines running it know, from their configuration file (the anchor's
// public endpoint and key, the tether's ports, path MTU and lease time).
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

	bound bool                 // filled in from a policy
	key   securechan.PublicKey // tether.key of the file, if given
	line  int                  // where the entry starts
	lines map[string]int       // field → line
}

// Defaults of a Relocated entry.
const (
	DefaultLeaseTime = time.Hour
	// MaxPool bounds a pool: each address is a mapping in the policy.
	MaxPool = policy.MaxRelocatedPool
)

// Config is a relocated-subnets configuration file.
type Config struct {
	File    string
	Subnets []Relocated
	byName  map[string]int
}

// ConfigError is one problem of a configuration, with its file, line and
// field (a path such as relocated_subnets[0].tether.key).
type ConfigError = fileerr.Error

// ConfigErrors is every problem of one file.
type ConfigErrors = fileerr.List

// LoadConfig reads and checks a file. With any problem it returns no
// Config, only ConfigErrors.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseConfig(path, data)
}

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
		return nil, fileerr.Syntax(path, err)
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
	if len(d.errs) > 0 {
		return nil, d.errs
	}
	return c, nil
}

// movedToPolicy are the fields a relocated subnet's entry had before the
// policy named relocated subnets: they are refused, saying where they went.
var movedToPolicy = map[string]string{
	"tenant": "tenant", "vnet": "vnet", "prefix": "prefix", "gateway": "gateway", "pool": "pool",
	"anchor.host": "anchor", "tether.name": "tether.name", "tether.keepalive": "tether.keepalive", "tether.probe": "tether.probe",
}

// moved refuses the fields of m that the policy now gives.
func (d *cfgDec) moved(m map[string]*yaml.Node, prefix, path string, keys ...string) {
	for _, k := range keys {
		if v := m[k]; v != nil {
			d.errf(v.Line, path+"."+k, "moved to the policy: give it as relocated[].%s of the policy's relocated subnet (see policy/FORMAT.md)", movedToPolicy[prefix+k])
		}
	}
}

func (d *cfgDec) relocated(n *yaml.Node, path string) Relocated {
	r := Relocated{line: n.Line, lines: map[string]int{}, LeaseTime: DefaultLeaseTime, PathMTU: DefaultPathMTU}
	m := d.fields(n, path, "name", "tenant", "vnet", "prefix", "gateway", "pool", "lease_time", "anchor", "tether")
	r.Name, r.lines["name"] = d.str(m, "name", path, true)
	d.moved(m, "", path, "tenant", "vnet", "prefix", "gateway", "pool")
	if s, l := d.str(m, "lease_time", path, false); s != "" {
		r.LeaseTime = d.duration(s, l, path+".lease_time", time.Minute)
	}
	if an := m["anchor"]; an == nil {
		d.errf(n.Line, path+".anchor", "required")
	} else {
		ap := path + ".anchor"
		am := d.fields(an, ap, "host", "endpoint", "key")
		d.moved(am, "anchor.", ap, "host")
		if s, l := d.str(am, "endpoint", ap, true); s != "" {
			e, err := netip.ParseAddrPort(s)
			if err != nil || e.Port() == 0 {
				d.errf(l, ap+".endpoint", "invalid endpoint %q (want ADDRESS:PORT)", s)
			}
			r.AnchorEndpoint = e
		}
		r.AnchorKey = d.key(am, ap, true)
	}
	if tn := m["tether"]; tn == nil {
		d.errf(n.Line, path+".tether", "required")
	} else {
		tp := path + ".tether"
		tm := d.fields(tn, tp, "name", "key", "ports", "keepalive", "probe", "path_mtu")
		d.moved(tm, "tether.", tp, "name", "keepalive", "probe")
		r.key = d.key(tm, tp, false)
		r.lines["tether.key"] = r.line
		if k := tm["key"]; k != nil {
			r.lines["tether.key"] = k.Line
		}
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
		if s, l := d.str(tm, "path_mtu", tp, false); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil || v < 576 || v > 65535 {
				d.errf(l, tp+".path_mtu", "%q: want a number from 576 to 65535", s)
			} else {
				r.PathMTU = v
			}
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

func (d *cfgDec) key(m map[string]*yaml.Node, path string, required bool) securechan.PublicKey {
	s, l := d.str(m, "key", path, required)
	if s == "" {
		return securechan.PublicKey{}
	}
	k, err := securechan.ParsePublicKey(s)
	if err != nil {
		d.errf(l, path+".key", "%v", err)
	}
	return k
}

// CheckPolicy takes each subnet of the configuration from the policy's
// relocated subnet of the same name (policy.Relocated: tenant, VNET,
// prefix, gateway, pool, anchor host, tether name, key and timers), which
// the policy has checked and compiled into mappings to the anchor. A
// subnet the policy does not name, a tether.key of the file that is not the
// policy's, or a tether key file that cannot be read is a ConfigError at
// the configuration's own line. Once taken, a subnet stays: a later policy
// that changes it (another prefix, pool, anchor or tether) is refused, and
// the running one kept; restart to follow it.
func (c *Config) CheckPolicy(st *policy.State) error {
	d := &cfgDec{file: c.File}
	bound := make([]Relocated, len(c.Subnets))
	for i := range c.Subnets {
		r := c.Subnets[i]
		path := fmt.Sprintf("relocated_subnets[%d]", i)
		p, ok := st.RelocatedSubnet(r.Name)
		if !ok {
			d.errf(r.lines["name"], path+".name", "the policy has no relocated subnet %q (its relocated[] entries: %s)", r.Name, relocatedNames(st))
			continue
		}
		r.Tenant, r.VNET, r.Prefix, r.Gateway = p.Tenant, p.VNET, p.Prefix, p.Gateway
		r.PoolFirst, r.PoolLast, r.AnchorHost, r.TetherName = p.PoolFirst, p.PoolLast, p.Anchor, p.Tether.Name
		r.Keepalive, r.Probe = orDefault(p.Tether.Keepalive, DefaultKeepalive), orDefault(p.Tether.Probe, DefaultProbe)
		r.TetherKey = p.Tether.Key
		if p.Tether.KeyFile != "" {
			k, err := readPublicKey(c.File, p.Tether.KeyFile)
			if err != nil {
				d.errf(r.lines["name"], path+".name", "the policy's tether.key_file of %s: %v", r.Name, err)
				continue
			}
			r.TetherKey = k
		}
		if r.key != (securechan.PublicKey{}) && r.key != r.TetherKey {
			d.errf(r.lines["tether.key"], path+".tether.key", "%s is not the key the policy gives tether %s (%s)", r.key, r.TetherName, r.TetherKey)
			continue
		}
		if r.Probe > r.Keepalive {
			d.errf(r.lines["name"], path+".name", "the tether's probe interval %v is longer than its keepalive %v", r.Probe, r.Keepalive)
			continue
		}
		if old := c.Subnets[i]; old.bound && !sameSubnet(&old, &r) {
			d.errf(r.lines["name"], path+".name", "the policy changes relocated subnet %s (%s) from what runs (%s): restart to follow it", r.Name, p, old.Subnet())
			continue
		}
		r.bound = true
		bound[i] = r
	}
	ports := map[string]string{}
	for i, r := range bound {
		for _, p := range r.Ports {
			if other, dup := ports[r.TetherName+"/"+p]; dup && other != r.Name {
				d.errf(r.line, fmt.Sprintf("relocated_subnets[%d].tether.ports", i), "port %s of tether %s is also subnet %s's", p, r.TetherName, other)
			}
			ports[r.TetherName+"/"+p] = r.Name
		}
	}
	if len(d.errs) > 0 {
		return d.errs
	}
	copy(c.Subnets, bound)
	return nil
}

func sameSubnet(a, b *Relocated) bool {
	return a.Tenant == b.Tenant && a.VNET == b.VNET && a.Prefix == b.Prefix && a.Gateway == b.Gateway &&
		a.PoolFirst == b.PoolFirst && a.PoolLast == b.PoolLast && a.AnchorHost == b.AnchorHost &&
		a.TetherName == b.TetherName && a.TetherKey == b.TetherKey && a.Keepalive == b.Keepalive && a.Probe == b.Probe
}

func relocatedNames(st *policy.State) string {
	var names []string
	for _, r := range st.Relocated() {
		names = append(names, r.Name)
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// readPublicKey reads a public key file (its hex form, alone on its line);
// a relative path is taken from the configuration file's directory.
func readPublicKey(cfgFile, path string) (securechan.PublicKey, error) {
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(cfgFile), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return securechan.PublicKey{}, err
	}
	return securechan.ParsePublicKey(strings.TrimSpace(string(b)))
}

// Find returns the entry named name.
func (c *Config) Find(name string) (*Relocated, bool) {
	i, ok := c.byName[name]
	if !ok {
		return nil, false
	}
	return &c.Subnets[i], true
}

// PoolVMs returns the VMs that stand for r's pool in a policy, as the
// policy compiles them from its relocated subnets (policy.Relocated.PoolVMs):
// one per address, on the anchor host.
func PoolVMs(r *Relocated) []policy.VM {
	p := policy.Relocated{Name: r.Name, Tenant: r.Tenant, VNET: r.VNET, PoolFirst: r.PoolFirst, PoolLast: r.PoolLast, Anchor: r.AnchorHost}
	return p.PoolVMs()
}

// PoolVMName is the policy name of a relocated address's VM.
func PoolVMName(subnet string, a netip.Addr) string { return policy.RelocatedVMName(subnet, a) }

// PoolMAC is the MAC the policy gives a relocated address.
func PoolMAC(a netip.Addr) policy.MAC { return policy.RelocatedMAC(a) }

// Peer returns the tunnel peer the anchor accepts for r.
func (r *Relocated) Peer(vni uint32) Peer {
	return Peer{Name: r.TetherName, Key: r.TetherKey, VNI: vni}
}

// Subnet returns the anchor's view of r.
func (r *Relocated) Subnet() Subnet {
	return Subnet{Name: r.Name, Tenant: r.Tenant, VNET: r.VNET, Prefix: r.Prefix, Tether: r.TetherName}
}

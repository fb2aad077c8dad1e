package policy

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// LoadFile reads and parses a policy document.
func LoadFile(path string) (*State, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Parse parses a policy document (see FORMAT.md) and checks it. filename is
// only used in error messages. On any problem it returns an ErrorList and
// no State.
func Parse(filename string, data []byte) (*State, error) {
	b, err := ParseBuilder(filename, data)
	if err != nil {
		return nil, err
	}
	return b.Build()
}

// ParseBuilder decodes a document into a Builder without building it, so a
// caller can add to it first. Errors from Build still name the document's
// lines.
func ParseBuilder(filename string, data []byte) (*Builder, error) {
	d := &decoder{file: filename, b: &Builder{file: filename}, budget: len(data) + 16}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, ErrorList{syntaxError(filename, err)}
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		// An empty document is an empty state.
		return d.b, nil
	}
	d.document(root.Content[0])
	if len(d.errs) > 0 {
		d.errs.sort()
		return nil, d.errs
	}
	return d.b, nil
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

func syntaxError(file string, err error) *LoadError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	e := &LoadError{File: file, Msg: msg}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		e.Msg = strings.TrimSpace(strings.TrimPrefix(strings.Replace(msg, m[0], "", 1), ":"))
	}
	return e
}

type decoder struct {
	file string
	b    *Builder
	errs ErrorList
	// budget bounds the values decoded: one per mapping or list item. A
	// document without aliases can never hold more values than bytes;
	// aliases can (a "billion laughs" document), and would make loading
	// cost far more than the document's size.
	budget  int
	overrun bool
}

// spend takes one value from the budget and reports whether decoding may
// go on.
func (d *decoder) spend(n *yaml.Node) bool {
	if d.overrun {
		return false
	}
	if d.budget--; d.budget < 0 {
		d.errAt(n, "", "aliases expand the document to more values than it has bytes")
		d.overrun = true
		return false
	}
	return true
}

func (d *decoder) errAt(n *yaml.Node, path, format string, args ...any) {
	if d.overrun {
		return
	}
	d.errs = append(d.errs, &LoadError{File: d.file, Line: n.Line, Column: n.Column, Field: path, Msg: fmt.Sprintf(format, args...)})
}

// object is one YAML mapping being decoded into one policy object.
type object struct {
	d    *decoder
	n    *yaml.Node
	path string
	vals map[string]*yaml.Node
	o    *origin
}

// obj checks that n is a mapping whose keys are all among allowed, each at
// most once. Unknown and repeated keys are errors at their own line.
func (d *decoder) obj(n *yaml.Node, path string, allowed ...string) *object {
	o := &object{d: d, n: n, path: path, vals: map[string]*yaml.Node{},
		o: &origin{path: path, at: pos{n.Line, n.Column}, fields: map[string]pos{}}}
	n = resolveAlias(n)
	if !d.spend(n) {
		return o
	}
	if n.Kind != yaml.MappingNode {
		d.errAt(n, path, "want a mapping, got %s", kindName(n))
		return o
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolveAlias(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.errAt(k, path, "keys must be plain names")
			continue
		}
		fp := path + "." + k.Value
		if path == "" {
			fp = k.Value
		}
		switch {
		case !contains(allowed, k.Value):
			d.errAt(k, fp, "unknown field %q (known: %s)", k.Value, strings.Join(allowed, ", "))
		case o.vals[k.Value] != nil:
			d.errAt(k, fp, "field %q given twice", k.Value)
		default:
			o.vals[k.Value] = v
			o.o.fields[k.Value] = pos{v.Line, v.Column}
		}
	}
	return o
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}

func (o *object) fieldPath(key string) string {
	if o.path == "" {
		return key
	}
	return o.path + "." + key
}

// scalar returns the value of a scalar field ("" if absent or wrong).
func (o *object) scalar(key string, required bool) (string, *yaml.Node) {
	v := o.vals[key]
	if v == nil {
		if required {
			o.d.errAt(o.n, o.fieldPath(key), "missing field %q", key)
		}
		return "", nil
	}
	if v.Kind != yaml.ScalarNode {
		o.d.errAt(v, o.fieldPath(key), "want a single value, got %s", kindName(v))
		return "", nil
	}
	return v.Value, v
}

func (o *object) str(key string, required bool) string {
	s, n := o.scalar(key, required)
	if n != nil && s == "" && required {
		o.d.errAt(n, o.fieldPath(key), "must not be empty")
	}
	return s
}

func (o *object) uint(key string, required bool, max uint64) uint64 {
	s, n := o.scalar(key, required)
	if n == nil {
		return 0
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v > max {
		o.d.errAt(n, o.fieldPath(key), "%q is not a whole number in 0..%d", s, max)
		return 0
	}
	return v
}

func (o *object) boolean(key string) bool {
	s, n := o.scalar(key, false)
	if n == nil {
		return false
	}
	switch s {
	case "true":
		return true
	case "false":
		return false
	}
	o.d.errAt(n, o.fieldPath(key), "%q is not true or false", s)
	return false
}

func (o *object) addr(key string, required bool) netip.Addr {
	s, n := o.scalar(key, required)
	if n == nil {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		o.d.errAt(n, o.fieldPath(key), "invalid address %q", s)
	}
	return a
}

func (o *object) mac(key string, required bool) MAC {
	s, n := o.scalar(key, required)
	if n == nil {
		return MAC{}
	}
	m, err := ParseMAC(s)
	if err != nil {
		o.d.errAt(n, o.fieldPath(key), "%v", err)
	}
	return m
}

// list returns the items of a field that may be one scalar or a sequence,
// recording each item's position as key[i].
func (o *object) list(key string, required bool) []*yaml.Node {
	v := o.vals[key]
	if v == nil {
		if required {
			o.d.errAt(o.n, o.fieldPath(key), "missing field %q", key)
		}
		return nil
	}
	items := []*yaml.Node{v}
	if v.Kind == yaml.SequenceNode {
		items = v.Content
	}
	for i, it := range items {
		if !o.d.spend(it) {
			return nil
		}
		items[i] = resolveAlias(it)
		o.o.fields[fmt.Sprintf("%s[%d]", key, i)] = pos{it.Line, it.Column}
	}
	return items
}

func (o *object) scalarItems(key string, required bool) ([]string, []*yaml.Node) {
	var out []string
	var nodes []*yaml.Node
	for i, it := range o.list(key, required) {
		if it.Kind != yaml.ScalarNode {
			o.d.errAt(it, fmt.Sprintf("%s[%d]", o.fieldPath(key), i), "want a single value, got %s", kindName(it))
			continue
		}
		out = append(out, it.Value)
		nodes = append(nodes, it)
	}
	return out, nodes
}

func (o *object) prefixes(key string, required bool) []netip.Prefix {
	vals, nodes := o.scalarItems(key, required)
	var out []netip.Prefix
	for i, s := range vals {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			o.d.errAt(nodes[i], fmt.Sprintf("%s[%d]", o.fieldPath(key), i), "invalid prefix %q", s)
		}
		out = append(out, p)
	}
	return out
}

func (o *object) prefix(key string, required bool) netip.Prefix {
	s, n := o.scalar(key, required)
	if n == nil {
		return netip.Prefix{}
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		o.d.errAt(n, o.fieldPath(key), "invalid prefix %q", s)
	}
	return p
}

// seq returns the items of a field that must be a list of mappings.
func (o *object) seq(key string) []*yaml.Node {
	v := o.vals[key]
	if v == nil {
		return nil
	}
	if v.Kind != yaml.SequenceNode {
		o.d.errAt(v, o.fieldPath(key), "want a list, got %s", kindName(v))
		return nil
	}
	out := make([]*yaml.Node, len(v.Content))
	for i, it := range v.Content {
		out[i] = resolveAlias(it)
	}
	return out
}

func (d *decoder) document(n *yaml.Node) {
	top := d.obj(n, "", "router_mac", "hosts", "gateways", "tenants", "shadows", "activations")
	if _, ok := top.vals["router_mac"]; ok {
		m := top.mac("router_mac", false)
		_, p := top.o.field("router_mac")
		d.b.routerMAC = item[MAC]{m, &origin{path: "router_mac", at: p}}
	}
	for i, hn := range top.seq("hosts") {
		o := d.obj(hn, fmt.Sprintf("hosts[%d]", i), "name", "pa")
		d.b.hosts = append(d.b.hosts, item[Host]{Host{Name: o.str("name", true), PA: o.addr("pa", true)}, o.o})
	}
	for i, gn := range top.seq("gateways") {
		o := d.obj(gn, fmt.Sprintf("gateways[%d]", i), "name", "pa", "tenant")
		d.b.gateways = append(d.b.gateways, item[Gateway]{Gateway{Name: o.str("name", true), PA: o.addr("pa", true), Tenant: o.str("tenant", false)}, o.o})
	}
	for i, tn := range top.seq("tenants") {
		d.tenant(tn, fmt.Sprintf("tenants[%d]", i))
	}
	for i, sn := range top.seq("shadows") {
		o := d.obj(sn, fmt.Sprintf("shadows[%d]", i), "vm", "host", "generation")
		d.b.shadows = append(d.b.shadows, item[Shadow]{Shadow{
			VM: o.str("vm", true), Host: o.str("host", true), Generation: o.uint("generation", true, math.MaxUint64),
		}, o.o})
	}
	for i, an := range top.seq("activations") {
		o := d.obj(an, fmt.Sprintf("activations[%d]", i), "vm", "generation")
		d.b.acts = append(d.b.acts, item[Activation]{Activation{
			VM: o.str("vm", true), Generation: o.uint("generation", true, math.MaxUint64),
		}, o.o})
	}
}

func (d *decoder) tenant(n *yaml.Node, path string) {
	o := d.obj(n, path, "name", "vnets", "routes", "acls", "gateway_rules")
	name := o.str("name", true)
	d.b.tenants = append(d.b.tenants, item[Tenant]{Tenant{Name: name}, o.o})
	for i, vn := range o.seq("vnets") {
		d.vnet(vn, fmt.Sprintf("%s.vnets[%d]", path, i), name)
	}
	for i, rn := range o.seq("routes") {
		d.route(rn, fmt.Sprintf("%s.routes[%d]", path, i), name)
	}
	for i, an := range o.seq("acls") {
		d.acl(an, fmt.Sprintf("%s.acls[%d]", path, i), name)
	}
	for i, gn := range o.seq("gateway_rules") {
		g := d.obj(gn, fmt.Sprintf("%s.gateway_rules[%d]", path, i), "name", "prefix", "gateway", "nat")
		d.b.gwRules = append(d.b.gwRules, item[GatewayRule]{GatewayRule{
			Tenant: name, Name: g.str("name", true), Prefix: g.prefix("prefix", true),
			Gateway: g.str("gateway", true), NAT: g.prefix("nat", false),
		}, g.o})
	}
}

func (d *decoder) vnet(n *yaml.Node, path, tenant string) {
	o := d.obj(n, path, "name", "vni", "subnets", "vms")
	v := VNET{Tenant: tenant, Name: o.str("name", true), VNI: uint32(o.uint("vni", true, math.MaxUint32)), Subnets: o.prefixes("subnets", true)}
	d.b.vnets = append(d.b.vnets, item[VNET]{v, o.o})
	for i, mn := range o.seq("vms") {
		m := d.obj(mn, fmt.Sprintf("%s.vms[%d]", path, i), "name", "mac", "ca", "host", "generation")
		vm := VM{Tenant: tenant, VNET: v.Name, Name: m.str("name", true), MAC: m.mac("mac", true),
			Host: m.str("host", true), Generation: m.uint("generation", false, math.MaxUint64)}
		if _, ok := m.vals["generation"]; ok && vm.Generation == 0 {
			d.errAt(m.vals["generation"], m.fieldPath("generation"), "generation must be at least 1")
		}
		vals, nodes := m.scalarItems("ca", true)
		for j, s := range vals {
			a, err := netip.ParseAddr(s)
			if err != nil {
				d.errAt(nodes[j], fmt.Sprintf("%s.ca[%d]", m.path, j), "invalid address %q", s)
			}
			vm.CAs = append(vm.CAs, a)
		}
		d.b.vms = append(d.b.vms, vm)
		d.b.vmOrigins = append(d.b.vmOrigins, m.o)
	}
}

func (d *decoder) route(n *yaml.Node, path, tenant string) {
	o := d.obj(n, path, "prefix", "next_hop")
	r := Route{Tenant: tenant, Prefix: o.prefix("prefix", true)}
	nh := o.vals["next_hop"]
	switch {
	case nh == nil:
		d.errAt(o.n, o.fieldPath("next_hop"), "missing field \"next_hop\"")
	case nh.Kind == yaml.ScalarNode:
		switch nh.Value {
		case "drop":
			r.NextHop.Kind = NextHopDrop
		case "host":
			r.NextHop.Kind = NextHopHost
		default:
			d.errAt(nh, o.fieldPath("next_hop"), "next hop %q is not drop, host or a mapping with vnet, via or gateway", nh.Value)
		}
	default:
		h := d.obj(nh, o.fieldPath("next_hop"), "vnet", "via", "gateway")
		for k, p := range h.o.fields {
			o.o.fields["next_hop."+k] = p
		}
		if len(h.vals) != 1 && h.n.Kind == yaml.MappingNode {
			d.errAt(nh, o.fieldPath("next_hop"), "next hop needs exactly one of vnet, via, gateway")
			break
		}
		switch {
		case h.vals["vnet"] != nil:
			r.NextHop = NextHop{Kind: NextHopVNET, VNET: h.str("vnet", true)}
		case h.vals["via"] != nil:
			r.NextHop = NextHop{Kind: NextHopAddress, Via: h.addr("via", true)}
		case h.vals["gateway"] != nil:
			r.NextHop = NextHop{Kind: NextHopGateway, Gateway: h.str("gateway", true)}
		}
	}
	d.b.routes = append(d.b.routes, item[Route]{r, o.o})
}

var protocolNames = map[string]uint8{"any": ProtoAny, "icmp": ProtoICMP, "tcp": ProtoTCP, "udp": ProtoUDP, "icmpv6": ProtoICMPv6, "sctp": ProtoSCTP}

func (d *decoder) acl(n *yaml.Node, path, tenant string) {
	o := d.obj(n, path, "id", "priority", "direction", "vnet", "src", "dst", "protocol", "src_ports", "dst_ports", "action", "stateful")
	a := ACL{Tenant: tenant, ID: o.str("id", true), Priority: uint32(o.uint("priority", true, math.MaxUint32)),
		VNET: o.str("vnet", false), Src: o.prefixes("src", false), Dst: o.prefixes("dst", false), Stateful: o.boolean("stateful")}
	switch s, sn := o.scalar("direction", true); s {
	case "in":
		a.Direction = In
	case "out":
		a.Direction = Out
	default:
		if sn != nil {
			d.errAt(sn, o.fieldPath("direction"), "direction %q is not in or out", s)
		}
	}
	switch s, sn := o.scalar("action", true); s {
	case "allow":
		a.Action = Allow
	case "deny":
		a.Action = Deny
	default:
		if sn != nil {
			d.errAt(sn, o.fieldPath("action"), "action %q is not allow or deny", s)
		}
	}
	if s, sn := o.scalar("protocol", false); sn != nil {
		if p, ok := protocolNames[strings.ToLower(s)]; ok {
			a.Protocol = p
		} else if v, err := strconv.ParseUint(s, 10, 8); err == nil && v > 0 {
			a.Protocol = uint8(v)
		} else {
			d.errAt(sn, o.fieldPath("protocol"), "protocol %q is not any, tcp, udp, icmp, icmpv6, sctp or a number 1..255", s)
		}
	}
	a.SrcPorts = o.ports("src_ports")
	a.DstPorts = o.ports("dst_ports")
	d.b.acls = append(d.b.acls, item[ACL]{a, o.o})
}

var errPort = errors.New("want a port (80) or a range (8000-8080) within 0..65535")

func (o *object) ports(key string) []PortRange {
	vals, nodes := o.scalarItems(key, false)
	var out []PortRange
	for i, s := range vals {
		r, err := parsePortRange(s)
		if err != nil {
			o.d.errAt(nodes[i], fmt.Sprintf("%s[%d]", o.fieldPath(key), i), "%q: %v", s, err)
		}
		out = append(out, r)
	}
	return out
}

func parsePortRange(s string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(strings.TrimSpace(s), "-")
	l, err := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	if err != nil {
		return PortRange{}, errPort
	}
	h := l
	if isRange {
		if h, err = strconv.ParseUint(strings.TrimSpace(hi), 10, 16); err != nil {
			return PortRange{}, errPort
		}
	}
	return PortRange{uint16(l), uint16(h)}, nil
}

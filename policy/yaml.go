package policy

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// LoadFile reads and parses a policy document (see [LoadReader]).
func LoadFile(path string) (*State, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return LoadReader(path, f)
}

// LoadReader parses and checks the policy document that is the whole of r
// (from its start); filename is only used in error messages. A document in
// the block style that policy files are written in (see FORMAT.md) is
// decoded as it is read, without holding the file or a tree of it in
// memory; any other document is read again from the start (r.Seek(0,
// io.SeekStart)) and parsed whole.
// On any problem it returns an ErrorList and no State; a failure to read
// is returned as it is.
func LoadReader(filename string, r io.ReadSeeker) (*State, error) {
	b, err := loadBuilder(filename, r, func() ([]byte, error) {
		if _, err := r.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		return io.ReadAll(r)
	})
	if err != nil {
		return nil, err
	}
	return b.Build()
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
	return loadBuilder(filename, bytes.NewReader(data), func() ([]byte, error) { return data, nil })
}

// loadBuilder decodes the document r holds into a Builder: streaming when
// it can, else from all of it (whole() reads it again from the start) with
// yaml.v3.
func loadBuilder(filename string, r io.Reader, whole func() ([]byte, error)) (*Builder, error) {
	b, err := streamBuilder(filename, r)
	if err != errNotStreamable {
		return b, err
	}
	data, err := whole()
	if err != nil {
		return nil, err
	}
	return nodeBuilder(filename, data)
}

// nodeBuilder decodes a document through a yaml.v3 node tree: any YAML,
// aliases included.
func nodeBuilder(filename string, data []byte) (*Builder, error) {
	d := newDecoder(filename, len(data)+16)
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	switch err := dec.Decode(&root); {
	case err == io.EOF:
		return nil, ErrorList{errEmpty(filename)}
	case err != nil:
		return nil, ErrorList{syntaxError(filename, err)}
	}
	if len(root.Content) == 0 || isEmptyNode(root.Content[0]) {
		return nil, ErrorList{errEmpty(filename)}
	}
	// One document per file: a second one would otherwise be ignored.
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == io.EOF:
	case err != nil:
		return nil, ErrorList{syntaxError(filename, err)}
	default:
		return nil, ErrorList{&LoadError{File: filename, Line: next.Line, Column: next.Column,
			Msg: "a second YAML document starts here; a policy file holds one document"}}
	}
	d.document(root.Content[0])
	if len(d.errs) > 0 {
		d.errs.sort()
		return nil, d.errs
	}
	d.b.vms = d.vms.flat()
	return d.b, nil
}

// isEmptyNode reports whether n is the empty value of a document that holds
// nothing but a document marker.
func isEmptyNode(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Value == "" && n.Style == 0 && n.Tag == "!!null"
}

func errEmpty(file string) *LoadError {
	return &LoadError{File: file, Msg: "the document is empty: a policy file holds one YAML mapping (hosts, tenants, ...)"}
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

	// streamed maps the placeholder of each vms list whose VMs were
	// decoded while the document was read (stream.go) to those VMs.
	streaming bool
	streamed  map[*yaml.Node]vmSpan
	// vmObj and vmOrigin are reused for every VM: a document may hold
	// millions.
	vmObj    object
	vmOrigin origin
	// vms are the VMs decoded, in blocks: a document may hold millions,
	// and growing one array would copy them over and over. The Builder
	// gets them in one array of their number at the end.
	vms   chunked[VM]
	hosts map[string]string // host names, shared by the VMs naming them
	cas   []netip.Addr      // where VMs' CAs are carved from
}

// vmSpan is the VMs of one streamed vms list: VMs lo to hi-1.
type vmSpan struct {
	lo, hi int
	filled bool
}

func newDecoder(file string, budget int) *decoder {
	return &decoder{file: file, b: &Builder{file: file}, budget: budget, hosts: map[string]string{}}
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
	d *decoder
	n *yaml.Node
	// The object's path is base, or base[idx] when idx >= 0 (a VM: its
	// path is only spelled out for an error).
	base string
	idx  int
	vals []keyVal
	o    *origin
}

type keyVal struct {
	key string
	v   *yaml.Node
}

func (o *object) path() string {
	if o.idx < 0 {
		return o.base
	}
	return o.base + "[" + strconv.Itoa(o.idx) + "]"
}

// value returns the value of a field, nil if absent.
func (o *object) value(key string) *yaml.Node {
	for i := range o.vals {
		if o.vals[i].key == key {
			return o.vals[i].v
		}
	}
	return nil
}

// obj checks that n is a mapping whose keys are all among allowed, each at
// most once. Unknown and repeated keys are errors at their own line.
func (d *decoder) obj(n *yaml.Node, path string, allowed ...string) *object {
	o := &object{}
	d.objInto(o, &origin{path: path}, n, path, -1, allowed)
	return o
}

// objInto is obj filling o and or (which it resets).
func (d *decoder) objInto(o *object, or *origin, n *yaml.Node, base string, idx int, allowed []string) {
	*or = origin{path: or.path, at: pos{n.Line, n.Column}, fields: or.fields[:0]}
	*o = object{d: d, n: n, base: base, idx: idx, vals: o.vals[:0], o: or}
	n = resolveAlias(n)
	if !d.spend(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errAt(n, o.path(), "want a mapping, got %s", kindName(n))
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolveAlias(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.errAt(k, o.path(), "keys must be plain names")
			continue
		}
		switch {
		case !slices.Contains(allowed, k.Value):
			d.errAt(k, o.fieldPath(k.Value), "unknown field %q (known: %s)", k.Value, strings.Join(allowed, ", "))
		case o.value(k.Value) != nil:
			d.errAt(k, o.fieldPath(k.Value), "field %q given twice", k.Value)
		default:
			o.vals = append(o.vals, keyVal{k.Value, v})
			o.o.set(k.Value, -1, pos{v.Line, v.Column})
		}
	}
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
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
	if p := o.path(); p != "" {
		return p + "." + key
	}
	return key
}

func (o *object) itemPath(key string, i int) string {
	return o.fieldPath(key) + "[" + strconv.Itoa(i) + "]"
}

// scalar returns the value of a scalar field ("" if absent or wrong).
func (o *object) scalar(key string, required bool) (string, *yaml.Node) {
	v := o.value(key)
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
	v := o.value(key)
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
		o.o.set(key, i, pos{it.Line, it.Column})
	}
	return items
}

// eachScalar calls f with each scalar item of a field that may be one
// scalar or a list, numbered in the order of the scalars; other items are
// errors.
func (o *object) eachScalar(key string, required bool, f func(i int, s string, n *yaml.Node)) {
	j := 0
	for i, it := range o.list(key, required) {
		if it.Kind != yaml.ScalarNode {
			o.d.errAt(it, o.itemPath(key, i), "want a single value, got %s", kindName(it))
			continue
		}
		f(j, it.Value, it)
		j++
	}
}

func (o *object) prefixes(key string, required bool) []netip.Prefix {
	var out []netip.Prefix
	o.eachScalar(key, required, func(i int, s string, n *yaml.Node) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			o.d.errAt(n, o.itemPath(key, i), "invalid prefix %q", s)
		}
		out = append(out, p)
	})
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
	v := o.value(key)
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
	top := d.obj(n, "", "router_mac", "hosts", "gateways", "tenants", "shadows", "activations", "relocated")
	if top.value("router_mac") != nil {
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
	for i, rn := range top.seq("relocated") {
		d.relocated(rn, fmt.Sprintf("relocated[%d]", i))
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
	o := d.obj(n, path, "name", "vni", "encap", "subnets", "vms")
	v := VNET{Tenant: tenant, Name: o.str("name", true), VNI: uint32(o.uint("vni", true, math.MaxUint32)), Subnets: o.prefixes("subnets", true)}
	if s, sn := o.scalar("encap", false); sn != nil {
		k, err := ParseEncapKind(s)
		if err != nil {
			d.errAt(sn, o.fieldPath("encap"), "%v", err)
		}
		v.Encap = k
	}
	d.b.vnets = append(d.b.vnets, item[VNET]{v, o.o})
	lo := d.vms.n
	if sp, ok := d.streamed[o.value("vms")]; ok {
		// Decoded while the document was read, before the VNET's name
		// was known.
		d.streamed[o.value("vms")] = vmSpan{sp.lo, sp.hi, true}
		for i := sp.lo; i < sp.hi; i++ {
			vm := d.vms.at(i)
			vm.Tenant, vm.VNET = tenant, v.Name
		}
		return
	}
	list := path + ".vms"
	for i, mn := range o.seq("vms") {
		if i == 0 {
			d.b.vmDoc.startList(lo, list)
		}
		d.vm(mn, list, i)
		vm := d.vms.at(d.vms.n - 1)
		vm.Tenant, vm.VNET = tenant, v.Name
	}
}

var vmFields = []string{"name", "mac", "ca", "host", "generation", "seal_keys"}

// vm decodes VM i of the vms list at path list and appends it to the
// Builder, with its position in the document; the caller sets its tenant
// and VNET.
func (d *decoder) vm(n *yaml.Node, list string, i int) {
	m := &d.vmObj
	d.objInto(m, &d.vmOrigin, n, list, i, vmFields)
	vm := VM{Name: m.str("name", true), MAC: m.mac("mac", true), Host: m.str("host", true),
		Generation: m.uint("generation", false, math.MaxUint64)}
	if g := m.value("generation"); g != nil && vm.Generation == 0 {
		d.errAt(g, m.fieldPath("generation"), "generation must be at least 1")
	}
	start := len(d.cas)
	m.eachScalar("ca", true, func(j int, s string, n *yaml.Node) {
		a, err := netip.ParseAddr(s)
		if err != nil {
			d.errAt(n, m.itemPath("ca", j), "invalid address %q", s)
		}
		if len(d.cas) == cap(d.cas) {
			// A new block; this VM's CAs so far move with it.
			block := make([]netip.Addr, len(d.cas)-start, max(casBlock, 2*(len(d.cas)-start)))
			copy(block, d.cas[start:])
			d.cas, start = block, 0
		}
		d.cas = append(d.cas, a)
	})
	if len(d.cas) > start {
		vm.CAs = d.cas[start:len(d.cas):len(d.cas)]
	}
	if m.value("seal_keys") != nil {
		vm.SealKeys = d.sealKeys(m)
	}
	if !d.streaming {
		// (The streaming reader shares host names as it reads them.)
		vm.Host = d.host(vm.Host)
	}
	d.vms.add(vm)
	d.b.vmDoc.add(m.o)
}

// sealKeys decodes a VM's seal_keys: a list of {id, public} mappings, at
// most MaxSealKeys, ids distinct and in 0..255, each public key 64 hex
// digits (32 bytes) and not all zero.
func (d *decoder) sealKeys(m *object) []SealKey {
	items := m.seq("seal_keys")
	if len(items) > MaxSealKeys {
		d.errAt(m.value("seal_keys"), m.fieldPath("seal_keys"), "%d keys: a VM has at most %d at once (the current one and the next)", len(items), MaxSealKeys)
		return nil
	}
	var out []SealKey
	for i, it := range items {
		path := m.itemPath("seal_keys", i)
		o := d.obj(it, path, "id", "public")
		k := SealKey{ID: uint8(o.uint("id", true, math.MaxUint8))}
		s, n := o.scalar("public", true)
		if n != nil {
			b, err := hex.DecodeString(s)
			switch {
			case err != nil || len(b) != len(k.Public):
				d.errAt(n, o.fieldPath("public"), "want a Curve25519 public key as %d hex digits", 2*len(k.Public))
				continue
			case isZeroKey(b):
				d.errAt(n, o.fieldPath("public"), "the all-zero key is not a public key")
				continue
			}
			copy(k.Public[:], b)
		}
		for _, prev := range out {
			if prev.ID == k.ID {
				if v := o.value("id"); v != nil {
					d.errAt(v, o.fieldPath("id"), "key id %d is given twice", k.ID)
				}
			}
		}
		out = append(out, k)
	}
	return out
}

func isZeroKey(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// casBlock is how many CAs are allocated at once: VMs have one or two, and
// one allocation each would be most of the allocations of a large load.
const casBlock = 4096

// host returns the VMs' shared copy of a host name: they are few, VMs many.
func (d *decoder) host(name string) string {
	if h, ok := d.hosts[name]; ok {
		return h
	}
	if len(d.hosts) < 1<<16 {
		d.hosts[name] = name
	}
	return name
}

func (d *decoder) route(n *yaml.Node, path, tenant string) {
	o := d.obj(n, path, "prefix", "next_hop")
	r := Route{Tenant: tenant, Prefix: o.prefix("prefix", true)}
	nh := o.value("next_hop")
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
		for _, f := range h.o.fields {
			o.o.set("next_hop."+f.name, f.idx, f.at)
		}
		if len(h.vals) != 1 && h.n.Kind == yaml.MappingNode {
			d.errAt(nh, o.fieldPath("next_hop"), "next hop needs exactly one of vnet, via, gateway")
			break
		}
		switch {
		case h.value("vnet") != nil:
			r.NextHop = NextHop{Kind: NextHopVNET, VNET: h.str("vnet", true)}
		case h.value("via") != nil:
			r.NextHop = NextHop{Kind: NextHopAddress, Via: h.addr("via", true)}
		case h.value("gateway") != nil:
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
	var out []PortRange
	o.eachScalar(key, false, func(i int, s string, n *yaml.Node) {
		r, err := parsePortRange(s)
		if err != nil {
			o.d.errAt(n, o.itemPath(key, i), "%q: %v", s, err)
		}
		out = append(out, r)
	})
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

// vmPositions is where the VMs of a document are, kept small: a document
// may hold millions of VMs, and Build needs their positions only to report
// an error.
type vmPositions struct {
	at    chunked[vmAt] // by VM index
	lists []vmList      // by first VM
	// moreCAs holds the positions of ca[1], ca[2], ... of VMs with more
	// than one CA, by VM index.
	moreCAs map[int][]pos
}

// vmList is one vms list of the document: its items are the VMs from
// start on, up to the next list's start.
type vmList struct {
	start int
	path  string // tenants[i].vnets[j].vms
}

// vmAt is where one VM and the fields Build checks are: lines and columns
// (0: absent; a column past 65535 is cut to it).
type vmAt struct {
	line [numVMPos]uint32
	col  [numVMPos]uint16
}

const (
	vmPosAt = iota
	vmPosName
	vmPosMAC
	vmPosCA
	vmPosHost
	vmPosCA0
	numVMPos
)

var vmPosFields = [numVMPos]string{vmPosName: "name", vmPosMAC: "mac", vmPosCA: "ca", vmPosHost: "host"}

func (v *vmPositions) startList(start int, path string) {
	v.lists = append(v.lists, vmList{start, path})
}

// add records the position of the next VM from the origin it was decoded
// with.
func (v *vmPositions) add(o *origin) {
	var a vmAt
	put := func(i int, p pos) {
		a.line[i], a.col[i] = uint32(p.line), uint16(min(p.col, math.MaxUint16))
	}
	put(vmPosAt, o.at)
	for _, f := range o.fields {
		switch {
		case f.idx < 0:
			switch f.name {
			case "name":
				put(vmPosName, f.at)
			case "mac":
				put(vmPosMAC, f.at)
			case "ca":
				put(vmPosCA, f.at)
			case "host":
				put(vmPosHost, f.at)
			}
		case f.name == "ca" && f.idx == 0:
			put(vmPosCA0, f.at)
		case f.name == "ca":
			if v.moreCAs == nil {
				v.moreCAs = map[int][]pos{}
			}
			vi := v.at.n
			v.moreCAs[vi] = append(v.moreCAs[vi], f.at)
		}
	}
	v.at.add(a)
}

// origin returns where VM i came from, or nil if it did not come from a
// document.
func (v *vmPositions) origin(i int) *origin {
	if i >= v.at.n {
		return nil
	}
	a := v.at.at(i)
	get := func(k int) pos { return pos{int(a.line[k]), int(a.col[k])} }
	// The last list starting at or before i holds it.
	l := v.lists[sort.Search(len(v.lists), func(k int) bool { return v.lists[k].start > i })-1]
	o := &origin{path: l.path + "[" + strconv.Itoa(i-l.start) + "]", at: get(vmPosAt)}
	for k := vmPosName; k <= vmPosHost; k++ {
		if a.line[k] != 0 {
			o.set(vmPosFields[k], -1, get(k))
		}
	}
	if a.line[vmPosCA0] != 0 {
		o.set("ca", 0, get(vmPosCA0))
	}
	for j, p := range v.moreCAs[i] {
		o.set("ca", j+1, p)
	}
	return o
}

// chunked is a list kept in blocks of a fixed size, so that appending never
// copies what is there.
type chunked[T any] struct {
	blocks [][]T
	n      int
}

const chunkShift = 14

func (c *chunked[T]) add(v T) {
	if c.n&(1<<chunkShift-1) == 0 {
		c.blocks = append(c.blocks, make([]T, 0, 1<<chunkShift))
	}
	last := &c.blocks[len(c.blocks)-1]
	*last = append(*last, v)
	c.n++
}

func (c *chunked[T]) at(i int) *T { return &c.blocks[i>>chunkShift][i&(1<<chunkShift-1)] }

// flat returns the list as one array of exactly its length, and empties c.
func (c *chunked[T]) flat() []T {
	out := make([]T, 0, c.n)
	for _, b := range c.blocks {
		out = append(out, b...)
	}
	*c = chunked[T]{}
	return out
}

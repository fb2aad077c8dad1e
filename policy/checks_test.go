package policy

import (
	"errors"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// Each case is a whole document; the line the error must point at carries
// the marker "#!" so the expectations cannot drift from the text.
var checkCases = []struct {
	name  string
	doc   string
	field string
	msg   string
}{
	{
		name: "overlapping subnets in one routing domain",
		doc: `
hosts: [{name: h1, pa: 198.18.0.1}]
tenants:
  - name: t1
    vnets:
      - {name: v1, vni: 100, subnets: [10.0.0.0/24]}
      - name: v2
        vni: 101
        subnets:
          - 10.1.0.0/24
          - 10.0.0.128/25 #!
`,
		field: "tenants[0].vnets[1].subnets[1]",
		msg:   "overlaps 10.0.0.0/24 of VNET v1",
	},
	{
		name: "overlapping subnets inside one VNET",
		doc: `
tenants:
  - name: t1
    vnets:
      - name: v1
        vni: 100
        subnets:
          - fd00::/64
          - fd00::/48 #!
`,
		field: "tenants[0].vnets[0].subnets[1]",
		msg:   "overlaps fd00::/64",
	},
	{
		name: "duplicate CA",
		doc: `
hosts: [{name: h1, pa: 198.18.0.1}]
tenants:
  - name: t1
    vnets:
      - name: v1
        vni: 100
        subnets: [10.0.0.0/24]
        vms:
          - {name: a, mac: "02:00:00:00:00:01", ca: 10.0.0.1, host: h1}
          - name: b
            mac: "02:00:00:00:00:02"
            ca: [10.0.0.2,
              10.0.0.1] #!
            host: h1
`,
		field: "tenants[0].vnets[0].vms[1].ca[1]",
		msg:   "duplicate customer address 10.0.0.1 in VNET v1: already VM a's",
	},
	{
		name: "unknown encapsulation",
		doc: `
tenants:
  - name: t1
    vnets:
      - name: v1
        vni: 100
        encap: gre #!
        subnets: [10.0.0.0/24]
`,
		field: "tenants[0].vnets[0].encap",
		msg:   `encapsulation "gre" is not vxlan, geneve or nvgre`,
	},
	{
		name: "encapsulation in capitals",
		doc: `
tenants:
  - name: t1
    vnets:
      - {name: v1, vni: 100, subnets: [10.0.0.0/24], encap: Geneve} #!
`,
		field: "tenants[0].vnets[0].encap",
		msg:   `encapsulation "Geneve" is not vxlan, geneve or nvgre`,
	},
	{
		name: "encapsulation as a list",
		doc: `
tenants:
  - name: t1
    vnets:
      - name: v1
        vni: 100
        encap: [vxlan, geneve] #!
        subnets: [10.0.0.0/24]
`,
		field: "tenants[0].vnets[0].encap",
		msg:   "want a single value",
	},
	{
		name: "VNI collision across tenants",
		doc: `
tenants:
  - name: t1
    vnets:
      - {name: v1, vni: 100, subnets: [10.0.0.0/24]}
  - name: t2
    vnets:
      - name: v1
        vni: 100 #!
        subnets: [10.0.0.0/24]
`,
		field: "tenants[1].vnets[0].vni",
		msg:   "VNI 100 is already VNET v1 of tenant t1",
	},
	{
		name: "VNI out of range",
		doc: `
tenants:
  - name: t1
    vnets:
      - name: v1
        vni: 16777216 #!
        subnets: [10.0.0.0/24]
`,
		field: "tenants[0].vnets[0].vni",
		msg:   "outside 1..16777215",
	},
	{
		name: "mapping outside its VNET's subnets",
		doc: `
hosts: [{name: h1, pa: 198.18.0.1}]
tenants:
  - name: t1
    vnets:
      - name: v1
        vni: 100
        subnets: [10.0.0.0/24, "fd00::/64"]
        vms:
          - name: a
            mac: "02:00:00:00:00:01"
            ca:
              - 10.0.0.1
              - "fd00:1::1" #!
            host: h1
`,
		field: "tenants[0].vnets[0].vms[0].ca[1]",
		msg:   "outside the subnets of VNET v1",
	},
	{
		name: "unknown host",
		doc: `
hosts: [{name: h1, pa: 198.18.0.1}]
tenants:
  - name: t1
    vnets:
      - name: v1
        vni: 100
        subnets: [10.0.0.0/24]
        vms:
          - name: a
            mac: "02:00:00:00:00:01"
            ca: 10.0.0.1
            host: h9 #!
`,
		field: "tenants[0].vnets[0].vms[0].host",
		msg:   `unknown host "h9"`,
	},
	{
		name: "route to unknown VNET",
		doc: `
tenants:
  - name: t1
    vnets:
      - {name: v1, vni: 100, subnets: [10.0.0.0/24]}
    routes:
      - prefix: 10.5.0.0/16
        next_hop: {vnet: nope} #!
`,
		field: "tenants[0].routes[0].next_hop.vnet",
		msg:   `unknown VNET "nope" in tenant t1`,
	},
	{
		name: "route to unknown gateway",
		doc: `
tenants:
  - name: t1
    routes:
      - prefix: 0.0.0.0/0
        next_hop:
          gateway: gw9 #!
`,
		field: "tenants[0].routes[0].next_hop.gateway",
		msg:   `unknown gateway "gw9"`,
	},
	{
		name: "gateway dedicated to another tenant",
		doc: `
gateways: [{name: gw, pa: 198.18.0.100, tenant: t1}]
tenants:
  - name: t1
  - name: t2
    gateway_rules:
      - name: storage
        prefix: 10.200.0.0/24
        gateway: gw #!
`,
		field: "tenants[1].gateway_rules[0].gateway",
		msg:   "dedicated to tenant t1, not t2",
	},
	{
		name: "gateway of unknown tenant",
		doc: `
gateways:
  - name: gw
    pa: 198.18.0.100
    tenant: t7 #!
`,
		field: "gateways[0].tenant",
		msg:   `unknown tenant "t7"`,
	},
	{
		name: "invalid prefix",
		doc: `
tenants:
  - name: t1
    vnets:
      - name: v1
        vni: 100
        subnets:
          - 10.0.0.0/33 #!
`,
		field: "tenants[0].vnets[0].subnets[0]",
		msg:   `invalid prefix "10.0.0.0/33"`,
	},
	{
		name: "prefix with host bits",
		doc: `
tenants:
  - name: t1
    routes:
      - prefix: 10.1.2.3/16 #!
        next_hop: drop
`,
		field: "tenants[0].routes[0].prefix",
		msg:   "host bits set (did you mean 10.1.0.0/16?)",
	},
	{
		name: "route loop",
		doc: `
hosts: [{name: h1, pa: 198.18.0.1}]
tenants:
  - name: t1
    vnets:
      - name: v1
        vni: 100
        subnets: [10.0.0.0/24]
        vms: [{name: fw, mac: "02:00:00:00:00:01", ca: 10.0.0.1, host: h1}]
    routes:
      - prefix: 10.8.0.0/16
        next_hop: {via: 10.9.0.1} #!
      - prefix: 10.9.0.0/16
        next_hop: {via: 10.8.0.1}
`,
		field: "tenants[0].routes[0].next_hop.via",
		msg:   "route loop: 10.8.0.0/16 -> via 10.9.0.1 -> 10.9.0.0/16 -> via 10.8.0.1 -> 10.8.0.0/16",
	},
	{
		name: "next-hop address that is no VM",
		doc: `
tenants:
  - name: t1
    vnets:
      - {name: v1, vni: 100, subnets: [10.0.0.0/24]}
    routes:
      - prefix: 10.8.0.0/16
        next_hop: {via: 10.0.0.7} #!
`,
		field: "tenants[0].routes[0].next_hop.via",
		msg:   "next-hop address 10.0.0.7 is no VM's address in VNET v1",
	},
	{
		name: "duplicate route",
		doc: `
tenants:
  - name: t1
    routes:
      - {prefix: 10.8.0.0/16, next_hop: drop}
      - prefix: 10.8.0.0/16 #!
        next_hop: host
`,
		field: "tenants[0].routes[1].prefix",
		msg:   "duplicate route 10.8.0.0/16",
	},
	{
		name: "bad next hop word",
		doc: `
tenants:
  - name: t1
    routes:
      - prefix: 10.8.0.0/16
        next_hop: blackhole #!
`,
		field: "tenants[0].routes[0].next_hop",
		msg:   `next hop "blackhole" is not drop, host`,
	},
	{
		name: "shadow for unknown VM",
		doc: `
hosts: [{name: h1, pa: 198.18.0.1}]
shadows:
  - vm: ghost #!
    host: h1
    generation: 2
`,
		field: "shadows[0].vm",
		msg:   `shadow mapping for unknown VM "ghost"`,
	},
	{
		name: "shadow on the VM's own host",
		doc: `
hosts: [{name: h1, pa: 198.18.0.1}]
tenants:
  - name: t1
    vnets:
      - name: v1
        vni: 100
        subnets: [10.0.0.0/24]
        vms: [{name: a, mac: "02:00:00:00:00:01", ca: 10.0.0.1, host: h1}]
shadows:
  - vm: a
    host: h1 #!
    generation: 2
`,
		field: "shadows[0].host",
		msg:   "already runs on h1",
	},
	{
		name: "activation of a generation the VM does not have",
		doc: `
hosts: [{name: h1, pa: 198.18.0.1}, {name: h2, pa: 198.18.0.2}]
tenants:
  - name: t1
    vnets:
      - name: v1
        vni: 100
        subnets: [10.0.0.0/24]
        vms: [{name: a, mac: "02:00:00:00:00:01", ca: 10.0.0.1, host: h1}]
shadows: [{vm: a, host: h2, generation: 2}]
activations:
  - vm: a
    generation: 3 #!
`,
		field: "activations[0].generation",
		msg:   "not 3",
	},
	{
		name: "unknown field",
		doc: `
hosts:
  - name: h1
    pa: 198.18.0.1
    rack: 7 #!
`,
		field: "hosts[0].rack",
		msg:   `unknown field "rack"`,
	},
	{
		name: "field given twice",
		doc: `
hosts:
  - name: h1
    pa: 198.18.0.1
    pa: 198.18.0.2 #!
`,
		field: "hosts[0].pa",
		msg:   "given twice",
	},
	{
		name: "duplicate provider address",
		doc: `
hosts:
  - {name: h1, pa: 198.18.0.1}
  - name: h2
    pa: 198.18.0.1 #!
`,
		field: "hosts[1].pa",
		msg:   "already host h1's",
	},
	{
		name: "invalid address",
		doc: `
hosts:
  - name: h1
    pa: 198.18.0.300 #!
`,
		field: "hosts[0].pa",
		msg:   `invalid address "198.18.0.300"`,
	},
	{
		name: "missing field",
		doc: `
hosts:
  - pa: 198.18.0.1 #!
`,
		field: "hosts[0].name",
		msg:   `missing field "name"`,
	},
	{
		name: "invalid MAC",
		doc: `
hosts: [{name: h1, pa: 198.18.0.1}]
tenants:
  - name: t1
    vnets:
      - name: v1
        vni: 100
        subnets: [10.0.0.0/24]
        vms:
          - name: a
            mac: "02:00:00:00:00" #!
            ca: 10.0.0.1
            host: h1
`,
		field: "tenants[0].vnets[0].vms[0].mac",
		msg:   "invalid MAC",
	},
	{
		name: "multicast MAC",
		doc: `
hosts: [{name: h1, pa: 198.18.0.1}]
tenants:
  - name: t1
    vnets:
      - name: v1
        vni: 100
        subnets: [10.0.0.0/24]
        vms:
          - name: a
            mac: "01:00:5e:00:00:01" #!
            ca: 10.0.0.1
            host: h1
`,
		field: "tenants[0].vnets[0].vms[0].mac",
		msg:   "non-zero unicast MAC",
	},
	{
		name: "duplicate VM name",
		doc: `
hosts: [{name: h1, pa: 198.18.0.1}]
tenants:
  - name: t1
    vnets:
      - name: v1
        vni: 100
        subnets: [10.0.0.0/24]
        vms:
          - {name: a, mac: "02:00:00:00:00:01", ca: 10.0.0.1, host: h1}
  - name: t2
    vnets:
      - name: v1
        vni: 200
        subnets: [10.0.0.0/24]
        vms:
          - name: a #!
            mac: "02:00:00:00:00:01"
            ca: 10.0.0.1
            host: h1
`,
		field: "tenants[1].vnets[0].vms[0].name",
		msg:   `duplicate VM "a"`,
	},
	{
		name: "ports without a port protocol",
		doc: `
tenants:
  - name: t1
    acls:
      - id: x
        priority: 1
        direction: in
        protocol: icmp
        dst_ports: [22] #!
        action: deny
`,
		field: "tenants[0].acls[0].dst_ports",
		msg:   "ports need protocol tcp, udp or sctp",
	},
	{
		name: "empty port range",
		doc: `
tenants:
  - name: t1
    acls:
      - id: x
        priority: 1
        direction: in
        protocol: tcp
        dst_ports:
          - 22
          - 90-80 #!
        action: deny
`,
		field: "tenants[0].acls[0].dst_ports[1]",
		msg:   "port range 90-80 is empty",
	},
	{
		name: "bad direction",
		doc: `
tenants:
  - name: t1
    acls:
      - id: x
        priority: 1
        direction: sideways #!
        action: deny
`,
		field: "tenants[0].acls[0].direction",
		msg:   `direction "sideways" is not in or out`,
	},
	{
		name: "ACL scoped to unknown VNET",
		doc: `
tenants:
  - name: t1
    acls:
      - id: x
        priority: 1
        direction: in
        vnet: v9 #!
        action: deny
`,
		field: "tenants[0].acls[0].vnet",
		msg:   `unknown VNET "v9"`,
	},
	{
		name: "duplicate ACL id",
		doc: `
tenants:
  - name: t1
    acls:
      - {id: x, priority: 1, direction: in, action: deny}
      - id: x #!
        priority: 2
        direction: out
        action: allow
`,
		field: "tenants[0].acls[1].id",
		msg:   `duplicate ACL "x"`,
	},
	{
		name: "NAT prefix of another length",
		doc: `
gateways: [{name: gw, pa: 198.18.0.100}]
tenants:
  - name: t1
    gateway_rules:
      - name: s
        prefix: 10.200.0.0/24
        gateway: gw
        nat: 198.51.100.0/25 #!
`,
		field: "tenants[0].gateway_rules[0].nat",
		msg:   "must have the family and length of 10.200.0.0/24",
	},
	{
		name: "gateway rule prefix already routed",
		doc: `
gateways: [{name: gw, pa: 198.18.0.100}]
tenants:
  - name: t1
    routes: [{prefix: 10.200.0.0/24, next_hop: drop}]
    gateway_rules:
      - name: s
        prefix: 10.200.0.0/24 #!
        gateway: gw
`,
		field: "tenants[0].gateway_rules[0].prefix",
		msg:   "already routed",
	},
	{
		name: "wrong shape",
		doc: `
hosts:
  name: h1 #!
`,
		field: "hosts",
		msg:   "want a list",
	},
	{
		name: "yaml syntax error",
		doc: `
hosts:
  - name: h1
    pa: 198.18.0.1
      rack: 7 #!
`,
		field: "",
		msg:   "mapping values are not allowed",
	},
}

func markedLine(t *testing.T, doc string) int {
	t.Helper()
	for i, l := range strings.Split(doc, "\n") {
		if strings.Contains(l, "#!") {
			return i + 1
		}
	}
	t.Fatal("document has no #! marker")
	return 0
}

func TestChecks(t *testing.T) {
	for _, tc := range checkCases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse("bad.yaml", []byte(tc.doc))
			if err == nil {
				t.Fatalf("Parse accepted the document")
			}
			if s != nil {
				t.Errorf("Parse returned a State along with errors")
			}
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error %T %v is not an ErrorList", err, err)
			}
			e := list[0]
			want := markedLine(t, tc.doc)
			if e.File != "bad.yaml" || e.Line != want || e.Field != tc.field || !strings.Contains(e.Msg, tc.msg) {
				t.Errorf("got %s (file %q line %d field %q)\nwant bad.yaml line %d field %q msg containing %q\nall: %v",
					e, e.File, e.Line, e.Field, want, tc.field, tc.msg, err)
			}
			if len(list) != 1 {
				t.Errorf("want exactly one error, got %v", err)
			}
			var le *LoadError
			if !errors.As(err, &le) || le != e {
				t.Errorf("errors.As does not find the first *LoadError")
			}
			if !strings.HasPrefix(e.Error(), "bad.yaml:") {
				t.Errorf("Error() = %q, want it to start with file:line", e.Error())
			}
		})
	}
}

func TestChecksReportEveryError(t *testing.T) {
	doc := `
hosts:
  - {name: h1, pa: 198.18.0.1}
  - {name: h1, pa: 198.18.0.2}
tenants:
  - name: t1
    vnets:
      - {name: v1, vni: 0, subnets: [10.0.0.0/24]}
`
	_, err := Parse("x.yaml", []byte(doc))
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("got %v", err)
	}
	if len(list) != 2 || list[0].Line != 4 || list[1].Line != 8 {
		t.Fatalf("want errors on lines 4 and 8 in order, got %v", err)
	}
	if got := list.Error(); !strings.Contains(got, "2 errors:") || !strings.Contains(got, "x.yaml:4: hosts[1].name: duplicate host") {
		t.Errorf("ErrorList.Error() = %q", got)
	}
}

// The Go API runs the same checks; fields are named by the Builder's lists.
func TestBuilderChecks(t *testing.T) {
	b := NewBuilder()
	b.AddHost(Host{Name: "h1", PA: netip.MustParseAddr("198.18.0.1")})
	b.AddTenant(Tenant{Name: "t1"})
	b.AddTenant(Tenant{Name: "t2"})
	b.AddVNET(VNET{Tenant: "t1", Name: "v1", VNI: 7, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}})
	b.AddVNET(VNET{Tenant: "t2", Name: "v1", VNI: 7, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}})
	b.AddVM(VM{Name: "a", Tenant: "t1", VNET: "v1", MAC: MAC{2, 0, 0, 0, 0, 1}, Host: "h1",
		CAs: []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.1.1")}})
	b.AddShadow(Shadow{VM: "zz", Host: "h1", Generation: 2})
	_, err := b.Build()
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("got %v", err)
	}
	want := []string{
		"vnets[1].vni: VNI 7 is already VNET v1 of tenant t1",
		"vms[0].ca[1]: customer address 10.0.1.1 is outside the subnets of VNET v1",
		`shadows[0].vm: shadow mapping for unknown VM "zz"`,
	}
	if len(list) != len(want) {
		t.Fatalf("got %v", err)
	}
	for i, w := range want {
		if list[i].Error() != w || list[i].Line != 0 || list[i].File != "" {
			t.Errorf("error %d = %q (line %d), want %q", i, list[i].Error(), list[i].Line, w)
		}
	}
}

func TestOverlappingTenantsAreFine(t *testing.T) {
	s := mustLoadExample(t)
	blue, ok1 := s.Lookup(1001, netip.MustParseAddr("10.0.0.10"))
	red, ok2 := s.Lookup(2001, netip.MustParseAddr("10.0.0.10"))
	if !ok1 || !ok2 {
		t.Fatal("both tenants' 10.0.0.10 must be mapped")
	}
	if blue.VM != "blue-web-1" || red.VM != "red-app-1" || blue.Tenant != "blue" || red.Tenant != "red" {
		t.Errorf("got %+v and %+v", blue, red)
	}
	if blue.PA != netip.MustParseAddr("198.18.0.1") || red.PA != netip.MustParseAddr("198.18.0.2") {
		t.Errorf("PAs: %s, %s", blue.PA, red.PA)
	}
}

// Aliases cannot make loading cost more than the document's size.
func TestAliasExpansionIsBounded(t *testing.T) {
	doc := `
hosts: [{name: h, pa: 198.18.0.1}]
tenants:
  - &t
    name: t
    vnets:
      - &v
        name: v
        vni: 5
        subnets: [10.0.0.0/24]
        vms:
          - &m {name: m, mac: "02:00:00:00:00:01", host: h, ca: [&c 10.0.0.1, *c, *c, *c, *c, *c, *c, *c, *c, *c]}
          - *m
          - *m
          - *m
          - *m
          - *m
          - *m
          - *m
      - *v
      - *v
      - *v
      - *v
      - *v
      - *v
      - *v
  - *t
  - *t
  - *t
  - *t
  - *t
  - *t
  - *t
`
	_, err := Parse("bomb.yaml", []byte(doc))
	var list ErrorList
	if !errors.As(err, &list) || len(list) != 1 || !strings.Contains(list[0].Msg, "aliases expand") {
		t.Fatalf("got %v", err)
	}
}

// Many subnets are checked for overlaps without comparing every pair, and
// still every overlapping one is found.
func TestManySubnets(t *testing.T) {
	b := NewBuilder()
	b.AddTenant(Tenant{Name: "t"})
	var subnets []netip.Prefix
	for i := range 20000 {
		subnets = append(subnets, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24))
	}
	// Three overlaps: a supernet, a duplicate, and a subnet of a /24.
	subnets = append(subnets, netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("10.2.3.0/24"), netip.MustParsePrefix("10.3.4.128/25"))
	b.AddVNET(VNET{Tenant: "t", Name: "v", VNI: 1, Subnets: subnets})
	b.AddVNET(VNET{Tenant: "t", Name: "w", VNI: 2, Subnets: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16")}})
	_, err := b.Build()
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("got %v", err)
	}
	var fields []string
	for _, e := range list {
		fields = append(fields, e.Field)
	}
	want := []string{"vnets[0].subnets[20000]", "vnets[0].subnets[20001]", "vnets[0].subnets[20002]"}
	// 10.20.0.0/16 holds 256 of v's /24s but comes later: it is blamed too.
	want = append(want, "vnets[1].subnets[0]")
	if strings.Join(fields, " ") != strings.Join(want, " ") {
		t.Errorf("blamed %v, want %v\n%v", fields, want, err)
	}
}

// Mappings are inserted in batches; duplicates must still be found in
// document order across batch boundaries, and a rejected VM must not
// leave its name pointing at nothing.
func TestDuplicatesAcrossBatches(t *testing.T) {
	b := NewBuilder()
	b.AddHost(Host{Name: "h", PA: netip.MustParseAddr("198.18.0.1")})
	b.AddTenant(Tenant{Name: "t"})
	b.AddVNET(VNET{Tenant: "t", Name: "v", VNI: 9, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}})
	ca := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}) }
	for i := range 100 {
		cas := []netip.Addr{ca(3 * i), ca(3*i + 1), ca(3*i + 2)}
		switch i {
		case 50:
			cas[1] = ca(31) // VM 10's second CA
		case 70:
			cas[2] = cas[0]
		}
		b.AddVM(VM{Name: "vm" + strconv.Itoa(i), Tenant: "t", VNET: "v", Host: "h", MAC: MAC{2, 0, 0, 0, 0, byte(i + 1)}, CAs: cas})
	}
	b.AddVM(VM{Name: "vm99", Tenant: "t", VNET: "v", Host: "h", MAC: MAC{2, 0, 0, 0, 1, 1}, CAs: []netip.Addr{ca(1000)}})
	b.AddVM(VM{Name: "late", Tenant: "t", VNET: "nope", Host: "h", MAC: MAC{2, 0, 0, 0, 1, 2}, CAs: []netip.Addr{ca(1001)}})
	b.AddShadow(Shadow{VM: "late", Host: "h", Generation: 2})
	b.AddShadow(Shadow{VM: "vm99", Host: "h", Generation: 2})
	_, err := b.Build()
	want := []string{
		"vms[50].ca[1]: duplicate customer address 10.0.0.31 in VNET v: already VM vm10's",
		"vms[70].ca[2]: customer address 10.0.0.210 is listed twice",
		`vms[100].name: duplicate VM "vm99"`,
		`vms[101].vnet: unknown VNET "nope" in tenant t`,
		`shadows[0].vm: shadow mapping for unknown VM "late"`,
		"shadows[1].host: VM vm99 already runs on h",
	}
	var list ErrorList
	if !errors.As(err, &list) || len(list) != len(want) {
		t.Fatalf("got %v", err)
	}
	for i, w := range want {
		if list[i].Error() != w {
			t.Errorf("error %d = %q, want %q", i, list[i].Error(), w)
		}
	}
}

// TestLookupPlaceEveryExample: in every example document, with shadows or
// without (LookupPlace then finds the host without reading the VM),
// LookupPlace answers as LookupVM does for every mapping.
func TestLookupPlaceEveryExample(t *testing.T) {
	files, err := filepath.Glob("../examples/policies/*.yaml")
	if err != nil || len(files) < 2 {
		t.Fatalf("examples: %v %v", files, err)
	}
	withShadows, without := 0, 0
	for _, f := range files {
		st, err := LoadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Shadows()) > 0 {
			withShadows++
		} else {
			without++
		}
		n := 0
		for m := range st.Mappings() {
			want, wvi, _ := st.LookupVM(m.VNI, m.CA)
			vi, mac, host, pa, ok := st.LookupPlace(m.VNI, m.CA)
			if !ok || vi != wvi || mac != want.MAC || host != want.Host || pa != want.PA {
				t.Errorf("%s: LookupPlace(%d, %s) = %d, %s, %s, %s, %v; want %d, %s, %s, %s", f, m.VNI, m.CA, vi, mac, host, pa, ok, wvi, want.MAC, want.Host, want.PA)
			}
			n++
		}
		if n == 0 {
			t.Errorf("%s has no mappings", f)
		}
	}
	if withShadows == 0 || without == 0 {
		t.Errorf("%d examples with shadows, %d without: the test needs both", withShadows, without)
	}
}

// TestLookupPlace: LookupPlace answers as LookupVM does (VM index, MAC,
// current host and PA), before and after a shadow's activation moves a
// VM, and not at all for an address nobody has. MappingSlot gives the
// address of a slot of the table at or before the mapping's own (linear
// probing goes forward from it).
func TestLookupPlace(t *testing.T) {
	s := mustLoadExample(t)
	act, err := s.Activate("blue-web-2", 2)
	if err != nil {
		t.Fatal(err)
	}
	moved := 0
	for _, st := range []*State{s, act} {
		n := 0
		for m := range s.Mappings() {
			if a, sz := st.MappingSlot(m.VNI, m.CA); !slotOf(st, a, sz, m.VNI, m.CA) {
				t.Errorf("MappingSlot(%d, %s) = %#x, %d: not where the lookup starts", m.VNI, m.CA, a, sz)
			}
			want, wvi, _ := st.LookupVM(m.VNI, m.CA)
			vi, mac, host, pa, ok := st.LookupPlace(m.VNI, m.CA)
			if !ok || vi != wvi || mac != want.MAC || host != want.Host || pa != want.PA {
				t.Errorf("LookupPlace(%d, %s) = %d, %s, %s, %s, %v; want %d, %s, %s, %s", m.VNI, m.CA, vi, mac, host, pa, ok, wvi, want.MAC, want.Host, want.PA)
			}
			if st == act && host != m.Host {
				moved++
			}
			n++
		}
		if n == 0 {
			t.Fatal("the example has no mappings")
		}
		if vi, _, _, _, ok := st.LookupPlace(1001, netip.MustParseAddr("10.0.99.99")); ok || vi != -1 {
			t.Errorf("an unmapped address: index %d, ok %v", vi, ok)
		}
	}
	if moved == 0 {
		t.Error("the activation moved no mapping: the shadow case is not tested")
	}
}

// slotOf reports whether a is the address of a slot of st's table, of
// size sz, from which probing forward reaches the mapping of (vni, ca).
func slotOf(st *State, a, sz uintptr, vni uint32, ca netip.Addr) bool {
	es := st.table.entries
	base := uintptr(unsafe.Pointer(&es[0]))
	if sz != unsafe.Sizeof(es[0]) || a < base || (a-base)%sz != 0 || int((a-base)/sz) >= len(es) {
		return false
	}
	want, ok := st.table.lookup(vni, ca)
	for i, n := int((a-base)/sz), 0; ok && n < len(es); i, n = (i+1)%len(es), n+1 {
		if i == want {
			return true
		}
		if !es[i].used {
			return false
		}
	}
	return false
}

// TestLookupVM: LookupVM answers as Lookup does, with the index of the
// mapping's VM in VMs(), and -1 for an address nobody has.
func TestLookupVM(t *testing.T) {
	s := mustLoadExample(t)
	n := 0
	for m := range s.Mappings() {
		got, vi, ok := s.LookupVM(m.VNI, m.CA)
		want, _ := s.Lookup(m.VNI, m.CA)
		if !ok || got != want || vi < 0 || vi >= len(s.VMs()) || s.VMs()[vi].Name != m.VM {
			t.Errorf("LookupVM(%d, %s) = %+v, %d, %v; want %+v of VM %s", m.VNI, m.CA, got, vi, ok, want, m.VM)
		}
		n++
	}
	if n == 0 {
		t.Fatal("the example has no mappings")
	}
	if _, vi, ok := s.LookupVM(1001, netip.MustParseAddr("10.0.99.99")); ok || vi != -1 {
		t.Errorf("an unmapped address: index %d, ok %v", vi, ok)
	}
}

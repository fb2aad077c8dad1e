package policy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

const relocKey = "6b0c6f8e1d2a3b4c5d6e7f80112233445566778899aabbccddeeff0011223344"

// relocatedDoc is a good policy with one relocated subnet; relocatedCases
// break one field of it each (the broken line carries "#!").
const relocatedDoc = `
hosts:
  - {name: host-a, pa: 198.18.0.1}
  - {name: anchor, pa: 198.18.0.9}
gateways:
  - {name: gw, pa: 198.18.0.100}
tenants:
  - name: blue
    vnets:
      - name: web
        vni: 1001
        subnets: [10.0.0.0/24, 10.0.1.0/24]
        vms:
          - {name: vm-a, mac: 02:00:00:00:00:01, ca: 10.0.0.10, host: host-a}
      - {name: db, vni: 1002, subnets: [10.0.2.0/24]}
relocated:
  - name: branch
    tenant: blue
    vnet: web
    prefix: 10.0.1.0/24
    gateway: 10.0.1.1
    pool: 10.0.1.10-10.0.1.19
    anchor: anchor
    tether:
      name: branch-1
      key: ` + relocKey + `
      keepalive: 25s
      probe: 2s
`

var relocatedCases = []struct {
	name, old, new, field, msg string
}{
	{"unknown tenant", "tenant: blue", "tenant: red #!", "relocated[0].tenant", `unknown tenant "red"`},
	{"unknown VNET", "vnet: web\n    prefix", "vnet: app #!\n    prefix", "relocated[0].vnet", `unknown VNET "app" in tenant blue`},
	{"prefix outside the VNET", "prefix: 10.0.1.0/24", "prefix: 10.0.2.0/24 #!", "relocated[0].prefix", "not inside a subnet of VNET web"},
	{"prefix not canonical", "prefix: 10.0.1.0/24", "prefix: 10.0.1.5/24 #!", "relocated[0].prefix", "host bits set"},
	{"prefix IPv6", "prefix: 10.0.1.0/24", "prefix: fd00::/64 #!", "relocated[0].prefix", "only IPv4"},
	{"prefix too small", "prefix: 10.0.1.0/24\n    gateway: 10.0.1.1\n    pool: 10.0.1.10-10.0.1.19", "prefix: 10.0.1.0/31 #!", "relocated[0].prefix", "leaves no address"},
	{"prefix invalid", "prefix: 10.0.1.0/24", "prefix: ten #!", "relocated[0].prefix", "invalid prefix"},
	{"gateway outside", "gateway: 10.0.1.1", "gateway: 10.0.0.1 #!", "relocated[0].gateway", "not a host address of 10.0.1.0/24"},
	{"pool outside", "pool: 10.0.1.10-10.0.1.19", "pool: 10.0.1.10-10.0.2.19 #!", "relocated[0].pool", "not inside the host addresses"},
	{"pool reversed", "pool: 10.0.1.10-10.0.1.19", "pool: 10.0.1.19-10.0.1.10 #!", "relocated[0].pool", "comes before the first"},
	{"pool holds the gateway", "pool: 10.0.1.10-10.0.1.19", "pool: 10.0.1.1-10.0.1.19 #!", "relocated[0].pool", "holds the gateway"},
	{"pool malformed", "pool: 10.0.1.10-10.0.1.19", "pool: 10.0.1.10 #!", "relocated[0].pool", "want FIRST-LAST"},
	{"anchor unknown", "anchor: anchor", "anchor: nowhere #!", "relocated[0].anchor", `unknown host "nowhere"`},
	{"anchor a gateway", "anchor: anchor", "anchor: gw #!", "relocated[0].anchor", "is a virtualization gateway"},
	{"anchor missing", "    anchor: anchor\n", "", "relocated[0].anchor", `missing field "anchor"`},
	{"tether missing", "", "", "relocated[0].tether", `missing field "tether"`},
	{"tether key bad", "key: " + relocKey, "key: beef #!", "relocated[0].tether.key", "invalid public key"},
	{"tether key and file", "key: " + relocKey, "key: " + relocKey + "\n      key_file: t.pub #!", "relocated[0].tether.key_file", "not both"},
	{"tether name empty", "name: branch-1", "name: '' #!", "relocated[0].tether.name", "must not be empty"},
	{"tether field unknown", "probe: 2s", "probe: 2s\n      port: 51820 #!", "relocated[0].tether.port", "unknown field"},
	{"keepalive bad", "keepalive: 25s", "keepalive: 10ms #!", "relocated[0].tether.keepalive", "at least 1s"},
	{"probe longer than keepalive", "probe: 2s", "probe: 30s #!", "relocated[0].tether.probe", "longer than the keepalive"},
	{"VM inside the relocated prefix", "", "", "tenants[0].vnets[0].vms[1].ca[0]", "inside relocated subnet branch"},
	{"overlapping relocated subnets", "", "", "relocated[1].prefix", "overlaps relocated subnet branch"},
	{"duplicate name", "", "", "relocated[1].name", `duplicate relocated subnet "branch"`},
}

func relocatedCaseDoc(name, old, new string) string {
	doc := relocatedDoc
	switch name {
	case "tether missing":
		doc = strings.Replace(doc, "    tether:\n      name: branch-1\n      key: "+relocKey+"\n      keepalive: 25s\n      probe: 2s\n", "", 1)
		return strings.Replace(doc, "  - name: branch\n", "  - name: branch #!\n", 1)
	case "VM inside the relocated prefix":
		return strings.Replace(doc, "host: host-a}\n", "host: host-a}\n          - {name: vm-b, mac: 02:00:00:00:00:02, ca: 10.0.1.1, host: host-a} #!\n", 1)
	case "overlapping relocated subnets", "duplicate name":
		second := "  - name: other\n    tenant: blue\n    vnet: web\n    prefix: 10.0.1.128/25 #!\n    anchor: anchor\n    tether: {name: branch-2, key: " + relocKey + "}\n"
		if name == "duplicate name" {
			second = "  - name: branch #!\n    tenant: blue\n    vnet: db\n    prefix: 10.0.2.0/24\n    anchor: anchor\n    tether: {name: branch-2, key_file: /etc/nicpath/branch-2.pub}\n"
		}
		return doc + second
	}
	if old == "    anchor: anchor\n" {
		return strings.Replace(strings.Replace(doc, old, "", 1), "  - name: branch\n", "  - name: branch #!\n", 1)
	}
	return strings.Replace(doc, old, new, 1)
}

// TestRelocatedChecks: each bad field of a relocated subnet is refused at
// its own line and field, with nothing built.
func TestRelocatedChecks(t *testing.T) {
	if _, err := Parse("good.yaml", []byte(relocatedDoc)); err != nil {
		t.Fatalf("the good document: %v", err)
	}
	for _, tc := range relocatedCases {
		t.Run(tc.name, func(t *testing.T) {
			doc := relocatedCaseDoc(tc.name, tc.old, tc.new)
			if doc == relocatedDoc {
				t.Fatal("the case changes nothing")
			}
			s, err := Parse("bad.yaml", []byte(doc))
			if err == nil || s != nil {
				t.Fatalf("accepted:\n%s", doc)
			}
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error %T %v is not an ErrorList", err, err)
			}
			e, want := list[0], markedLine(t, doc)
			if e.File != "bad.yaml" || e.Line != want || e.Field != tc.field || !strings.Contains(e.Msg, tc.msg) {
				t.Errorf("got %v\nwant line %d field %q msg containing %q", err, want, tc.field, tc.msg)
			}
			if len(list) != 1 {
				t.Errorf("want one error, got %v", err)
			}
			if !checkStream(t, []byte(doc)) {
				t.Error("the streaming reader does not read the document")
			}
		})
	}
}

// The streaming reader reads relocated subnets as yaml.v3 does, into the
// same State.
func TestRelocatedStreamed(t *testing.T) {
	if !checkStream(t, []byte(relocatedDoc)) {
		t.Fatal("the streaming reader does not read the document")
	}
	s, err := LoadReader("p.yaml", strings.NewReader(relocatedDoc))
	if err != nil {
		t.Fatal(err)
	}
	if r := s.Relocated(); len(r) != 1 || r[0].PoolLast != netip.MustParseAddr("10.0.1.19") || len(s.VMs()) != 11 {
		t.Fatalf("%+v, %d VMs", r, len(s.VMs()))
	}
}

// TestRelocatedMappings: a relocated subnet's pool is compiled into one
// mapping per address to the anchor's PA, which every host's evaluator
// uses; the document round-trips without them written as VMs.
func TestRelocatedMappings(t *testing.T) {
	s, err := Parse("p.yaml", []byte(relocatedDoc))
	if err != nil {
		t.Fatal(err)
	}
	rs := s.Relocated()
	if len(rs) != 1 {
		t.Fatalf("relocated: %v", rs)
	}
	r := rs[0]
	if r.Gateway != netip.MustParseAddr("10.0.1.1") || r.PoolFirst != netip.MustParseAddr("10.0.1.10") || r.PoolLast != netip.MustParseAddr("10.0.1.19") ||
		r.Anchor != "anchor" || r.Tether.Name != "branch-1" || r.Tether.Key.String() != relocKey || r.Tether.Keepalive != 25*time.Second || r.Tether.Probe != 2*time.Second {
		t.Fatalf("relocated subnet: %+v", r)
	}
	n := 0
	for a := r.PoolFirst; !r.PoolLast.Less(a); a = a.Next() {
		m, ok := s.Lookup(1001, a)
		if !ok || m.Host != "anchor" || m.PA != netip.MustParseAddr("198.18.0.9") || m.MAC != RelocatedMAC(a) || m.VM != RelocatedVMName("branch", a) {
			t.Fatalf("mapping of %s: %+v %v", a, m, ok)
		}
		if !s.IsRelocatedVM(m.VM) {
			t.Errorf("%s is not a relocated VM", m.VM)
		}
		n++
	}
	if n != 10 {
		t.Fatalf("%d pool addresses", n)
	}
	for _, a := range []string{"10.0.1.1", "10.0.1.9", "10.0.1.20"} {
		if m, ok := s.Lookup(1001, netip.MustParseAddr(a)); ok {
			t.Errorf("%s outside the pool has a mapping: %+v", a, m)
		}
	}
	if s.IsRelocatedVM("vm-a") {
		t.Error("vm-a is taken for a relocated VM")
	}
	// host-a sends to a pool address encapsulated to the anchor.
	vm, _ := s.VM("vm-a")
	p := Packet{SrcMAC: vm.MAC, DstMAC: s.RouterMAC(), Src: vm.CAs[0], Dst: netip.MustParseAddr("10.0.1.12"), EtherType: EtherTypeIPv4, Protocol: ProtoUDP, TTL: 64}
	v := s.Evaluate("host-a", FromVM("vm-a"), p)
	if v.Action != Encap || v.PA != netip.MustParseAddr("198.18.0.9") || v.VNI != 1001 || v.Host != "anchor" {
		t.Fatalf("verdict to a relocated address: %v", v)
	}

	out, err := Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "branch-10-0-1-") {
		t.Errorf("the pool is written as VMs:\n%s", out)
	}
	s2, err := Parse("again.yaml", out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if d := Diff(s, s2); !d.Empty() {
		t.Errorf("round trip changed the state: %+v", d)
	}
	if r2, _ := s2.RelocatedSubnet("branch"); r2 != r {
		t.Errorf("round trip: %+v, want %+v", r2, r)
	}
	// A tether's new key alone is a change.
	s4, err := Parse("key.yaml", []byte(strings.Replace(relocatedDoc, relocKey, strings.Repeat("ab", 32), 1)))
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(s, s4); len(d.Relocated) != 1 || d.Relocated[0].Kind != Changed || len(d.Mappings) != 0 {
		t.Errorf("a new tether key: %+v", d)
	}
	s3, err := s.Builder().Build()
	if err != nil {
		t.Fatal(err)
	}
	if len(s3.VMs()) != len(s.VMs()) || len(s3.Relocated()) != 1 {
		t.Errorf("State.Builder: %d VMs (want %d), %d relocated", len(s3.VMs()), len(s.VMs()), len(s3.Relocated()))
	}
}

// TestRelocatedDefaults: without gateway and pool, the gateway is the
// first host address and the pool the host addresses after it.
func TestRelocatedDefaults(t *testing.T) {
	b := NewBuilder()
	b.AddHost(Host{Name: "anchor", PA: netip.MustParseAddr("198.18.0.9")})
	b.AddTenant(Tenant{Name: "t"})
	b.AddVNET(VNET{Tenant: "t", Name: "v", VNI: 5, Subnets: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}})
	b.AddRelocated(Relocated{Name: "r", Tenant: "t", VNET: "v", Prefix: netip.MustParsePrefix("10.1.2.0/28"), Anchor: "anchor", Tether: Tether{Name: "x", KeyFile: "x.pub"}})
	s, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	r := s.Relocated()[0]
	if r.Gateway != netip.MustParseAddr("10.1.2.1") || r.PoolFirst != netip.MustParseAddr("10.1.2.2") || r.PoolLast != netip.MustParseAddr("10.1.2.14") || len(s.VMs()) != 13 {
		t.Fatalf("%+v, %d VMs", r, len(s.VMs()))
	}
	b.AddRelocated(Relocated{Name: "r2", Tenant: "t", VNET: "v", Prefix: netip.MustParsePrefix("10.1.2.0/25"), Anchor: "anchor", Tether: Tether{Name: "y", KeyFile: "y.pub"}})
	_, err = b.Build()
	if err == nil || !strings.Contains(err.Error(), "relocated[1].prefix: 10.1.2.0/25 overlaps relocated subnet r") {
		t.Fatalf("overlap through the Go API: %v", err)
	}
}

// addRelocatedSeeds adds the relocated-subnet documents, good and bad, to
// a fuzz target's seeds.
func addRelocatedSeeds(f *testing.F) {
	f.Add([]byte(relocatedDoc))
	for _, tc := range relocatedCases {
		f.Add([]byte(relocatedCaseDoc(tc.name, tc.old, tc.new)))
	}
}

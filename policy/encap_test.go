package policy

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// encapDoc has one VNET of each kind (and one that does not say), on two
// hosts, with a gateway.
const encapDoc = `
hosts:
  - {name: host-a, pa: 198.18.0.1}
  - {name: host-b, pa: 198.18.0.2}
gateways:
  - {name: gw, pa: 198.18.0.100}
tenants:
  - name: blue
    vnets:
      - name: plain
        vni: 100
        subnets: [10.0.0.0/24]
        vms:
          - {name: p1, mac: "02:00:00:00:00:01", ca: 10.0.0.10, host: host-a}
          - {name: p2, mac: "02:00:00:00:00:02", ca: 10.0.0.11, host: host-b}
      - name: gen
        vni: 101
        encap: geneve
        subnets: [10.0.1.0/24]
        vms:
          - {name: g1, mac: "02:00:00:00:01:01", ca: 10.0.1.10, host: host-a}
          - {name: g2, mac: "02:00:00:00:01:02", ca: 10.0.1.11, host: host-b}
      - name: gre
        vni: 102
        encap: nvgre
        subnets: [10.0.2.0/24]
        vms:
          - {name: n1, mac: "02:00:00:00:02:01", ca: 10.0.2.10, host: host-a}
          - {name: n2, mac: "02:00:00:00:02:02", ca: 10.0.2.11, host: host-b}
      - {name: vx, vni: 103, encap: vxlan, subnets: [10.0.3.0/24]}
    routes:
      - {prefix: 0.0.0.0/0, next_hop: {gateway: gw}}
`

func mustParse(t *testing.T, doc string) *State {
	t.Helper()
	s, err := Parse("encap.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestEncapParsed(t *testing.T) {
	s := mustParse(t, encapDoc)
	for name, want := range map[string]EncapKind{"plain": EncapVXLAN, "gen": EncapGeneve, "gre": EncapNVGRE, "vx": EncapVXLAN} {
		v, ok := s.VNET("blue", name)
		if !ok || v.Encap != want {
			t.Errorf("vnet %s: encap %v (found %v), want %v", name, v.Encap, ok, want)
		}
	}
	// Both readers agree on it (encapDoc is in the streaming subset, and
	// yaml.v3 reads it whole).
	if !checkStream(t, []byte(encapDoc)) {
		t.Fatal("the encapsulation document is not streamed")
	}
	sb, err := streamBuilder("a.yaml", strings.NewReader(encapDoc))
	if err != nil {
		t.Fatal(err)
	}
	nb, err := nodeBuilder("a.yaml", []byte(encapDoc))
	if err != nil {
		t.Fatal(err)
	}
	s1, err1 := sb.Build()
	s2, err2 := nb.Build()
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if c := Diff(s1, s2); !c.Empty() {
		t.Fatalf("the readers disagree: %+v", c.VNETs)
	}
}

func TestEncapNames(t *testing.T) {
	for _, k := range EncapKinds() {
		got, err := ParseEncapKind(k.String())
		if err != nil || got != k {
			t.Errorf("%v: parsed back as %v, %v", k, got, err)
		}
	}
	if EncapKind(3).Valid() || EncapKind(3).String() != "encap(3)" {
		t.Errorf("kind 3: valid %v, %q", EncapKind(3).Valid(), EncapKind(3))
	}
	if _, err := ParseEncapKind(""); err == nil {
		t.Error("an empty kind parses")
	}
}

func TestEncapMarshalRoundTrip(t *testing.T) {
	s := mustParse(t, encapDoc)
	out, err := Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	// VXLAN is the default and left unsaid; the others are written.
	if !bytes.Contains(out, []byte("encap: geneve")) || !bytes.Contains(out, []byte("encap: nvgre")) || bytes.Contains(out, []byte("encap: vxlan")) {
		t.Errorf("marshalled document:\n%s", out)
	}
	s2, err := Parse("again.yaml", out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if c := Diff(s, s2); !c.Empty() {
		t.Errorf("round trip changed %+v", c.VNETs)
	}
	s3, err := s.Builder().Build()
	if err != nil {
		t.Fatal(err)
	}
	if c := Diff(s, s3); !c.Empty() {
		t.Errorf("builder round trip changed %+v", c.VNETs)
	}
}

func TestEncapDiff(t *testing.T) {
	s := mustParse(t, encapDoc)
	changed := mustParse(t, strings.Replace(encapDoc, "encap: geneve", "encap: nvgre", 1))
	c := Diff(s, changed)
	if len(c.VNETs) != 1 || c.VNETs[0].Kind != Changed || c.VNETs[0].Key != (VNETKey{"blue", "gen"}) ||
		c.VNETs[0].Old.Encap != EncapGeneve || c.VNETs[0].New.Encap != EncapNVGRE {
		t.Fatalf("Diff: %+v", c.VNETs)
	}
	if len(c.Mappings)+len(c.VMs)+len(c.Routes) != 0 {
		t.Errorf("only the VNET changed, Diff says %+v", c)
	}
	// Saying the default is no change.
	same := mustParse(t, strings.Replace(encapDoc, "vni: 100\n", "vni: 100\n        encap: vxlan\n", 1))
	if c := Diff(s, same); !c.Empty() {
		t.Errorf("writing out the default changed %+v", c.VNETs)
	}
}

func TestEncapBuilderRefusesUnknownKind(t *testing.T) {
	b := NewBuilder()
	b.AddTenant(Tenant{Name: "t"})
	b.AddVNET(VNET{Tenant: "t", Name: "ok", VNI: 1, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}, Encap: EncapNVGRE})
	b.AddVNET(VNET{Tenant: "t", Name: "bad", VNI: 2, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24")}, Encap: EncapKind(9)})
	_, err := b.Build()
	var list ErrorList
	if !errors.As(err, &list) || len(list) != 1 {
		t.Fatalf("Build: %v", err)
	}
	if list[0].Field != "vnets[1].encap" || !strings.Contains(list[0].Msg, "unknown encapsulation kind 9") {
		t.Errorf("error %q (field %q)", list[0], list[0].Field)
	}

	// The same in a document that the Go API adds to: the error names the
	// document's line for the document's VNETs.
	pb, err := ParseBuilder("doc.yaml", []byte(encapDoc))
	if err != nil {
		t.Fatal(err)
	}
	pb.AddVNET(VNET{Tenant: "blue", Name: "late", VNI: 200, Subnets: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24")}, Encap: EncapKind(4)})
	_, err = pb.Build()
	if !errors.As(err, &list) || len(list) != 1 || !strings.Contains(list[0].Field, "encap") {
		t.Fatalf("Build: %v", err)
	}
}

func TestEncapEvaluated(t *testing.T) {
	s := mustParse(t, encapDoc)
	hostA, hostB := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	pkt := func(srcMAC string, src, dst string) Packet {
		m, _ := ParseMAC(srcMAC)
		return Packet{SrcMAC: m, DstMAC: DefaultRouterMAC, EtherType: EtherTypeIPv4,
			Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Protocol: ProtoUDP, SrcPort: 1000, DstPort: 53, TTL: 64}
	}
	cases := []struct {
		vm       string
		p        Packet
		want     EncapKind
		vni      uint32
		receiver string
	}{
		{"p1", pkt("02:00:00:00:00:01", "10.0.0.10", "10.0.0.11"), EncapVXLAN, 100, "p2"},
		{"g1", pkt("02:00:00:00:01:01", "10.0.1.10", "10.0.1.11"), EncapGeneve, 101, "g2"},
		{"n1", pkt("02:00:00:00:02:01", "10.0.2.10", "10.0.2.11"), EncapNVGRE, 102, "n2"},
		// Across VNETs: the destination VNET's VNI, in its encapsulation.
		{"p1", pkt("02:00:00:00:00:01", "10.0.0.10", "10.0.1.11"), EncapGeneve, 101, "g2"},
		{"g1", pkt("02:00:00:00:01:01", "10.0.1.10", "10.0.2.11"), EncapNVGRE, 102, "n2"},
	}
	for _, tc := range cases {
		v := s.Evaluate("host-a", FromVM(tc.vm), tc.p)
		if v.Action != Encap || v.Encap != tc.want || v.VNI != tc.vni {
			t.Fatalf("%s -> %s: %s, want encap %s vni %d", tc.vm, tc.p.Dst, v, tc.want, tc.vni)
		}
		if !strings.Contains(v.String(), "encap "+tc.want.String()+" vni") {
			t.Errorf("the verdict does not say which encapsulation: %s", v)
		}
		// The receiver takes it in that encapsulation and no other.
		arrived := v.Rewrite.Apply(tc.p)
		for _, k := range EncapKinds() {
			rv := s.Evaluate("host-b", FromTunnel(k, v.VNI, hostA), arrived)
			switch {
			case k == tc.want && (rv.Action != Deliver || rv.VM != tc.receiver):
				t.Errorf("%s in %s: %s", tc.p.Dst, k, rv)
			case k != tc.want && (rv.Action != Drop || rv.Reason != ReasonEncapMismatch):
				t.Errorf("%s in %s instead of %s: %s, want drop (encap-mismatch)", tc.p.Dst, k, tc.want, rv)
			}
		}
	}
	// A gateway is reached in the sender's VNET's encapsulation.
	v := s.Evaluate("host-b", FromVM("n2"), pkt("02:00:00:00:02:02", "10.0.2.11", "203.0.113.7"))
	if v.Action != ToGateway || v.Encap != EncapNVGRE || v.VNI != 102 || !strings.Contains(v.String(), "nvgre vni 102") {
		t.Fatalf("to the gateway: %s", v)
	}
	// FromUplink is VXLAN.
	if in := FromUplink(101, hostB); in.Encap != EncapVXLAN || !strings.Contains(in.String(), "vxlan vni 101") {
		t.Errorf("FromUplink: %+v %s", in, in)
	}
	rv := s.Evaluate("host-a", FromUplink(101, hostB), pkt("02:00:00:00:01:02", "10.0.1.11", "10.0.1.10"))
	if rv.Action != Drop || rv.Reason != ReasonEncapMismatch || !strings.Contains(rv.Explain(), "vnet gen is carried in geneve, not vxlan") {
		t.Errorf("VXLAN for a Geneve VNET:\n%s", rv.Explain())
	}
}

package policytest

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/policy"
)

func TestWriteLarge(t *testing.T) {
	var b bytes.Buffer
	// More VMs than the loader keeps in one block (2^14).
	const n = 20000
	if err := WriteLarge(&b, n, 5); err != nil {
		t.Fatal(err)
	}
	s, err := policy.Parse("large.yaml", b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if s.MappingCount() != n || len(s.Hosts()) != LargeHosts {
		t.Fatalf("%d mappings, %d hosts", s.MappingCount(), len(s.Hosts()))
	}
	m, ok := s.Lookup(100, netip.MustParseAddr("10.0.7.208")) // VM 2000
	if !ok || m.VM != "t0-2000" || m.Host != "h21" || m.PA != netip.MustParseAddr("198.18.1.22") {
		t.Errorf("VM 2000: %+v %v", m, ok)
	}
	if m, _ := s.Lookup(100, netip.MustParseAddr("10.0.7.209")); m.Host != "h17" {
		t.Errorf("VM 2001 is on %s, want h17: only every thousandth VM moves", m.Host)
	}
	if vm, ok := s.VM("t0-19999"); !ok || vm.Host != "h31" || vm.MAC != (policy.MAC{2, 0, 0, 0, 0x4e, 0x1f}) || vm.Tenant != "t0" || vm.VNET != "v" {
		t.Errorf("VM 19999: %+v %v", vm, ok)
	}
	if per := b.Len() / n; per < 100 || per > 120 {
		t.Errorf("%d bytes a mapping", per)
	}
}

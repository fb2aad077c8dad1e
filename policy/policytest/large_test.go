package policytest

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/policy"
)

func TestWriteLarge(t *testing.T) {
	var b bytes.Buffer
	if err := WriteLarge(&b, 3000, 5); err != nil {
		t.Fatal(err)
	}
	s, err := policy.Parse("large.yaml", b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if s.MappingCount() != 3000 || len(s.Hosts()) != LargeHosts {
		t.Fatalf("%d mappings, %d hosts", s.MappingCount(), len(s.Hosts()))
	}
	m, ok := s.Lookup(100, netip.MustParseAddr("10.0.7.208")) // VM 2000
	if !ok || m.VM != "t0-2000" || m.Host != "h21" || m.PA != netip.MustParseAddr("198.18.1.22") {
		t.Errorf("VM 2000: %+v %v", m, ok)
	}
	if m, _ := s.Lookup(100, netip.MustParseAddr("10.0.7.209")); m.Host != "h17" {
		t.Errorf("VM 2001 is on %s, want h17: only every thousandth VM moves", m.Host)
	}
	if per := b.Len() / 3000; per < 100 || per > 120 {
		t.Errorf("%d bytes a mapping", per)
	}
}

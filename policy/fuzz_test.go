package policy

import (
	"errors"
	"net/netip"
	"testing"
)

// FuzzParse: any input gives either a State or an ErrorList, never a panic;
// every error names the file and says something; a State survives a round
// trip through Marshal unchanged and can evaluate packets.
func FuzzParse(f *testing.F) {
	for _, tc := range checkCases {
		f.Add([]byte(tc.doc))
	}
	addRelocatedSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) { checkParse(t, data) })
}

func checkParse(t *testing.T, data []byte) {
	{
		s, err := Parse("fuzz.yaml", data)
		if err != nil {
			if s != nil {
				t.Fatal("State returned with an error")
			}
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error %T is not a non-empty ErrorList: %v", err, err)
			}
			for _, e := range list {
				if e.File != "fuzz.yaml" || e.Msg == "" || e.Line < 0 {
					t.Fatalf("malformed error %#v", e)
				}
			}
			return
		}
		out, err := Marshal(s)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		s2, err := Parse("again.yaml", out)
		if err != nil {
			t.Fatalf("re-parse of marshalled state: %v\n%s", err, out)
		}
		if c := Diff(s, s2); !c.Empty() {
			t.Fatalf("round trip changed the state: %+v", c)
		}
		for _, vm := range s.VMs() {
			for _, ca := range vm.CAs {
				p := Packet{SrcMAC: vm.MAC, Src: ca, Dst: ca, EtherType: EtherTypeIPv4, Protocol: ProtoTCP, TTL: 2}
				if ca.Is6() {
					p.EtherType = EtherTypeIPv6
				}
				for _, h := range s.Hosts() {
					s.Evaluate(h.Name, FromVM(vm.Name), p)
					s.Evaluate(h.Name, FromUplink(1, netip.IPv4Unspecified()), p)
				}
			}
		}
	}
}

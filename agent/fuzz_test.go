package agent

import (
	"strings"
	"testing"

	"github.com/nicpath/nicpath/policy"
)

// FuzzParsePacket: explain's packet arguments either describe a consistent
// packet (both addresses of one family, ports only for TCP/UDP) or are
// refused; never a panic.
func FuzzParsePacket(f *testing.F) {
	f.Add("10.0.0.10 10.0.0.11")
	f.Add("10.0.0.10 10.0.0.11 udp 4000 53")
	f.Add("fd00::1 fd00::2 icmp6 128 0")
	f.Add("10.0.0.10 fd00::2 tcp 1 2")
	f.Add("10.0.0.10 10.0.0.11 47")
	f.Fuzz(func(t *testing.T, line string) {
		p, err := parsePacket(strings.Fields(line))
		if err != nil {
			return
		}
		if !p.Src.IsValid() || !p.Dst.IsValid() || p.Src.Is4() != p.Dst.Is4() {
			t.Fatalf("addresses %v %v", p.Src, p.Dst)
		}
		if (p.EtherType == policy.EtherTypeIPv4) != p.Src.Is4() {
			t.Fatalf("ethertype %#x for %v", p.EtherType, p.Src)
		}
		if p.Protocol != policy.ProtoTCP && p.Protocol != policy.ProtoUDP && (p.SrcPort != 0 || p.DstPort != 0) {
			t.Fatalf("ports on protocol %d", p.Protocol)
		}
	})
}

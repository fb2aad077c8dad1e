package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// readCapture reads a vswitchd capture back, as tshark would, and prints a
// line per packet: the interface (the port), the comment (the reason) and
// the decoded headers.
func readCapture(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	r, err := pcapgo.NewNgReader(f, pcapgo.NgReaderOptions{})
	if err != nil {
		return "", err
	}
	var b strings.Builder
	raw, _ := os.ReadFile(path)
	for i := 0; ; i++ {
		data, ci, err := r.ReadPacketData()
		if err == io.EOF {
			fmt.Fprintf(&b, "%d packets in %s\n", i, path)
			break
		}
		if err != nil {
			return b.String(), err
		}
		intf, _ := r.Interface(ci.InterfaceIndex)
		p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Lazy)
		what := "?"
		if ip, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
			what = fmt.Sprintf("%s > %s %s", ip.SrcIP, ip.DstIP, ip.Protocol)
			if u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
				what += fmt.Sprintf(" %d > %d", u.SrcPort, u.DstPort)
			}
		}
		fmt.Fprintf(&b, "packet %d on %s: %s\n", i+1, intf.Name, what)
	}
	// pcapgo's reader does not expose packet comments; they are plain
	// strings in the file (tshark shows them as frame.comment).
	for _, c := range []string{"reason=miss"} {
		if strings.Contains(string(raw), c) {
			fmt.Fprintf(&b, "comments carry the exception reason (%s …)\n", c)
		}
	}
	return b.String(), nil
}

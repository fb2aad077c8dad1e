package tcflower

import (
	"strconv"
	"strings"
)

// udp6Ports lists the local ports of the sockets in a /proc/net/udp6 table
// ("sl local_address rem_address st …", addresses as hex ADDR:PORT). A
// flow-based VXLAN or Geneve device's own sockets are there too: it opens
// them when it comes up, an IPv6 one only where the kernel has IPv6.
func udp6Ports(table string) map[uint16]bool {
	ports := map[uint16]bool{}
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.HasSuffix(f[0], ":") {
			continue // the heading, or a blank line
		}
		i := strings.LastIndexByte(f[1], ':')
		if i < 0 {
			continue
		}
		p, err := strconv.ParseUint(f[1][i+1:], 16, 16)
		if err != nil {
			continue
		}
		ports[uint16(p)] = true
	}
	return ports
}

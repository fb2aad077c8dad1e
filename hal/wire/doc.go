// Package wire parses and builds the packet formats of nicpath's data path:
// Ethernet with 802.1Q and 802.1ad (QinQ) tags, IPv4 (with options),
// IPv6 (with extension headers), UDP, TCP, SCTP ports, ICMP and ICMPv6,
// and the encapsulations VXLAN (RFC 7348), Geneve with options (RFC 8926)
// and NVGRE (RFC 7637).
//
// It is the one place where nicpath touches packet bytes: the software NIC
// (drivers/softnic) parses and encapsulates with it, and the other drivers'
// tests build and check frames with it.
//
// See the rest of this comment, filled in below the first version, for the
// contracts.
package wire

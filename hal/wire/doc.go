// Package wire parses and builds the packet formats of nicpath's data path.
// It is the one place where nicpath touches packet bytes: the software NIC
// (drivers/softnic) parses, rewrites and encapsulates with it, the vswitch
// reads exception-path frames with it, and the other drivers' tests build
// and check frames with it.
//
// # Formats
//
//   - Ethernet II, with up to MaxVLANs (two) 802.1Q (0x8100) or 802.1ad
//     (QinQ, 0x88A8) tags in any order. The key holds the outermost tag's
//     VLAN ID (priority and DEI are not keyed); Layout.VLANs counts them.
//   - IPv4 (RFC 791): the header checksum is verified; options (IHL > 5) are
//     accepted and flagged FlagIPOptions; Ethernet padding after the total
//     length is ignored.
//   - IPv6 (RFC 8200) with extension headers hop-by-hop (first only),
//     routing, destination options, fragment, AH, mobility, HIP and shim6,
//     walked to the transport header, at most MaxIPv6ExtHeaders of them.
//     The key's Proto is the upper-layer protocol after the chain, as in
//     Open vSwitch. Jumbograms are not supported.
//   - Fragments: a first fragment is keyed with its ports and flagged
//     FlagFragment; a non-first fragment has no transport header, so Parse
//     keys it up to Proto (ports zero), flags FlagLaterFragment and fails
//     with hal.ReasonFragment.
//   - TCP (data offset checked), UDP (length checked), SCTP (ports),
//     ICMP and ICMPv6: the key's L4Src is the type and L4Dst the code.
//     Other protocols are keyed on addresses and protocol only.
//   - VXLAN (RFC 7348) on UDP port 4789: the I flag must be set; reserved
//     bits are ignored on receipt as the RFC says; 24-bit VNI.
//   - Geneve (RFC 8926) on UDP port 6081: version 0, protocol type 0x6558
//     (Ethernet); the options are walked and must tile the option length
//     exactly. This package understands no option, so a critical option (or
//     the C bit) and control packets (O bit) are hal.ReasonUnsupported: the
//     RFC forbids forwarding what a critical option would change, and the
//     host may know better.
//   - NVGRE (RFC 7637): IP protocol 47, GRE with C=0, K=1, S=0, version 0,
//     protocol 0x6558, key = VSID (24 bits) and FlowID (8 bits). GRE that
//     carries anything else is an opaque IP payload (keyed on addresses and
//     protocol 47); GRE with 0x6558 but other flags is ReasonUnsupported.
//
// Tunnels are recognised by their IANA ports only, one level deep: the inner
// frame is parsed in full (and must be well formed, or the whole frame is an
// error with ParseError.Inner set), but a tunnel inside it is not opened. A
// fragmented outer packet that carries a tunnel is hal.ReasonFragment.
//
// # Parse and Layout
//
// Parse(frame, inPort, &key, &layout) fills a hal.FlowKey and a Layout
// without allocating, even when it fails. For an encapsulated frame the
// key's TunKind, VNI, TunSrc and TunDst describe the outer headers and every
// other field the inner frame; the Layout's fields are byte offsets into
// frame, -1 when absent:
//
//	L2        the (inner) Ethernet header; 0 unless tunnelled
//	L3        the IPv4/IPv6 header; -1 for non-IP frames
//	L4        the transport header, after IPv4 options or IPv6 extension
//	          headers; -1 for non-IP frames and non-first fragments
//	Payload   the first byte after the transport header (after a TCP
//	          header's options; equal to L4 for protocols without a known
//	          header); -1 when there is no L4
//	End       the end of the (inner) frame: L3 plus the IP length, so that
//	          Ethernet padding is excluded; the end of the UDP/GRE payload
//	          (or of frame) for non-IP frames
//	VLANs     tags between the (inner) Ethernet header and L3
//	IPHdrLen  L4-L3: the IPv4 header with options or the IPv6 header with
//	          its extension headers
//	EthType   the EtherType after the tags; Proto the upper-layer protocol
//	Flags     FlagIPOptions, FlagIPv6Ext, FlagFragment, FlagLaterFragment,
//	          FlagUDPZeroCsum of the (inner) frame; FlagTunnel when tunnelled
//	OuterL3, OuterL4, Tunnel
//	          the outer IP header, the outer UDP or GRE header and the
//	          VXLAN/Geneve/NVGRE header; -1 when not tunnelled (the outer
//	          Ethernet header is at 0)
//	OuterVLANs, OuterEthType, OuterFlags
//	          the same facts about the outer frame (FlagGeneveOptions is an
//	          outer flag)
//
// Decap returns where the inner frame starts; it is frame[start:l.End].
//
// # Errors
//
// Malformed, truncated, oversized or hostile input never panics. Parse
// returns a *ParseError whose Reason is what a NIC reports on the exception
// path: hal.ReasonMalformed (truncated or inconsistent: bad checksum, bad
// version, lengths beyond the frame, a TCP data offset below 5, …),
// hal.ReasonUnsupported (recognised but not keyed on) or hal.ReasonFragment.
// errors.Is matches ErrTruncated, ErrMalformed, ErrUnsupported and
// ErrFragment; ReasonOf gets the reason from any error. The *ParseError
// points into the Layout (that is how failing allocates nothing): it is valid
// until the Layout is parsed into again.
//
// # Encapsulation and headroom
//
// NewEncapTemplate checks a hal.Encap once, when a rule is programmed, and
// precomputes the outer headers: Ethernet (untagged), IPv4 or IPv6, UDP or
// GRE, and the tunnel header. Push then writes them in place into the
// headroom in front of a frame, per packet, without allocating. A buffer
// needs this much headroom:
//
//	VXLAN   over IPv4  HeadroomVXLANIPv4   50 bytes   over IPv6  HeadroomVXLANIPv6   70
//	Geneve  over IPv4  HeadroomGeneveIPv4  50 + options          HeadroomGeneveIPv6  70 + options
//	NVGRE   over IPv4  HeadroomNVGREIPv4   42                    HeadroomNVGREIPv6   62
//
// MaxEncapHeadroom (322: Geneve over IPv6 with 252 option bytes) is enough
// for any encapsulation; Headroom(e) is exact for one. PushVLAN needs
// VLANTagLen (4) more.
//
// Outer headers: IPv4 with DF set (tunnels must not be fragmented on the
// way, RFC 7348 §4.3), ID 0, no options; IPv6 with the flow label taken from
// the inner flow's hash (RFC 6438); TTL / hop limit from the Encap, default
// DefaultTTL (64); UDP destination port from the Encap, default the IANA
// port (a frame sent to another port is not decapsulated by Parse). The UDP
// source port is UDPSourcePort(hash), in 49152–65535 (RFC 7348 §5), and the
// NVGRE FlowID is the low byte of the hash unless the Encap fixes it; pass
// FlowHash of the inner key, so that one flow keeps one path through ECMP.
// A Geneve option with the critical bit sets the C bit.
//
// # Checksums
//
//   - Parse verifies the IPv4 header checksum (a bad one is
//     ReasonMalformed). It does not verify transport checksums: that would
//     cost a pass over the payload, the endpoints verify them anyway, and a
//     NIC that forwards must not drop what the receiver may accept.
//   - Push computes the outer IPv4 header checksum from a sum precomputed
//     without the length field, adding the length per packet. Over IPv4 the
//     outer UDP checksum is 0 (allowed by RFC 7348 and RFC 8926; the inner
//     frame carries its own). Over IPv6 it is always computed: RFC 6935 and
//     6936 allow a zero checksum only under conditions a library cannot
//     check for its users.
//   - The rewrites (SetIPSrc, SetIPDst, SetL4Src, SetL4Dst, DecTTL) update
//     the IPv4 header checksum and the TCP, UDP and ICMPv6 checksums
//     incrementally (RFC 1624), so their cost does not depend on the packet
//     length. A UDP checksum of 0 over IPv4 means "none" and stays 0; a UDP
//     checksum that would become 0 is written 0xffff. They change the frame
//     Layout describes (the inner one when tunnelled): use them on plain
//     frames or after Decap, since an outer IPv6 UDP checksum would not
//     follow an inner change.
//   - Sum, Fold, Checksum and PseudoHeaderSum are exported for drivers and
//     their tests.
//
// # Offloads (vnet.go, gso.go)
//
// What a NIC with checksum and segmentation offload does to the frames a
// Linux sender hands it, described by the virtio-net header
// (VirtioNetHdr, as a packet socket with PACKET_VNET_HDR or a tap delivers
// it): CompleteChecksum finishes a partial checksum at the header's
// csum_start/csum_offset without parsing the frame (any TCP or UDP
// checksum, inner or outer); Segmenter cuts a GSO super-frame (TCPv4,
// TCPv6, UDP_L4; plain, VLAN-tagged, with IP options or IPv6 extension
// headers, or tunnelled in VXLAN, Geneve or NVGRE, where Linux reports the
// inner type) into segments as the kernel's software GSO would: lengths,
// IPv4 IDs, sequence numbers, FIN/PSH/CWR, inner and outer checksums,
// within an L3 bound. Both allocate nothing; FuzzSegment holds the
// Segmenter to its invariants, and its segments re-serialize byte for
// byte with gopacket.
//
// # Builders
//
// Build, BuildEncap, BuildKey, SpecFromKey and EncapFromKey make complete,
// valid frames (lengths and checksums right, padded to MinFrameLen) for
// tests, examples and demos. They allocate, and BuildEncap panics on an
// Encap that NewEncapTemplate refuses.
//
// # Speed
//
// Parse has a straight-line fast path for the most common frames: untagged
// or once-tagged, IPv4 without options or fragmentation or IPv6 without
// extension headers, carrying TCP, UDP or ICMP; and VXLAN whose outer and
// inner frames are both of that kind. Every other frame (QinQ, options,
// extension headers, Geneve, NVGRE, …), and every error, takes the general
// walk, which the fast path never contradicts (a differential test and
// FuzzParse hold them together). There are no interfaces or closures on the
// hot path. Benchmarks: go test -run XXX -bench . ./hal/wire.
package wire

//go:build linux

package xdp

import (
	"encoding/binary"
	"fmt"

	"github.com/mdlayher/netlink"
	"github.com/safchain/ethtool"
	"golang.org/x/sys/unix"
)

// linkInfo is what rtnetlink says of one link.
type linkInfo struct {
	mtu, maxMTU uint32
	peer        uint32 // IFLA_LINK: a veth's peer ifindex; 0 when none
	peerNS      int32  // IFLA_LINK_NETNSID: the peer's namespace as this one numbers it; -1 when the same
}

// getLink asks rtnetlink about ifindex, in the namespace nsid names (-1:
// the socket's own).
func getLink(c *netlink.Conn, ifindex uint32, nsid int32) (linkInfo, error) {
	li := linkInfo{peerNS: -1}
	req := make([]byte, 16) // struct ifinfomsg: family, type, index, flags, change
	binary.NativeEndian.PutUint32(req[4:8], ifindex)
	if nsid >= 0 {
		ae := netlink.NewAttributeEncoder()
		ae.Int32(unix.IFLA_TARGET_NETNSID, nsid)
		b, err := ae.Encode()
		if err != nil {
			return li, err
		}
		req = append(req, b...)
	}
	msgs, err := c.Execute(netlink.Message{Header: netlink.Header{Type: unix.RTM_GETLINK, Flags: netlink.Request}, Data: req})
	if err != nil {
		return li, err
	}
	if len(msgs) != 1 {
		return li, fmt.Errorf("RTM_GETLINK %d: %d answers", ifindex, len(msgs))
	}
	return parseLink(msgs[0].Data)
}

// parseLink decodes an RTM_NEWLINK payload: struct ifinfomsg, then the
// attributes it reads.
func parseLink(b []byte) (linkInfo, error) {
	li := linkInfo{peerNS: -1}
	if len(b) < 16 {
		return li, fmt.Errorf("RTM_NEWLINK of %d bytes", len(b))
	}
	ad, err := netlink.NewAttributeDecoder(b[16:])
	if err != nil {
		return li, err
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.IFLA_MTU:
			li.mtu = ad.Uint32()
		case unix.IFLA_MAX_MTU:
			li.maxMTU = ad.Uint32()
		case unix.IFLA_LINK:
			li.peer = ad.Uint32()
		case unix.IFLA_LINK_NETNSID:
			li.peerNS = ad.Int32()
		}
	}
	return li, ad.Err()
}

// probeAttached says, as a note, what the kernel does for p now that the
// program is attached to it: which driver the interface has and, for a
// veth, what its peer (the sender: a VM's end, or the underlay's far end)
// may send it, read from the peer itself. It runs inside the port's
// namespace. A probe that cannot read something says so rather than
// guess.
func probeAttached(p *port) string {
	drv := "unknown driver"
	if e, err := ethtool.NewEthtool(); err == nil {
		if d, err := e.DriverName(p.Name); err == nil {
			drv = d
		}
		e.Close()
	}
	if drv != "veth" {
		return fmt.Sprintf("%s: driver %s, %s mode; the program is single-buffer (no XDP fragments), so frames larger than one buffer are the driver's to refuse", p.Name, drv, p.mode)
	}
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return fmt.Sprintf("%s: veth, %s mode; peer not read: %v", p.Name, p.mode, err)
	}
	defer c.Close()
	self, err := getLink(c, uint32(p.ifindex), -1)
	if err == nil && self.peer == 0 {
		err = fmt.Errorf("no peer")
	}
	var peer linkInfo
	if err == nil {
		peer, err = getLink(c, self.peer, self.peerNS)
	}
	if err != nil {
		return fmt.Sprintf("%s: veth, %s mode; peer not read: %v", p.Name, p.mode, err)
	}
	if p.mode == ModeDriver {
		// veth_xdp_set: a program without XDP fragments caps the peer's
		// MTU at one page and clears the peer's TSO/USO, so that every
		// frame fits one buffer; bulk TCP then arrives as MTU-sized
		// segments, checksums left partial (completed by the program).
		return fmt.Sprintf("%s: veth, driver mode: the peer's MTU is %d, capped at %d while the program is attached (single-buffer frames; "+
			"the kernel turns the peer's TSO/USO off, so bulk TCP arrives segmented, with partial checksums the program completes; "+
			"multi-buffer XDP would only be needed above that MTU)", p.Name, peer.mtu, peer.maxMTU)
	}
	return fmt.Sprintf("%s: veth, %s mode: the peer's MTU is %d, max %d: the kernel neither caps it nor turns its TSO/GSO off in this mode, "+
		"so a TSO/GSO frame arrives whole and, larger than the egress MTU, goes to the host (mtu): bulk TCP needs driver mode", p.Name, p.mode, peer.mtu, peer.maxMTU)
}

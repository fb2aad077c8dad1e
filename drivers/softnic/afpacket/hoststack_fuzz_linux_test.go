//go:build linux

package afpacket

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// newAddrMsg is an RTM_NEWADDR's body (ifaddrmsg and attributes) for an
// address on ifindex; peer, when valid, is IFA_ADDRESS and addr IFA_LOCAL
// (IPv4), else addr is IFA_ADDRESS (IPv6).
func newAddrMsg(t testing.TB, ifindex uint32, addr, peer netip.Addr) []byte {
	hdr := make([]byte, unix.SizeofIfAddrmsg)
	hdr[0] = unix.AF_INET6
	if addr.Is4() {
		hdr[0] = unix.AF_INET
	}
	hdr[1] = byte(addr.BitLen())
	binary.NativeEndian.PutUint32(hdr[4:], ifindex)
	ae := netlink.NewAttributeEncoder()
	if peer.IsValid() {
		ae.Bytes(unix.IFA_ADDRESS, peer.AsSlice())
		ae.Bytes(unix.IFA_LOCAL, addr.AsSlice())
	} else {
		ae.Bytes(unix.IFA_ADDRESS, addr.AsSlice())
	}
	ae.Uint32(unix.IFA_FLAGS, 0)
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return append(hdr, b...)
}

// inet6InfoMsg is an RTM_NEWLINK's body of IPv6's ifinfo group for
// ifindex: IFLA_PROTINFO holding IFLA_INET6_CONF with disable_ipv6 set to
// disabled (withConf false: no IFLA_INET6_CONF).
func inet6InfoMsg(t testing.TB, family byte, ifindex int32, withConf bool, disabled uint32) []byte {
	hdr := make([]byte, unix.SizeofIfInfomsg)
	hdr[0] = family
	binary.NativeEndian.PutUint32(hdr[4:], uint32(ifindex))
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.IFLA_IFNAME, "up0")
	ae.Uint32(unix.IFLA_MTU, 1500)
	ae.Nested(unix.IFLA_PROTINFO, func(ne *netlink.AttributeEncoder) error {
		ne.Uint32(unix.IFLA_INET6_FLAGS, 0)
		if withConf {
			conf := make([]byte, 4*60)
			binary.NativeEndian.PutUint32(conf[4*devconfDisableIPv6:], disabled)
			ne.Bytes(unix.IFLA_INET6_CONF, conf)
		}
		return nil
	})
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return append(hdr, b...)
}

// hostEvent tells, of the messages of the watch's groups, those that
// show the host's stack can use the interface, and names the address.
func TestHostEvent(t *testing.T) {
	v4, peer := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.9")
	ll := netip.MustParseAddr("fe80::ff:fe00:e01")
	for _, c := range []struct {
		name string
		typ  netlink.HeaderType
		data []byte
		want string // "" or a part of the reason
	}{
		{"IPv4 address", unix.RTM_NEWADDR, newAddrMsg(t, 7, v4, netip.Addr{}), "198.18.0.1"},
		{"IPv4 address with a peer", unix.RTM_NEWADDR, newAddrMsg(t, 7, v4, peer), "198.18.0.1"},
		{"IPv6 link-local address", unix.RTM_NEWADDR, newAddrMsg(t, 7, ll, netip.Addr{}), "fe80::ff:fe00:e01"},
		{"an address without attributes", unix.RTM_NEWADDR, newAddrMsg(t, 7, v4, netip.Addr{})[:unix.SizeofIfAddrmsg], "an address"},
		{"another interface's address", unix.RTM_NEWADDR, newAddrMsg(t, 8, v4, netip.Addr{}), ""},
		{"an address removed", unix.RTM_DELADDR, newAddrMsg(t, 7, v4, netip.Addr{}), ""},
		{"a short ifaddrmsg", unix.RTM_NEWADDR, newAddrMsg(t, 7, v4, netip.Addr{})[:7], ""},
		{"IPv6 on", unix.RTM_NEWLINK, inet6InfoMsg(t, unix.AF_INET6, 7, true, 0), "IPv6"},
		{"IPv6 info without its settings", unix.RTM_NEWLINK, inet6InfoMsg(t, unix.AF_INET6, 7, false, 0), "IPv6"},
		{"IPv6 info, IPv6 off", unix.RTM_NEWLINK, inet6InfoMsg(t, unix.AF_INET6, 7, true, 1), ""},
		{"another interface's IPv6 on", unix.RTM_NEWLINK, inet6InfoMsg(t, unix.AF_INET6, 8, true, 0), ""},
		{"a link message not IPv6's", unix.RTM_NEWLINK, inet6InfoMsg(t, unix.AF_UNSPEC, 7, true, 0), ""},
		{"a short ifinfomsg", unix.RTM_NEWLINK, inet6InfoMsg(t, unix.AF_INET6, 7, true, 0)[:15], ""},
	} {
		got := hostEvent(c.typ, c.data, 7)
		if (got == "") != (c.want == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

// hostEvent reads any message without panicking, and says the host's
// stack can use the interface only for a new address or IPv6 info whose
// header names that interface.
func FuzzHostEvent(f *testing.F) {
	f.Add(uint16(unix.RTM_NEWADDR), newAddrMsg(f, 2, netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.9")), 2)
	f.Add(uint16(unix.RTM_NEWADDR), newAddrMsg(f, 2, netip.MustParseAddr("fe80::1"), netip.Addr{}), 2)
	f.Add(uint16(unix.RTM_NEWLINK), inet6InfoMsg(f, unix.AF_INET6, 2, true, 1), 2)
	f.Fuzz(func(t *testing.T, typ uint16, data []byte, ifindex int) {
		why := hostEvent(netlink.HeaderType(typ), data, ifindex)
		if why == "" {
			return
		}
		switch typ {
		case unix.RTM_NEWADDR:
			if len(data) < unix.SizeofIfAddrmsg || int64(binary.NativeEndian.Uint32(data[4:])) != int64(ifindex) {
				t.Fatalf("%q from an ifaddrmsg not for interface %d", why, ifindex)
			}
		case unix.RTM_NEWLINK:
			if len(data) < unix.SizeofIfInfomsg || data[0] != unix.AF_INET6 ||
				int64(int32(binary.NativeEndian.Uint32(data[4:]))) != int64(ifindex) {
				t.Fatalf("%q from an ifinfomsg not IPv6's for interface %d", why, ifindex)
			}
		default:
			t.Fatalf("%q from a message of type %d", why, typ)
		}
	})
}

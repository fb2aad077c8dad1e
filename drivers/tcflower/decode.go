package tcflower

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
)

// dumpedFilter is one flower filter as a dump reports it: where it is, its
// flags (in_hw / not_in_hw), how many hardware devices hold it, the cookie
// of its first action and the packet and byte counts of that action (every
// packet the filter matches passes its first action).
type dumpedFilter struct {
	Chain     uint32
	Prio      uint16
	Handle    uint32
	Kind      string
	Flags     uint32
	InHWCount uint32
	HasHWCnt  bool
	Cookie    []byte
	Packets   uint64
	Bytes     uint64
	HWPackets uint64
	HWBytes   uint64
	Actions   []string
	// NumVLANs is the num_of_vlans key, -1 when the filter has none.
	NumVLANs int
}

var errNotFilter = errors.New("not a filter message")

// parseFilter decodes the payload of an RTM_NEWTFILTER message from a dump.
// It never panics on malformed input; it returns an error instead.
func parseFilter(b []byte) (dumpedFilter, error) {
	f := dumpedFilter{NumVLANs: -1}
	t, err := parseTcmsg(b)
	if err != nil {
		return f, err
	}
	f.Prio = uint16(t.Info >> 16)
	f.Handle = t.Handle
	ad, err := netlink.NewAttributeDecoder(b[tcmsgLen:])
	if err != nil {
		return f, err
	}
	var opts []byte
	for ad.Next() {
		switch ad.Type() {
		case tcaKind:
			f.Kind = ad.String()
		case tcaChain:
			f.Chain = ad.Uint32()
		case tcaOptions:
			opts = ad.Bytes()
		}
	}
	if err := ad.Err(); err != nil {
		return f, err
	}
	if f.Kind != "flower" || opts == nil {
		// A filter without options is the per-priority head a dump lists
		// before the filters themselves.
		return f, errNotFilter
	}
	od, err := netlink.NewAttributeDecoder(opts)
	if err != nil {
		return f, err
	}
	for od.Next() {
		switch od.Type() {
		case flowerFlags:
			f.Flags = od.Uint32()
		case flowerNumOfVLANs:
			f.NumVLANs = int(od.Uint8())
		case flowerInHWCount:
			f.InHWCount = od.Uint32()
			f.HasHWCnt = true
		case flowerAct:
			od.Nested(func(nad *netlink.AttributeDecoder) error {
				first := true
				for nad.Next() {
					kind, cookie, st, err := parseAction(nad.Bytes())
					if err != nil {
						return err
					}
					f.Actions = append(f.Actions, kind)
					if first {
						f.Cookie = cookie
						f.Packets, f.Bytes, f.HWPackets, f.HWBytes = st.packets, st.bytes, st.hwPackets, st.hwBytes
						first = false
					}
				}
				return nil
			})
		}
	}
	if err := od.Err(); err != nil {
		return f, err
	}
	return f, nil
}

type actionStats struct {
	packets, bytes     uint64
	hwPackets, hwBytes uint64
}

func parseAction(b []byte) (kind string, cookie []byte, st actionStats, err error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return "", nil, st, err
	}
	for ad.Next() {
		switch ad.Type() {
		case actKind:
			kind = ad.String()
		case actCookie:
			cookie = append([]byte(nil), ad.Bytes()...)
		case actStats:
			ad.Nested(func(sd *netlink.AttributeDecoder) error {
				for sd.Next() {
					switch sd.Type() {
					case statsBasic:
						st.bytes, st.packets = parseBasic(sd.Bytes())
					case statsBasicHW:
						st.hwBytes, st.hwPackets = parseBasic(sd.Bytes())
					}
				}
				return nil
			})
		}
	}
	return kind, cookie, st, ad.Err()
}

// parseBasic decodes struct gnet_stats_basic: u64 bytes, u32 packets (and
// padding).
func parseBasic(b []byte) (bytes, packets uint64) {
	if len(b) < 12 {
		return 0, 0
	}
	return binary.NativeEndian.Uint64(b), uint64(binary.NativeEndian.Uint32(b[8:]))
}

// cookieRule splits a cookie written by ruleCookie.
func cookieRule(c []byte) (id, owner uint64, ok bool) {
	if len(c) != 16 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(c), binary.BigEndian.Uint64(c[8:]), true
}

// linkStats is the part of struct rtnl_link_stats64 the driver reports.
type linkStats struct {
	rxPackets, txPackets, rxBytes, txBytes, rxDropped, txDropped uint64
}

// parseLink decodes an RTM_NEWLINK payload: ifinfomsg (16 bytes) then
// attributes.
func parseLink(b []byte) (ifindex uint32, name string, mac []byte, mtu uint32, st linkStats, err error) {
	if len(b) < 16 {
		return 0, "", nil, 0, st, fmt.Errorf("ifinfomsg: %d bytes", len(b))
	}
	ifindex = binary.NativeEndian.Uint32(b[4:])
	ad, err := netlink.NewAttributeDecoder(b[16:])
	if err != nil {
		return 0, "", nil, 0, st, err
	}
	for ad.Next() {
		switch ad.Type() {
		case iflaIfname:
			name = ad.String()
		case iflaAddress:
			mac = append([]byte(nil), ad.Bytes()...)
		case iflaMTU:
			mtu = ad.Uint32()
		case iflaStats64:
			s := ad.Bytes()
			if len(s) >= 64 {
				u := func(i int) uint64 { return binary.NativeEndian.Uint64(s[i*8:]) }
				st = linkStats{rxPackets: u(0), txPackets: u(1), rxBytes: u(2), txBytes: u(3), rxDropped: u(6), txDropped: u(7)}
			}
		}
	}
	return ifindex, name, mac, mtu, st, ad.Err()
}

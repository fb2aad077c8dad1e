package tcflower

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
)

// Netlink plumbing: requests, batched sends with their acknowledgements,
// and the filter messages every other file builds on.

func (n *NIC) request(typ netlink.HeaderType, flags netlink.HeaderFlags, data []byte) netlink.Message {
	return netlink.Message{Header: netlink.Header{Type: typ, Flags: netlink.Request | flags}, Data: data}
}

// do sends one message and waits for its acknowledgement.
func (n *NIC) do(m netlink.Message) error {
	errs := n.sendBatch([]netlink.Message{m})
	return errs[0]
}

// sendBatch sends msgs in chunks of chunkOps messages per sendmsg and
// returns one error per message. Only each chunk's last message asks for an
// acknowledgement: the kernel processes a sendmsg's messages in order and
// answers every failure with an error message, so the last acknowledgement
// closes the chunk and every message without an error before it landed.
// That keeps the receive queue small however large the batch.
func (n *NIC) sendBatch(msgs []netlink.Message) []error {
	errs := make([]error, len(msgs))
	for start := 0; start < len(msgs); start += chunkOps {
		end := min(start+chunkOps, len(msgs))
		part := msgs[start:end]
		for i := range part {
			part[i].Header.Sequence = 0
			part[i].Header.Flags &^= netlink.Acknowledge
		}
		part[len(part)-1].Header.Flags |= netlink.Acknowledge
		sent, err := n.conn.SendMessages(part)
		if err != nil {
			for i := start; i < end; i++ {
				errs[i] = err
			}
			continue
		}
		index := make(map[uint32]int, len(sent))
		for i, m := range sent {
			index[m.Header.Sequence] = start + i
		}
		last := sent[len(sent)-1].Header.Sequence
		if err := n.collect(index, last, errs); err != nil {
			// The socket failed: what was not answered is unknown.
			for i := start; i < end; i++ {
				if errs[i] == nil {
					errs[i] = fmt.Errorf("%w: %v", errResultUnknown, err)
				}
			}
		}
	}
	return errs
}

// collect reads acknowledgements until the one for sequence last.
func (n *NIC) collect(index map[uint32]int, last uint32, errs []error) error {
	for {
		msgs, err := n.conn.Receive()
		if err != nil {
			var oe *netlink.OpError
			if errors.As(err, &oe) && oe.Sequence != 0 {
				if i, ok := index[oe.Sequence]; ok {
					errs[i] = err
				}
				if oe.Sequence == last {
					return nil
				}
				continue
			}
			return err
		}
		for _, m := range msgs {
			if m.Header.Type == netlink.Error && m.Header.Sequence == last {
				return nil
			}
		}
	}
}

func (n *NIC) filterMsg(f *filterSpec, flags netlink.HeaderFlags) (netlink.Message, error) {
	b, err := encodeFilter(n.block, f, true)
	if err != nil {
		return netlink.Message{}, err
	}
	return n.request(rtmNewFilter, flags, b), nil
}

func (n *NIC) delFilterMsg(chain uint32, prio uint16, handle uint32) netlink.Message {
	b, _ := encodeFilter(n.block, &filterSpec{Chain: chain, Prio: prio, Handle: handle}, false)
	return n.request(rtmDelFilter, 0, b)
}

// jumpFilter is a structural filter: match everything, go to chain target.
func (n *NIC) jumpFilter(chain uint32, prio uint16, target uint32) *filterSpec {
	return &filterSpec{Chain: chain, Prio: prio, Handle: structHandle, Flags: n.flags, Actions: []tcAction{gotoChain(target)}}
}

// setJump creates or replaces a structural filter.
func (n *NIC) setJump(chain uint32, prio uint16, target uint32) error {
	m, err := n.filterMsg(n.jumpFilter(chain, prio, target), netlink.Create|netlink.Replace)
	if err != nil {
		return err
	}
	return n.do(m)
}

// ifinfomsg is struct ifinfomsg: family, type, index, flags, change.
func ifinfomsg(index, flags, change uint32) []byte {
	b := make([]byte, 16)
	binary.NativeEndian.PutUint32(b[4:], index)
	binary.NativeEndian.PutUint32(b[8:], flags)
	binary.NativeEndian.PutUint32(b[12:], change)
	return b
}

// encodeNewVeth is the payload of an RTM_NEWLINK that creates the veth pair
// name/peer, both with MTU mtu.
func encodeNewVeth(name, peer string, mtu uint32) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.String(iflaIfname, name)
	ae.Uint32(iflaMTU, mtu)
	ae.Nested(iflaLinkinfo, func(le *netlink.AttributeEncoder) error {
		le.String(iflaInfoKind, "veth")
		le.Nested(iflaInfoData, func(de *netlink.AttributeEncoder) error {
			de.Do(vethInfoPeer, func() ([]byte, error) {
				pe := netlink.NewAttributeEncoder()
				pe.String(iflaIfname, peer)
				pe.Uint32(iflaMTU, mtu)
				b, err := pe.Encode()
				return append(ifinfomsg(0, 0, 0), b...), err
			})
			return nil
		})
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	return append(ifinfomsg(0, 0, 0), attrs...), nil
}

// encodeLinkUp is the payload of an RTM_NEWLINK that sets ifindex up.
func encodeLinkUp(ifindex uint32) []byte { return ifinfomsg(ifindex, iffUp, iffUp) }

// encodeDelLink is the payload of an RTM_DELLINK of ifindex.
func encodeDelLink(ifindex uint32) []byte { return ifinfomsg(ifindex, 0, 0) }

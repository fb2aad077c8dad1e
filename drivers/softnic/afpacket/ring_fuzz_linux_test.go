//go:build linux

package afpacket

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

// slotFrame reads whatever a slot holds without reading or writing
// outside it, and a frame it returns lies inside the slot, at most 4
// bytes (a VLAN tag put back) longer than the slot says.
func FuzzSlotFrame(f *testing.F) {
	slot := func(l, snap, mac int, tci uint16, pkttype byte, frame []byte) []byte {
		s := make([]byte, 256)
		binary.NativeEndian.PutUint32(s[tpLen:], uint32(l))
		binary.NativeEndian.PutUint32(s[tpSnaplen:], uint32(snap))
		binary.NativeEndian.PutUint16(s[tpMac:], uint16(mac))
		binary.NativeEndian.PutUint16(s[tpVlanTCI:], tci)
		s[sllPkttype] = pkttype
		copy(s[mac:], frame)
		return s
	}
	frame := make([]byte, 60)
	f.Add(slot(60, 60, 80, 0, unix.PACKET_HOST, frame), uint32(unix.TP_STATUS_USER))
	f.Add(slot(60, 60, 80, 42, unix.PACKET_HOST, frame), uint32(unix.TP_STATUS_USER|unix.TP_STATUS_VLAN_VALID))
	f.Add(slot(9000, 100, 80, 0, unix.PACKET_HOST, frame), uint32(unix.TP_STATUS_USER|unix.TP_STATUS_COPY))
	f.Add(slot(60, 60, 80, 0, unix.PACKET_OUTGOING, frame), uint32(unix.TP_STATUS_USER))
	f.Add(slot(300, 300, 250, 0, unix.PACKET_HOST, nil), uint32(unix.TP_STATUS_USER|unix.TP_STATUS_VLAN_VALID))
	f.Fuzz(func(t *testing.T, s []byte, st uint32) {
		if len(s) < tpHdrLen+20 {
			return
		}
		s = s[:len(s):len(s)] // a ring slot ends where its memory does
		fr, _, _, err := slotFrame(s, st)
		if err != nil || fr == nil {
			return
		}
		snap := int(binary.NativeEndian.Uint32(s[tpSnaplen:]))
		if len(fr) > snap+4 {
			t.Fatalf("a %d-byte frame from a slot that holds %d", len(fr), snap)
		}
		if cap(fr) > len(s) {
			t.Fatalf("the frame reaches past the slot")
		}
	})
}

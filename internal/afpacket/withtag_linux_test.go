//go:build linux

package afpacket

import (
	"bytes"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// auxdata builds the PACKET_AUXDATA control message the kernel would hand
// over with a frame.
func auxdata(status uint32, tci, tpid uint16) []byte {
	aux := unix.TpacketAuxdata{Status: status, Vlan_tci: tci, Vlan_tpid: tpid}
	data := unsafe.Slice((*byte)(unsafe.Pointer(&aux)), unsafe.Sizeof(aux))
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.SOL_PACKET, unix.PACKET_AUXDATA
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

// tagBoth runs withTag on frame twice: in a buffer with room for a tag (the
// tag goes in place) and in one without (the result is a new slice). Both
// must give the same frame and status.
func tagBoth(t *testing.T, frame, oob []byte) ([]byte, uint32) {
	t.Helper()
	roomy := make([]byte, len(frame)+4)
	copy(roomy, frame)
	got, status, tagged := withTag(roomy, len(frame), oob)
	if len(got) > 0 && &got[0] != &roomy[0] {
		t.Fatalf("a buffer with room for the tag was not used")
	}
	if tagged != (len(got) == len(frame)+4) {
		t.Fatalf("tagged %v with %d bytes from %d", tagged, len(got), len(frame))
	}
	tight := append([]byte(nil), frame...)
	got2, status2, tagged2 := withTag(tight, len(frame), oob)
	if !bytes.Equal(got, got2) || status != status2 || tagged != tagged2 {
		t.Fatalf("in place and copied differ:\n% x (%#x)\n% x (%#x)", got, status, got2, status2)
	}
	return got, status
}

func TestWithTag(t *testing.T) {
	frame := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x08, 0x00, 0x45}
	if got, _ := tagBoth(t, frame, nil); !bytes.Equal(got, frame) {
		t.Errorf("no auxdata: % x", got)
	}
	if got, st := tagBoth(t, frame, auxdata(unix.TP_STATUS_CSUMNOTREADY, 100, 0)); !bytes.Equal(got, frame) || st != unix.TP_STATUS_CSUMNOTREADY {
		t.Errorf("auxdata without a tag: % x, status %#x", got, st)
	}
	want := append(append(append([]byte(nil), frame[:12]...), 0x81, 0x00, 0x00, 0x64), frame[12:]...)
	if got, _ := tagBoth(t, frame, auxdata(unix.TP_STATUS_VLAN_VALID, 100, 0)); !bytes.Equal(got, want) {
		t.Errorf("tag 100:\n got % x\nwant % x", got, want)
	}
	want[12], want[13] = 0x88, 0xa8
	if got, _ := tagBoth(t, frame, auxdata(unix.TP_STATUS_VLAN_VALID|unix.TP_STATUS_VLAN_TPID_VALID, 100, 0x88a8)); !bytes.Equal(got, want) {
		t.Errorf("QinQ tag:\n got % x\nwant % x", got, want)
	}
	// A frame too short for MAC addresses gets no tag.
	if got, _ := tagBoth(t, frame[:11], auxdata(unix.TP_STATUS_VLAN_VALID, 100, 0)); !bytes.Equal(got, frame[:11]) {
		t.Errorf("short frame: % x", got)
	}
}

// FuzzWithTag: whatever control data the kernel hands over, the frame comes
// back whole, possibly with one 4-byte tag after the MAC addresses, and the
// same whether the tag went in place or into a new slice.
func FuzzWithTag(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 8, 0}, auxdata(unix.TP_STATUS_VLAN_VALID, 5, 0))
	f.Add([]byte{1, 2, 3}, auxdata(unix.TP_STATUS_VLAN_VALID, 5, 0))
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, frame, oob []byte) {
		got, _ := tagBoth(t, frame, oob)
		switch len(got) {
		case len(frame):
			if !bytes.Equal(got, frame) {
				t.Fatalf("frame changed without a tag")
			}
		case len(frame) + 4:
			if !bytes.Equal(got[:12], frame[:12]) || !bytes.Equal(got[16:], frame[12:]) {
				t.Fatalf("tag not inserted after the MAC addresses")
			}
		default:
			t.Fatalf("%d bytes from %d", len(got), len(frame))
		}
	})
}

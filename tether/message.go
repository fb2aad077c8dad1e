package tether

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The tunnel's messages: the plaintext of one securechan data frame is one
// message, whose first byte is its kind.
//
//	frame     1 | VNI (3, big endian) | Ethernet frame (14…)
//	probe     2 | sequence (8) | sender's clock, ns (8)
//	probe-ack 3 | sequence (8) | the probe's clock, echoed (8)
//	keepalive 4
//
// A probe is answered by a probe-ack with the same sequence and clock; the
// tether sends probes (liveness, and the packets that carry a NAT rebinding
// to the anchor), the anchor answers them. A keepalive carries nothing: it
// only keeps the NAT's mapping of an idle tunnel alive.
const (
	KindFrame     = 1
	KindProbe     = 2
	KindProbeAck  = 3
	KindKeepalive = 4
)

// Sizes of the messages.
const (
	frameHdrLen = 4  // kind | VNI
	probeLen    = 17 // kind | seq | clock
	minEthLen   = 14 // an Ethernet header
	maxVNI      = 1<<24 - 1
)

// ErrMessage is wrapped by every refusal of DecodeMessage.
var ErrMessage = errors.New("tether: malformed tunnel message")

// Message is one decoded tunnel message. Frame aliases the decoded buffer.
type Message struct {
	Kind  byte
	VNI   uint32 // KindFrame
	Frame []byte // KindFrame: the overlay's Ethernet frame
	Seq   uint64 // KindProbe, KindProbeAck
	Clock int64  // KindProbe, KindProbeAck
}

// DecodeMessage decodes the plaintext of one data frame. It never allocates:
// m.Frame points into b.
func DecodeMessage(b []byte, m *Message) error {
	if len(b) == 0 {
		return fmt.Errorf("%w: empty", ErrMessage)
	}
	*m = Message{Kind: b[0]}
	switch b[0] {
	case KindFrame:
		if len(b) < frameHdrLen+minEthLen {
			return fmt.Errorf("%w: frame of %d bytes", ErrMessage, len(b))
		}
		m.VNI = uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		if m.VNI == 0 {
			return fmt.Errorf("%w: VNI 0", ErrMessage)
		}
		m.Frame = b[frameHdrLen:]
	case KindProbe, KindProbeAck:
		if len(b) != probeLen {
			return fmt.Errorf("%w: probe of %d bytes", ErrMessage, len(b))
		}
		m.Seq = binary.BigEndian.Uint64(b[1:9])
		m.Clock = int64(binary.BigEndian.Uint64(b[9:17]))
	case KindKeepalive:
		if len(b) != 1 {
			return fmt.Errorf("%w: keepalive of %d bytes", ErrMessage, len(b))
		}
	default:
		return fmt.Errorf("%w: kind %d", ErrMessage, b[0])
	}
	return nil
}

// AppendFrame appends a frame message carrying an overlay frame of vni.
func AppendFrame(b []byte, vni uint32, frame []byte) []byte {
	b = append(b, KindFrame, byte(vni>>16), byte(vni>>8), byte(vni))
	return append(b, frame...)
}

// AppendProbe appends a probe (ack false) or a probe-ack (ack true).
func AppendProbe(b []byte, ack bool, seq uint64, clock int64) []byte {
	k := byte(KindProbe)
	if ack {
		k = KindProbeAck
	}
	b = append(b, k)
	b = binary.BigEndian.AppendUint64(b, seq)
	return binary.BigEndian.AppendUint64(b, uint64(clock))
}

// AppendKeepalive appends a keepalive.
func AppendKeepalive(b []byte) []byte { return append(b, KindKeepalive) }

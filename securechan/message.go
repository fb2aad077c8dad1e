package securechan

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// MsgVersion is the version of the address-message codec. Every message
// carries it in its first byte; a decoder refuses any other value with
// ErrVersion, so a peer can never be talked into an older encoding.
const MsgVersion uint8 = 1

// MsgType says what a Message means and which of its fields are used.
type MsgType uint8

// Message types. The wire values are part of the protocol: never renumber.
const (
	// MsgMappingAdd (host → NIC): CA Addr in VNI lives behind provider
	// address PA with MAC. Fields: VNI, Addr, PA, MAC.
	MsgMappingAdd MsgType = 1
	// MsgMappingRemove (host → NIC): forget the mapping of Addr in VNI.
	// Fields: VNI, Addr.
	MsgMappingRemove MsgType = 2
	// MsgAddressLearned (NIC → host): the NIC saw source MAC/Addr on Vport
	// in VNI. Fields: Vport, VNI, MAC, Addr. It carries source addresses
	// only: a NIC must never report the destination of a sealed frame.
	MsgAddressLearned MsgType = 3
	// MsgAck (either way): the message numbered AckSeq was applied (Status
	// AckOK) or refused (another Status). Fields: AckSeq, Status.
	MsgAck MsgType = 4
	// MsgKeyRegister (host → NIC): accept sealed-address frames from Vport
	// sealed under VM public key Key with id KeyID. Fields: Vport, KeyID, Key.
	MsgKeyRegister MsgType = 5
	// MsgKeyRevoke (host → NIC): stop accepting KeyID on Vport at once.
	// Fields: Vport, KeyID.
	MsgKeyRevoke MsgType = 6
)

// String names the type for logs.
func (t MsgType) String() string {
	switch t {
	case MsgMappingAdd:
		return "mapping-add"
	case MsgMappingRemove:
		return "mapping-remove"
	case MsgAddressLearned:
		return "address-learned"
	case MsgAck:
		return "ack"
	case MsgKeyRegister:
		return "key-register"
	case MsgKeyRevoke:
		return "key-revoke"
	}
	return fmt.Sprintf("msgtype(%d)", uint8(t))
}

// AckStatus is the outcome carried by an Ack.
type AckStatus uint8

const (
	AckOK        AckStatus = 0 // applied
	AckRefused   AckStatus = 1 // understood but refused (e.g. table full)
	AckMalformed AckStatus = 2 // fields invalid for the message type
	AckUnknown   AckStatus = 3 // message type not handled by the receiver
)

// Message is one unit of address information exchanged between NIC and host.
// It is a flat struct rather than one type per message so that encoding and
// decoding never allocate; Type says which fields count (see the MsgType
// constants) and the others must be zero.
type Message struct {
	Type   MsgType
	Seq    uint64     // sender's sequence number, echoed by Ack.AckSeq
	VNI    uint32     // 24-bit virtual network id
	Vport  uint32     // the VM's port on the NIC (hal.PortID)
	Addr   netip.Addr // customer address (mapping) or learned source address
	PA     netip.Addr // provider address (mapping add)
	MAC    [6]byte    // customer MAC
	KeyID  uint8      // sealed-address key id (rotation)
	Key    PublicKey  // VM public key (key register)
	AckSeq uint64     // Seq of the acknowledged message
	Status AckStatus  // outcome (ack)
}

// Message wire format (all integers big endian):
//
//	0      version (MsgVersion)
//	1      type (MsgType)
//	2..3   body length in bytes
//	4..11  Seq
//	12..   body, by type:
//	  MappingAdd     VNI(4) Addr(a) PA(a) MAC(6)
//	  MappingRemove  VNI(4) Addr(a)
//	  AddressLearned Vport(4) VNI(4) MAC(6) Addr(a)
//	  Ack            AckSeq(8) Status(1)
//	  KeyRegister    Vport(4) KeyID(1) Key(32)
//	  KeyRevoke      Vport(4) KeyID(1)
//
// An address (a) is a family byte (4 or 6) followed by 4 or 16 bytes.
// Zones are not carried. The body length must equal what the fields need;
// trailing bytes are refused so that one message has one encoding.
const (
	msgHeaderLen = 12
	// MaxMessageLen bounds the encoding of any message (MappingAdd with two
	// IPv6 addresses is the longest).
	MaxMessageLen = msgHeaderLen + 4 + 17 + 17 + 6
	maxVNI        = 1<<24 - 1
)

func appendAddr(b []byte, a netip.Addr) []byte {
	if a.Is4() {
		v := a.As4()
		return append(append(b, 4), v[:]...)
	}
	v := a.As16()
	return append(append(b, 6), v[:]...)
}

func readAddr(b []byte) (netip.Addr, int, error) {
	if len(b) < 1 {
		return netip.Addr{}, 0, ErrTruncated
	}
	switch b[0] {
	case 4:
		if len(b) < 5 {
			return netip.Addr{}, 0, ErrTruncated
		}
		return netip.AddrFrom4([4]byte(b[1:5])), 5, nil
	case 6:
		if len(b) < 17 {
			return netip.Addr{}, 0, ErrTruncated
		}
		a := netip.AddrFrom16([16]byte(b[1:17]))
		if a.Is4In6() {
			// One address, one encoding: IPv4 goes as family 4.
			return netip.Addr{}, 0, ErrMalformed
		}
		return a, 17, nil
	}
	return netip.Addr{}, 0, ErrMalformed
}

func validAddr(a netip.Addr) bool {
	return a.IsValid() && a.Zone() == "" && !a.Is4In6()
}

// Validate reports whether m's fields fit its type. AppendMessage refuses
// what Validate refuses, so that a peer never receives a message the
// decoder would reject.
func (m *Message) Validate() error {
	bad := func(why string) error { return fmt.Errorf("%w: %v message: %s", ErrMalformed, m.Type, why) }
	var zero Message
	rest := *m
	rest.Type, rest.Seq = 0, 0
	switch m.Type {
	case MsgMappingAdd:
		if m.VNI > maxVNI || !validAddr(m.Addr) || !validAddr(m.PA) {
			return bad("needs VNI < 2^24, Addr and PA")
		}
		rest.VNI, rest.Addr, rest.PA, rest.MAC = 0, netip.Addr{}, netip.Addr{}, [6]byte{}
	case MsgMappingRemove:
		if m.VNI > maxVNI || !validAddr(m.Addr) {
			return bad("needs VNI < 2^24 and Addr")
		}
		rest.VNI, rest.Addr = 0, netip.Addr{}
	case MsgAddressLearned:
		if m.VNI > maxVNI || !validAddr(m.Addr) {
			return bad("needs VNI < 2^24 and Addr")
		}
		rest.Vport, rest.VNI, rest.MAC, rest.Addr = 0, 0, [6]byte{}, netip.Addr{}
	case MsgAck:
		rest.AckSeq, rest.Status = 0, 0
	case MsgKeyRegister:
		if m.Key == (PublicKey{}) {
			return bad("needs Key")
		}
		rest.Vport, rest.KeyID, rest.Key = 0, 0, PublicKey{}
	case MsgKeyRevoke:
		rest.Vport, rest.KeyID = 0, 0
	default:
		return fmt.Errorf("%w: message type %d", ErrMalformed, m.Type)
	}
	if rest != zero {
		return bad("fields outside the type are set")
	}
	return nil
}

// AppendMessage appends the encoding of m to dst. It does not allocate when
// dst has MaxMessageLen bytes of spare capacity.
func AppendMessage(dst []byte, m *Message) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return dst, err
	}
	start := len(dst)
	dst = append(dst, MsgVersion, byte(m.Type), 0, 0)
	dst = binary.BigEndian.AppendUint64(dst, m.Seq)
	switch m.Type {
	case MsgMappingAdd:
		dst = binary.BigEndian.AppendUint32(dst, m.VNI)
		dst = appendAddr(dst, m.Addr)
		dst = appendAddr(dst, m.PA)
		dst = append(dst, m.MAC[:]...)
	case MsgMappingRemove:
		dst = binary.BigEndian.AppendUint32(dst, m.VNI)
		dst = appendAddr(dst, m.Addr)
	case MsgAddressLearned:
		dst = binary.BigEndian.AppendUint32(dst, m.Vport)
		dst = binary.BigEndian.AppendUint32(dst, m.VNI)
		dst = append(dst, m.MAC[:]...)
		dst = appendAddr(dst, m.Addr)
	case MsgAck:
		dst = binary.BigEndian.AppendUint64(dst, m.AckSeq)
		dst = append(dst, byte(m.Status))
	case MsgKeyRegister:
		dst = binary.BigEndian.AppendUint32(dst, m.Vport)
		dst = append(dst, m.KeyID)
		dst = append(dst, m.Key[:]...)
	case MsgKeyRevoke:
		dst = binary.BigEndian.AppendUint32(dst, m.Vport)
		dst = append(dst, m.KeyID)
	}
	binary.BigEndian.PutUint16(dst[start+2:], uint16(len(dst)-start-msgHeaderLen))
	return dst, nil
}

// DecodeMessage decodes the first message in b into m and returns how many
// bytes it used. It never allocates and never panics; on error m is left
// unchanged.
func DecodeMessage(b []byte, m *Message) (int, error) {
	if len(b) < msgHeaderLen {
		return 0, ErrTruncated
	}
	if b[0] != MsgVersion {
		return 0, ErrVersion
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if len(b)-msgHeaderLen < n {
		return 0, ErrTruncated
	}
	body := b[msgHeaderLen : msgHeaderLen+n]
	out := Message{Type: MsgType(b[1]), Seq: binary.BigEndian.Uint64(b[4:12])}
	var used int
	var err error
	switch out.Type {
	case MsgMappingAdd:
		if len(body) < 4 {
			return 0, ErrMalformed
		}
		out.VNI = binary.BigEndian.Uint32(body)
		var a, p int
		if out.Addr, a, err = readAddr(body[4:]); err != nil {
			return 0, ErrMalformed
		}
		if out.PA, p, err = readAddr(body[4+a:]); err != nil {
			return 0, ErrMalformed
		}
		used = 4 + a + p
		if len(body) < used+6 {
			return 0, ErrMalformed
		}
		copy(out.MAC[:], body[used:])
		used += 6
	case MsgMappingRemove:
		if len(body) < 4 {
			return 0, ErrMalformed
		}
		out.VNI = binary.BigEndian.Uint32(body)
		var a int
		if out.Addr, a, err = readAddr(body[4:]); err != nil {
			return 0, ErrMalformed
		}
		used = 4 + a
	case MsgAddressLearned:
		if len(body) < 14 {
			return 0, ErrMalformed
		}
		out.Vport = binary.BigEndian.Uint32(body)
		out.VNI = binary.BigEndian.Uint32(body[4:])
		copy(out.MAC[:], body[8:14])
		var a int
		if out.Addr, a, err = readAddr(body[14:]); err != nil {
			return 0, ErrMalformed
		}
		used = 14 + a
	case MsgAck:
		if len(body) < 9 {
			return 0, ErrMalformed
		}
		out.AckSeq = binary.BigEndian.Uint64(body)
		out.Status = AckStatus(body[8])
		used = 9
	case MsgKeyRegister:
		if len(body) < 37 {
			return 0, ErrMalformed
		}
		out.Vport = binary.BigEndian.Uint32(body)
		out.KeyID = body[4]
		copy(out.Key[:], body[5:37])
		used = 37
	case MsgKeyRevoke:
		if len(body) < 5 {
			return 0, ErrMalformed
		}
		out.Vport = binary.BigEndian.Uint32(body)
		out.KeyID = body[4]
		used = 5
	default:
		return 0, ErrMalformed
	}
	if used != len(body) {
		return 0, ErrMalformed
	}
	// The decoder sets only the fields of the type and readAddr yields
	// valid addresses, so of Validate's checks only these remain (the full
	// Validate compares the whole struct, a cost per message that shows at
	// a million messages a second).
	switch out.Type {
	case MsgMappingAdd, MsgMappingRemove, MsgAddressLearned:
		if out.VNI > maxVNI {
			return 0, ErrMalformed
		}
	case MsgKeyRegister:
		if out.Key == (PublicKey{}) {
			return 0, ErrMalformed
		}
	}
	*m = out
	return msgHeaderLen + n, nil
}

package securechan

import (
	cryptorand "crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"sync/atomic"

	"golang.org/x/crypto/nacl/box"
	"golang.org/x/crypto/nacl/secretbox"
)

// Sealed-address frame layout; doc.go has the byte diagram.
const (
	// EtherTypeSealed marks a sealed-address frame (IEEE local experimental
	// EtherType 2).
	EtherTypeSealed = 0x88B5
	// SealVersion is the version of the sealed-address format.
	SealVersion uint8 = 1
	// EthHeaderLen is an untagged Ethernet header.
	EthHeaderLen = 14
	// ClearBlockLen is the size of the clear address block. It is fixed so
	// that IPv4 and IPv6 destinations seal to the same length, and so that
	// the seal is one short secretbox (the fast path's cost).
	ClearBlockLen = 64
	// SealedBlockLen is the clear block plus the Poly1305 tag.
	SealedBlockLen = ClearBlockLen + secretbox.Overhead
	// SealedHeaderLen is everything before the payload.
	SealedHeaderLen = EthHeaderLen + 4 + nonceLen + SealedBlockLen

	offSealVersion = EthHeaderLen
	offKeyID       = EthHeaderLen + 1
	offFlags       = EthHeaderLen + 2
	offReserved    = EthHeaderLen + 3
	offNonce       = EthHeaderLen + 4
	offBlock       = offNonce + nonceLen

	// clear block fields
	cbVersion   = 0
	cbKeyID     = 1
	cbFamily    = 2
	cbFlags     = 3
	cbEtherType = 4
	cbDstMAC    = 6
	cbSrcMAC    = 12
	cbReserved  = 18
	cbDstIP     = 20
	cbPadding   = 36

	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86DD
)

// SealedDstMAC is the Ethernet destination of every sealed frame. A fixed,
// locally administered value: the real destination MAC is sealed, and any
// per-destination value here would reveal what the seal hides. The NIC does
// not look at it.
var SealedDstMAC = [6]byte{0x02, 0x88, 0xb5, 0x00, 0x00, 0x00}

// Sealer seals the destination of a VM's frames to the NIC's public key. It
// lives in the VM (or in tests standing for one). Safe for concurrent use.
type Sealer struct {
	key    [32]byte // box.Precompute(NIC public, VM private)
	keyID  uint8
	prefix [16]byte // random per Sealer; with the counter, nonces never repeat
	ctr    atomic.Uint64
}

// NewSealer precomputes the key a VM with private key vm shares with the NIC
// whose public key is nic. keyID is the id under which the host registered
// the VM's public key with the NIC (MsgKeyRegister); rand supplies the nonce
// prefix (crypto/rand when nil).
func NewSealer(vm PrivateKey, nic PublicKey, keyID uint8, rand io.Reader) (*Sealer, error) {
	if _, err := dh(&vm, &nic); err != nil {
		return nil, err
	}
	s := &Sealer{keyID: keyID}
	box.Precompute(&s.key, (*[32]byte)(&nic), (*[32]byte)(&vm))
	if rand == nil {
		rand = cryptorand.Reader
	}
	if _, err := io.ReadFull(rand, s.prefix[:]); err != nil {
		return nil, fmt.Errorf("securechan: nonce prefix: %w", err)
	}
	return s, nil
}

// KeyID returns the key id the Sealer stamps on its frames.
func (s *Sealer) KeyID() uint8 { return s.keyID }

// SealFrame turns an ordinary untagged Ethernet frame carrying IPv4 or IPv6
// into a sealed-address frame appended to dst: the destination MAC and IP
// move into the sealed block, the payload's destination address is zeroed
// and its checksums are adjusted so that they no longer depend on it. The
// NIC's OpenFrame gives back the original frame.
func (s *Sealer) SealFrame(dst, frame []byte) ([]byte, error) {
	if len(frame) < EthHeaderLen {
		return dst, ErrTruncated
	}
	et := binary.BigEndian.Uint16(frame[12:14])
	payload := frame[EthHeaderLen:]
	var p payloadInfo
	if err := parsePayload(et, payload, &p); err != nil {
		return dst, err
	}
	var block [ClearBlockLen]byte
	block[cbVersion] = SealVersion
	block[cbKeyID] = s.keyID
	block[cbFamily] = p.family
	binary.BigEndian.PutUint16(block[cbEtherType:], et)
	copy(block[cbDstMAC:cbDstMAC+6], frame[0:6])
	copy(block[cbSrcMAC:cbSrcMAC+6], frame[6:12])
	copy(block[cbDstIP:], payload[p.dstOff:p.dstOff+p.addrLen])

	start := len(dst)
	dst = append(dst, SealedDstMAC[:]...)
	dst = append(dst, frame[6:12]...)
	dst = append(dst, EtherTypeSealed>>8, EtherTypeSealed&0xff, SealVersion, s.keyID, 0, 0)
	dst = append(dst, s.prefix[:]...)
	dst = binary.BigEndian.AppendUint64(dst, s.ctr.Add(1))
	nonce := (*[24]byte)(dst[start+offNonce : start+offBlock])
	n := *nonce
	dst = secretbox.Seal(dst, block[:], &n, &s.key)
	clear(block[:])
	pstart := len(dst)
	dst = append(dst, payload...)
	// Blind the copy: the payload must not carry what the block hides.
	var zero [16]byte
	p.setDst(dst[pstart:], payload[p.dstOff:p.dstOff+p.addrLen], zero[:p.addrLen])
	return dst, nil
}

// payloadInfo is what OpenFrame and SealFrame need to know about an L3
// packet to write its destination address and fix its checksums.
type payloadInfo struct {
	family  uint8
	addrLen int
	dstOff  int // destination address within the payload
	ipCsum  int // IPv4 header checksum offset, or -1
	l4Csum  int // offset of a checksum over the pseudo-header, or -1
	udp4    bool
	udp6    bool
}

// parsePayload checks an L3 packet and finds the fields that depend on its
// destination address.
func parsePayload(et uint16, b []byte, p *payloadInfo) error {
	*p = payloadInfo{ipCsum: -1, l4Csum: -1}
	switch et {
	case etherTypeIPv4:
		if len(b) < 20 {
			return ErrTruncated
		}
		h := (*[20]byte)(b)
		ihl := int(h[0]&0x0f) * 4
		if h[0]>>4 != 4 || ihl < 20 {
			return ErrMalformed
		}
		if len(b) < ihl {
			return ErrTruncated
		}
		p.family, p.addrLen, p.dstOff, p.ipCsum = 4, 4, 16, 10
		if (uint16(h[6])<<8|uint16(h[7]))&0x1fff != 0 {
			return nil // a later fragment: no L4 header
		}
		switch h[9] {
		case 6:
			p.l4Csum = ihl + 16
		case 17:
			p.l4Csum, p.udp4 = ihl+6, true
		}
	case etherTypeIPv6:
		if len(b) < 40 {
			return ErrTruncated
		}
		if b[0]>>4 != 6 {
			return ErrMalformed
		}
		p.family, p.addrLen, p.dstOff = 6, 16, 24
		next, off := b[6], 40
	walk:
		for range 8 { // bounded: a chain of options is not worth more
			switch next {
			case 0, 60: // hop-by-hop, destination options
				if len(b) < off+8 {
					return ErrTruncated
				}
				next, off = b[off], off+(int(b[off+1])+1)*8
			case 44: // fragment
				if len(b) < off+8 {
					return ErrTruncated
				}
				if binary.BigEndian.Uint16(b[off+2:])&0xfff8 != 0 {
					return nil
				}
				next, off = b[off], off+8
			case 43:
				// A routing header makes the pseudo-header use the final
				// destination, which is not the header's: not sealable.
				return ErrMalformed
			default:
				break walk
			}
		}
		switch next {
		case 6:
			p.l4Csum = off + 16
		case 17:
			p.l4Csum, p.udp6 = off+6, true
		case 58:
			p.l4Csum = off + 2
		}
	default:
		return ErrMalformed
	}
	if p.l4Csum >= 0 && len(b) < p.l4Csum+2 {
		return ErrTruncated
	}
	return nil
}

// setDst writes addr as the destination of packet b (whose current
// destination is old) and updates the checksums incrementally (RFC 1624,
// eqn. 3), so that the payload does not have to be read again. The change of
// the one's complement sum is computed once and applied to each checksum.
func (p *payloadInfo) setDst(b, old, addr []byte) {
	n := p.addrLen
	copy(b[p.dstOff:p.dstOff+n], addr[:n])
	var delta uint32
	for i := 0; i+1 < n; i += 2 {
		delta += uint32(^binary.BigEndian.Uint16(old[i:])) + uint32(binary.BigEndian.Uint16(addr[i:]))
	}
	delta = delta&0xffff + delta>>16
	if p.ipCsum >= 0 {
		applyCsumDelta(b[p.ipCsum:p.ipCsum+2], delta, false)
	}
	if p.l4Csum >= 0 {
		c := b[p.l4Csum : p.l4Csum+2]
		if p.udp4 && c[0] == 0 && c[1] == 0 {
			return // IPv4 UDP without a checksum stays without one
		}
		applyCsumDelta(c, delta, p.udp4 || p.udp6)
	}
}

// applyCsumDelta adds delta (a partly folded one's complement sum) to the
// checksum stored in c. A UDP checksum of 0 means "none", so a UDP result of
// 0 is sent as 0xffff.
func applyCsumDelta(c []byte, delta uint32, udp bool) {
	sum := uint32(^binary.BigEndian.Uint16(c)) + delta
	sum = sum&0xffff + sum>>16
	sum = sum&0xffff + sum>>16
	r := ^uint16(sum)
	if udp && r == 0 {
		r = 0xffff
	}
	binary.BigEndian.PutUint16(c, r)
}

// OpenFrame opens the sealed-address frame that arrived on vport and writes
// the reconstructed ordinary Ethernet frame (destination MAC, source MAC,
// payload EtherType, payload with its destination address restored and its
// checksums fixed) into out, returning out[:n]. out must not overlap frame
// and needs max(ClearBlockLen, len(frame)-SealedHeaderLen+EthHeaderLen)
// bytes of capacity; it is also scratch for the clear block and is wiped on
// error. It does not allocate.
//
// Errors are the bare sentinels ErrNotSealed, ErrTruncated, ErrVersion,
// ErrMalformed, ErrUnknownKey, ErrTampered, ErrShortBuffer; ReasonOf maps
// them to counter reasons. The result contains the clear destination: the
// NIC routes it and never hands it, or anything derived from the clear
// block, to the host (see the package documentation).
func OpenFrame(t *KeyTable, vport uint32, frame, out []byte) ([]byte, error) {
	return t.OpenFrame(vport, frame, out)
}

// OpenFrame is the method form of the package-level OpenFrame.
func (t *KeyTable) OpenFrame(vport uint32, frame, out []byte) ([]byte, error) {
	if len(frame) < EthHeaderLen {
		return nil, ErrTruncated
	}
	if frame[12] != EtherTypeSealed>>8 || frame[13] != EtherTypeSealed&0xff {
		return nil, ErrNotSealed
	}
	if len(frame) < offKeyID+1 {
		return nil, ErrTruncated
	}
	if frame[offSealVersion] != SealVersion {
		return nil, ErrVersion
	}
	if len(frame) < SealedHeaderLen {
		return nil, ErrTruncated
	}
	if frame[offFlags] != 0 || frame[offReserved] != 0 {
		return nil, ErrMalformed
	}
	n := len(frame) - SealedHeaderLen + EthHeaderLen
	out = out[:cap(out)]
	if len(out) < n || len(out) < ClearBlockLen {
		return nil, ErrShortBuffer
	}
	keyID := frame[offKeyID]
	key := t.lookup(vport, keyID)
	if key == nil {
		return nil, ErrUnknownKey
	}
	block, ok := secretbox.Open(out[:0], frame[offBlock:SealedHeaderLen], (*[24]byte)(frame[offNonce:offBlock]), key)
	if !ok {
		return nil, ErrTampered
	}
	if err := checkBlock(block, frame, keyID); err != nil {
		clear(out[:ClearBlockLen])
		return nil, err
	}
	et := binary.BigEndian.Uint16(block[cbEtherType:])
	payload := frame[SealedHeaderLen:]
	var p payloadInfo
	err := parsePayload(et, payload, &p)
	if err == nil && p.family != block[cbFamily] {
		err = ErrMalformed
	}
	if err != nil {
		clear(out[:ClearBlockLen])
		return nil, err
	}
	var zero [16]byte
	if !isZero(payload[p.dstOff : p.dstOff+p.addrLen]) {
		// A VM that left its destination in the payload did not seal it;
		// refuse rather than route on either copy.
		clear(out[:ClearBlockLen])
		return nil, ErrMalformed
	}
	var dstMAC [6]byte
	var dstIP [16]byte
	copy(dstMAC[:], block[cbDstMAC:])
	copy(dstIP[:], block[cbDstIP:cbDstIP+16])

	copy(out[EthHeaderLen:n], payload) // overwrites the clear block: fields saved above
	copy(out[0:6], dstMAC[:])
	copy(out[6:12], frame[6:12])
	binary.BigEndian.PutUint16(out[12:14], et)
	p.setDst(out[EthHeaderLen:n], zero[:p.addrLen], dstIP[:p.addrLen])
	if n < ClearBlockLen {
		clear(out[n:ClearBlockLen]) // leftovers of the clear block
	}
	clear(dstIP[:])
	return out[:n], nil
}

// checkBlock verifies that the authenticated block agrees with the clear
// header (version, key id, source MAC: the seal covers them this way) and
// that its own fields are well formed.
func checkBlock(block, frame []byte, keyID uint8) error {
	// Fixed-size views and word loads: this runs per packet, and bounds
	// checks, loops or memequal calls would cost a noticeable part of the
	// open.
	b := (*[ClearBlockLen]byte)(block)
	le := binary.LittleEndian
	if b[cbVersion] != SealVersion || b[cbKeyID] != keyID ||
		le.Uint32(b[cbSrcMAC:]) != le.Uint32(frame[6:]) || le.Uint16(b[cbSrcMAC+4:]) != le.Uint16(frame[10:]) {
		return ErrTampered
	}
	pad := uint64(b[cbFlags]) | uint64(le.Uint16(b[cbReserved:])) | uint64(le.Uint32(b[cbPadding:])) |
		le.Uint64(b[cbPadding+4:]) | le.Uint64(b[cbPadding+12:]) | le.Uint64(b[cbPadding+20:])
	switch uint32(b[cbFamily])<<16 | uint32(b[cbEtherType])<<8 | uint32(b[cbEtherType+1]) {
	case 4<<16 | etherTypeIPv4:
		pad |= uint64(le.Uint32(b[cbDstIP+4:])) | le.Uint64(b[cbDstIP+8:])
	case 6<<16 | etherTypeIPv6:
	default:
		return ErrMalformed
	}
	if pad != 0 {
		return ErrMalformed
	}
	return nil
}

// SealedDestination returns the clear destination of a sealed frame. It is
// for tests and for the VM side's own checks; a NIC uses OpenFrame, and the
// host never calls it (the host has no key to call it with).
func SealedDestination(t *KeyTable, vport uint32, frame []byte) (mac [6]byte, ip netip.Addr, err error) {
	out := make([]byte, max(ClearBlockLen, len(frame)))
	f, err := t.OpenFrame(vport, frame, out)
	if err != nil {
		return mac, ip, err
	}
	copy(mac[:], f[0:6])
	switch binary.BigEndian.Uint16(f[12:14]) {
	case etherTypeIPv4:
		ip = netip.AddrFrom4([4]byte(f[EthHeaderLen+16 : EthHeaderLen+20]))
	default:
		ip = netip.AddrFrom16([16]byte(f[EthHeaderLen+24 : EthHeaderLen+40]))
	}
	return mac, ip, nil
}

// isZero reports whether an address field (4 or 16 bytes) is all zero.
func isZero(b []byte) bool {
	le := binary.LittleEndian
	if len(b) == 4 {
		return le.Uint32(b) == 0
	}
	return len(b) == 16 && le.Uint64(b)|le.Uint64(b[8:]) == 0
}

// IsSealedFrame reports whether frame is a sealed-address frame, untagged
// or behind up to two VLAN tags (802.1Q 0x8100, 802.1ad 0x88A8). A vswitch
// whose NIC lacks the crypto capability drops and counts every frame for
// which it is true: it fails closed, it never tries to open one. OpenFrame
// takes untagged frames only, so a NIC must also drop tagged ones.
func IsSealedFrame(frame []byte) bool {
	off := 12
	for range 3 {
		if len(frame) < off+2 {
			return false
		}
		switch binary.BigEndian.Uint16(frame[off:]) {
		case EtherTypeSealed:
			return true
		case 0x8100, 0x88a8:
			off += 4
		default:
			return false
		}
	}
	return false
}

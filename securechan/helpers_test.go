package securechan

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/nicpath/nicpath/internal/testclock"
)

// newFakeClock is a settable clock for rekey and rotation tests.
func newFakeClock() *testclock.Clock { return testclock.New(time.Unix(1_800_000_000, 0)) }

func mustKey(t testing.TB) (PublicKey, PrivateKey) {
	t.Helper()
	pub, priv, err := GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

// pair holds the two configs of a host (initiator) and NIC (responder) that
// pin each other.
type pair struct {
	hostPub, nicPub PublicKey
	host, nic       *Config
}

func newPair(t testing.TB, datagram bool, clock *testclock.Clock) *pair {
	t.Helper()
	hp, hk := mustKey(t)
	np, nk := mustKey(t)
	p := &pair{hostPub: hp, nicPub: np,
		host: &Config{PrivateKey: hk, PeerKeys: []PublicKey{np}, Datagram: datagram},
		nic:  &Config{PrivateKey: nk, PeerKeys: []PublicKey{hp}, Datagram: datagram},
	}
	if clock != nil {
		p.host.Now, p.nic.Now = clock.Now, clock.Now
	}
	return p
}

// drain returns every frame s has queued.
func drain(t testing.TB, s *Session) [][]byte {
	t.Helper()
	var out [][]byte
	for {
		f, ok, err := s.NextOutbound(nil)
		if err != nil {
			t.Fatalf("NextOutbound: %v", err)
		}
		if !ok {
			return out
		}
		out = append(out, f)
	}
}

// deliver opens every frame at dst and fails on error; it returns the data
// plaintexts.
func deliver(t testing.TB, dst *Session, frames [][]byte) [][]byte {
	t.Helper()
	var data [][]byte
	for _, f := range frames {
		p, err := dst.Open(nil, f)
		if err != nil {
			t.Fatalf("%v Open(frame type %d): %v", dst.role, f[1], err)
		}
		if p != nil {
			data = append(data, p)
		}
	}
	return data
}

// handshake runs the three handshake messages between two in-memory sessions.
func handshake(t testing.TB, p *pair) (ini, res *Session, wire [][]byte) {
	t.Helper()
	ini, err := NewInitiator(p.host, p.nicPub)
	if err != nil {
		t.Fatal(err)
	}
	res = NewResponder(p.nic)
	if _, err := ini.Start(); err != nil {
		t.Fatal(err)
	}
	f1 := drain(t, ini)
	deliver(t, res, f1)
	f2 := drain(t, res)
	deliver(t, ini, f2)
	f3 := drain(t, ini)
	deliver(t, res, f3)
	if !ini.Established() || !res.Established() {
		t.Fatalf("handshake incomplete: initiator %v responder %v", ini.Established(), res.Established())
	}
	wire = append(append(append(wire, f1...), f2...), f3...)
	return ini, res, wire
}

// sealMsgs seals msgs as one data frame from s.
func sealMsgs(t testing.TB, s *Session, msgs ...Message) [][]byte {
	t.Helper()
	var batch []byte
	for i := range msgs {
		var err error
		if batch, err = AppendMessage(batch, &msgs[i]); err != nil {
			t.Fatal(err)
		}
	}
	frames := drain(t, s)
	f, err := s.SealData(nil, batch)
	if err != nil {
		t.Fatalf("SealData: %v", err)
	}
	frames = append(frames, f)
	return append(frames, drain(t, s)...)
}

func decodeAll(t testing.TB, b []byte) []Message {
	t.Helper()
	var out []Message
	for len(b) > 0 {
		var m Message
		n, err := DecodeMessage(b, &m)
		if err != nil {
			t.Fatalf("DecodeMessage: %v", err)
		}
		out = append(out, m)
		b = b[n:]
	}
	return out
}

func sampleMessages() []Message {
	vmKey := PublicKey{1, 2, 3}
	return []Message{
		{Type: MsgMappingAdd, Seq: 1, VNI: 5001, Addr: netip.MustParseAddr("10.1.0.4"),
			PA: netip.MustParseAddr("198.18.0.2"), MAC: [6]byte{0x02, 0, 0, 0, 0, 4}},
		{Type: MsgMappingAdd, Seq: 2, VNI: 5001, Addr: netip.MustParseAddr("2001:db8::4"),
			PA: netip.MustParseAddr("2001:db8:ffff::2"), MAC: [6]byte{0x02, 0, 0, 0, 0, 6}},
		{Type: MsgMappingRemove, Seq: 3, VNI: 5001, Addr: netip.MustParseAddr("10.1.0.4")},
		{Type: MsgAddressLearned, Seq: 4, Vport: 7, VNI: 5001, MAC: [6]byte{0x02, 0, 0, 0, 0, 7},
			Addr: netip.MustParseAddr("10.1.0.7")},
		{Type: MsgAck, Seq: 5, AckSeq: 1, Status: AckOK},
		{Type: MsgKeyRegister, Seq: 6, Vport: 7, KeyID: 1, Key: vmKey},
		{Type: MsgKeyRevoke, Seq: 7, Vport: 7, KeyID: 1},
	}
}

// ipv4UDPFrame builds an untagged Ethernet frame with an IPv4/UDP packet
// with correct checksums.
func ipv4UDPFrame(dstMAC, srcMAC [6]byte, src, dst netip.Addr, payload []byte) []byte {
	ip := make([]byte, 20+8+len(payload))
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	ip[8] = 64
	ip[9] = 17
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	binary.BigEndian.PutUint16(ip[10:], checksum(ip[:20], 0))
	udp := ip[20:]
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], 4789)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	copy(udp[8:], payload)
	binary.BigEndian.PutUint16(udp[6:], udpChecksum(ip[12:16], ip[16:20], 17, udp))
	return append(append(append(append([]byte{}, dstMAC[:]...), srcMAC[:]...), 0x08, 0x00), ip...)
}

// ipv6TCPFrame builds an untagged Ethernet frame with an IPv6/TCP segment.
func ipv6TCPFrame(dstMAC, srcMAC [6]byte, src, dst netip.Addr, payload []byte) []byte {
	ip := make([]byte, 40+20+len(payload))
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(20+len(payload)))
	ip[6] = 6
	ip[7] = 64
	s, d := src.As16(), dst.As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	tcp := ip[40:]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 443)
	tcp[12] = 5 << 4
	tcp[13] = 0x18
	copy(tcp[20:], payload)
	binary.BigEndian.PutUint16(tcp[16:], udpChecksum(ip[8:24], ip[24:40], 6, tcp))
	return append(append(append(append([]byte{}, dstMAC[:]...), srcMAC[:]...), 0x86, 0xdd), ip...)
}

// checksum is the Internet checksum (RFC 1071), computed from scratch: the
// reference the incremental updates are checked against.
func checksum(b []byte, initial uint32) uint16 {
	sum := initial
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func udpChecksum(src, dst []byte, proto byte, seg []byte) uint16 {
	var pseudo []byte
	pseudo = append(pseudo, src...)
	pseudo = append(pseudo, dst...)
	if len(src) == 4 {
		pseudo = append(pseudo, 0, proto, byte(len(seg)>>8), byte(len(seg)))
	} else {
		pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(seg)))
		pseudo = append(pseudo, 0, 0, 0, proto)
	}
	tmp := append(append([]byte{}, seg...), make([]byte, len(seg)%2)...)
	ck := make([]byte, 0, len(pseudo)+len(tmp))
	ck = append(append(ck, pseudo...), tmp...)
	// zero the checksum field of the segment copy before summing
	off := len(pseudo) + 6
	if proto == 6 {
		off = len(pseudo) + 16
	}
	ck[off], ck[off+1] = 0, 0
	c := checksum(ck, 0)
	if c == 0 && proto == 17 {
		c = 0xffff
	}
	return c
}

func wantErr(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("got error %v, want %v", err, target)
	}
}

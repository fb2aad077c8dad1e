package securechan

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fixedKey derives a deterministic key pair, so that the committed seed
// corpus can hold genuine sealed frames and handshakes for these keys.
func fixedKey(name string) (PublicKey, PrivateKey) {
	sum := sha256.Sum256([]byte("nicpath securechan fuzz " + name))
	priv := PrivateKey(sum)
	return priv.Public(), priv
}

// fixedRand is a deterministic byte stream (for reproducible seeds only).
type fixedRand struct{ ctr uint64 }

func (r *fixedRand) Read(p []byte) (int, error) {
	for i := range p {
		r.ctr++
		s := sha256.Sum256(binary.BigEndian.AppendUint64(nil, r.ctr))
		p[i] = s[0]
	}
	return len(p), nil
}

func fuzzTable() *KeyTable {
	_, nicKey := fixedKey("nic")
	t := NewKeyTable(nicKey, WithClock(func() time.Time { return time.Unix(1_800_000_000, 0) }))
	vmPub, _ := fixedKey("vm")
	if err := t.Register(testVport, 1, vmPub); err != nil {
		panic(err)
	}
	return t
}

func fuzzSealer() *Sealer {
	_, vmKey := fixedKey("vm")
	nicPub, _ := fixedKey("nic")
	s, err := NewSealer(vmKey, nicPub, 1, &fixedRand{})
	if err != nil {
		panic(err)
	}
	return s
}

func fuzzPair() *pair {
	hp, hk := fixedKey("host")
	np, nk := fixedKey("nic")
	clock := func() time.Time { return time.Unix(1_800_000_000, 0) }
	return &pair{hostPub: hp, nicPub: np,
		host: &Config{PrivateKey: hk, PeerKeys: []PublicKey{np}, Rand: &fixedRand{}, Now: clock},
		nic:  &Config{PrivateKey: nk, PeerKeys: []PublicKey{hp}, Rand: &fixedRand{ctr: 1 << 40}, Now: clock},
	}
}

func FuzzDecodeMessage(f *testing.F) {
	for _, m := range sampleMessages() {
		enc, _ := AppendMessage(nil, &m)
		f.Add(enc)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Message
		before := m
		n, err := DecodeMessage(b, &m)
		if err != nil {
			if m != before {
				t.Fatal("failed decode changed the message")
			}
			if ReasonOf(err) == DropOther {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if n < msgHeaderLen || n > len(b) || n > MaxMessageLen {
			t.Fatalf("consumed %d of %d bytes", n, len(b))
		}
		// One message, one encoding: re-encoding gives the same bytes.
		enc, err := AppendMessage(nil, &m)
		if err != nil {
			t.Fatalf("decoded message does not encode: %v (%+v)", err, m)
		}
		if !bytes.Equal(enc, b[:n]) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b[:n], enc)
		}
	})
}

func FuzzOpenFrame(f *testing.F) {
	s := fuzzSealer()
	for _, fr := range [][]byte{
		ipv4UDPFrame(dstMAC, vmMAC, vmIP, secret4, []byte("seed")),
		ipv6TCPFrame(dstMAC, vmMAC, vmIP6, secret6, []byte("seed")),
	} {
		sf, _ := s.SealFrame(nil, fr)
		f.Add(sf)
	}
	// One key table for all inputs: OpenFrame only reads it (sealed
	// frames carry no replay state), so every input meets the same table.
	table := fuzzTable()
	f.Fuzz(func(t *testing.T, frame []byte) {
		out := make([]byte, max(ClearBlockLen, len(frame)+EthHeaderLen))
		got, err := OpenFrame(table, testVport, frame, out)
		if err != nil {
			if ReasonOf(err) == DropOther {
				t.Fatalf("untyped error %v", err)
			}
			if !bytes.Equal(out[:ClearBlockLen], make([]byte, ClearBlockLen)) {
				t.Fatal("refused frame left bytes in the output buffer")
			}
			return
		}
		if len(got) != len(frame)-SealedHeaderLen+EthHeaderLen || !bytes.Equal(got[6:12], frame[6:12]) {
			t.Fatalf("opened frame inconsistent with its input")
		}
		et := binary.BigEndian.Uint16(got[12:14])
		if et != etherTypeIPv4 && et != etherTypeIPv6 {
			t.Fatalf("opened frame has EtherType %#x", et)
		}
	})
}

// FuzzSealRoundTrip: whatever the VM side accepts, the NIC side opens back
// to the same frame (checksums equal up to the two encodings of zero).
func FuzzSealRoundTrip(f *testing.F) {
	f.Add(ipv4UDPFrame(dstMAC, vmMAC, vmIP, secret4, []byte("seed")))
	f.Add(ipv6TCPFrame(dstMAC, vmMAC, vmIP6, secret6, []byte("seed")))
	tmpl := fuzzSealer()
	table := fuzzTable() // only read, as in FuzzOpenFrame
	f.Fuzz(func(t *testing.T, frame []byte) {
		// A sealer whose counter starts afresh for every input (its key
		// and nonce prefix are the template's), so that an input seals to
		// the same bytes every time. One sealer shared by all inputs
		// sealed each under the count of those before it, and a failure
		// that needed that nonce would not fail when rerun alone.
		s := &Sealer{key: tmpl.key, keyID: tmpl.keyID, prefix: tmpl.prefix}
		sf, err := s.SealFrame(nil, frame)
		if err != nil {
			if ReasonOf(err) == DropOther {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		// The destination leaves the clear parts: a fixed Ethernet
		// destination, and a zero address in the payload.
		if [6]byte(sf[:6]) != SealedDstMAC {
			t.Fatal("sealed frame carries a per-destination Ethernet address")
		}
		dstOff, n := 16, 4
		if binary.BigEndian.Uint16(frame[12:14]) == etherTypeIPv6 {
			dstOff, n = 24, 16
		}
		if !isZero(sf[SealedHeaderLen+dstOff : SealedHeaderLen+dstOff+n]) {
			t.Fatal("sealed payload carries the destination address")
		}
		out := make([]byte, len(sf)+ClearBlockLen)
		got, err := OpenFrame(table, testVport, sf, out)
		if err != nil {
			t.Fatalf("NIC refused what the VM sealed: %v", err)
		}
		if len(got) != len(frame) {
			t.Fatalf("length %d, want %d", len(got), len(frame))
		}
		for i := range got {
			if got[i] != frame[i] && !csumZeroForms(got, frame, i) {
				t.Fatalf("byte %d differs: got %#x want %#x\n got %x\nwant %x", i, got[i], frame[i], got, frame)
			}
		}
	})
}

// csumZeroForms reports whether byte i lies in a 16-bit word that is 0x0000
// in one frame and 0xffff in the other (both encode zero in one's
// complement; an incremental update may produce either).
func csumZeroForms(a, b []byte, i int) bool {
	for _, start := range []int{i - 1, i} {
		if start < 0 || start+1 >= len(a) {
			continue
		}
		x, y := binary.BigEndian.Uint16(a[start:]), binary.BigEndian.Uint16(b[start:])
		if x^y == 0xffff && (x == 0 || y == 0) {
			return true
		}
	}
	return false
}

// FuzzSessionOpen feeds arbitrary frames to a responder waiting for a
// handshake and to both ends of an established session.
func FuzzSessionOpen(f *testing.F) {
	p := fuzzPair()
	ini, err := NewInitiator(p.host, p.nicPub)
	if err != nil {
		f.Fatal(err)
	}
	init, _ := ini.Start()
	f.Add(init)
	f.Add([]byte{ProtocolVersion, frameData, flagInitiator, 0, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Add([]byte{ProtocolVersion, frameResp, 0, 0})
	// One established pair for all inputs (a handshake per input would
	// cost more than the input): a refused frame changes nothing (checked
	// below) and an accepted one fails the test, so the sessions stay as
	// they were from one input to the next. The responder waiting for a
	// handshake is new for every input.
	a, b, _ := handshake(f, p)
	f.Fuzz(func(t *testing.T, frame []byte) {
		for _, s := range []*Session{NewResponder(p.nic), a, b} {
			before := snapshot(s)
			_, err := s.Open(nil, frame)
			if err == nil {
				// Only a genuine Init can be accepted (by the fresh
				// responder); nothing else authenticates.
				if s.role != Responder || s == b || len(frame) != initLen {
					t.Fatalf("%v accepted a fuzzed frame", s.role)
				}
				continue
			}
			if ReasonOf(err) == DropOther && !errors.Is(err, io.EOF) {
				t.Fatalf("untyped error %v", err)
			}
			if after := snapshot(s); fmt.Sprint(before) != fmt.Sprint(after) {
				t.Fatal("refused frame changed the session")
			}
		}
	})
}

// fakeStream is a Transport reading from fixed bytes.
type fakeStream struct{ r *bytes.Reader }

func (s *fakeStream) Read(p []byte) (int, error)      { return s.r.Read(p) }
func (s *fakeStream) Write(p []byte) (int, error)     { return len(p), nil }
func (s *fakeStream) Close() error                    { return nil }
func (s *fakeStream) SetReadDeadline(time.Time) error { return nil }

// FuzzConnStream feeds arbitrary bytes to an established Conn's stream
// framing.
func FuzzConnStream(f *testing.F) {
	f.Add([]byte{0x00, 0x04, 1, 3, 1, 0})
	f.Add([]byte{0xff, 0xff})
	f.Add(append([]byte{0x00, 0x1c}, make([]byte, 0x1c)...))
	// One established session for all inputs, as in FuzzSessionOpen (a
	// handshake per input would cost more than the input): nothing may
	// authenticate, and a refused frame must change nothing, which is
	// checked below, so every input meets the session as the handshake
	// left it. The Conn around it is new for every input.
	p := fuzzPair()
	_, res, _ := handshake(f, p)
	f.Fuzz(func(t *testing.T, data []byte) {
		before := snapshot(res)
		c := newConn(&fakeStream{r: bytes.NewReader(data)}, res, p.nic)
		var m Message
		for range 4 {
			err := c.Recv(&m)
			if err == nil {
				t.Fatal("a message authenticated out of fuzzed bytes")
			}
			if ReasonOf(err) == DropOther && !errors.Is(err, io.EOF) {
				t.Fatalf("untyped error %v", err)
			}
		}
		if after := snapshot(res); fmt.Sprint(before) != fmt.Sprint(after) {
			t.Fatal("refused bytes changed the session")
		}
	})
}

// TestWriteFuzzCorpus regenerates the committed seed corpus from the seeds
// above (genuine frames under the fixed fuzz keys included). It runs only
// when SECURECHAN_WRITE_CORPUS=1.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("SECURECHAN_WRITE_CORPUS") != "1" {
		t.Skip("set SECURECHAN_WRITE_CORPUS=1 to rewrite testdata/fuzz")
	}
	s := fuzzSealer()
	write := func(target, name string, b []byte) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range sampleMessages() {
		enc, _ := AppendMessage(nil, &m)
		write("FuzzDecodeMessage", strings.ReplaceAll(m.Type.String(), "-", "_")+"_"+fmt.Sprint(m.Seq), enc)
	}
	bad, _ := AppendMessage(nil, &sampleMessages()[0])
	bad[0] = 0
	write("FuzzDecodeMessage", "old_version", bad)
	write("FuzzDecodeMessage", "truncated", bad[:7])

	v4 := ipv4UDPFrame(dstMAC, vmMAC, vmIP, secret4, []byte("seed"))
	v6 := ipv6TCPFrame(dstMAC, vmMAC, vmIP6, secret6, []byte("seed"))
	sf4, _ := s.SealFrame(nil, v4)
	sf6, _ := s.SealFrame(nil, v6)
	write("FuzzOpenFrame", "ipv4_udp", sf4)
	write("FuzzOpenFrame", "ipv6_tcp", sf6)
	write("FuzzOpenFrame", "header_only", sf4[:SealedHeaderLen])
	tampered := bytes.Clone(sf4)
	tampered[offBlock] ^= 1
	write("FuzzOpenFrame", "tampered", tampered)
	write("FuzzOpenFrame", "wrong_key_id", append(append([]byte{}, sf4[:offKeyID]...), append([]byte{9}, sf4[offKeyID+1:]...)...))

	write("FuzzSealRoundTrip", "ipv4_udp", v4)
	write("FuzzSealRoundTrip", "ipv6_tcp", v6)
	noCsum := bytes.Clone(v4)
	noCsum[EthHeaderLen+26], noCsum[EthHeaderLen+27] = 0, 0
	write("FuzzSealRoundTrip", "ipv4_udp_nocsum", noCsum)
	frag := bytes.Clone(v4)
	frag[EthHeaderLen+6] = 0x00
	frag[EthHeaderLen+7] = 0x10
	write("FuzzSealRoundTrip", "ipv4_fragment", frag)

	p := fuzzPair()
	ini, _ := NewInitiator(p.host, p.nicPub)
	init, _ := ini.Start()
	write("FuzzSessionOpen", "init", init)
	write("FuzzSessionOpen", "init_downgraded", append([]byte{0}, init[1:]...))
	write("FuzzSessionOpen", "data_garbage", []byte{ProtocolVersion, frameData, flagInitiator, 0, 0, 0, 0, 0, 0, 0, 0, 1, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5})
	write("FuzzSessionOpen", "resp_short", []byte{ProtocolVersion, frameResp, 0, 0})

	write("FuzzConnStream", "short_frame", []byte{0x00, 0x04, 1, 3, 1, 0})
	write("FuzzConnStream", "oversized", []byte{0xff, 0xff})
	write("FuzzConnStream", "zeros", append([]byte{0x00, 0x1c}, make([]byte, 0x1c)...))
	_ = netip.Addr{}
}

package securechan

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/nicpath/nicpath/internal/testclock"
)

var (
	vmMAC   = [6]byte{0x02, 0x00, 0x00, 0x00, 0x01, 0x07}
	dstMAC  = [6]byte{0x02, 0x00, 0x00, 0x00, 0x02, 0x99}
	vmIP    = netip.MustParseAddr("198.51.100.7")
	secret4 = netip.MustParseAddr("203.0.113.77")
	vmIP6   = netip.MustParseAddr("2001:db8:1::7")
	secret6 = netip.MustParseAddr("2001:db8:77::77")
)

const testVport = 7

// sealEnv is a NIC key table and a VM sealer registered in it.
type sealEnv struct {
	table  *KeyTable
	sealer *Sealer
	vmPub  PublicKey
	vmKey  PrivateKey
	clock  *testclock.Clock
}

func newSealEnv(t testing.TB) *sealEnv {
	t.Helper()
	_, nicKey := mustKey(t)
	clock := newFakeClock()
	table := NewKeyTable(nicKey, WithClock(clock.Now), WithRotationGrace(10*time.Second))
	vmPub, vmKey := mustKey(t)
	if err := table.Register(testVport, 1, vmPub); err != nil {
		t.Fatal(err)
	}
	s, err := NewSealer(vmKey, table.PublicKey(), 1, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &sealEnv{table: table, sealer: s, vmPub: vmPub, vmKey: vmKey, clock: clock}
}

func (e *sealEnv) seal(t testing.TB, frame []byte) []byte {
	t.Helper()
	sf, err := e.sealer.SealFrame(nil, frame)
	if err != nil {
		t.Fatalf("SealFrame: %v", err)
	}
	return sf
}

func TestSealOpenRoundTrip(t *testing.T) {
	e := newSealEnv(t)
	frames := map[string][]byte{
		"ipv4-udp":   ipv4UDPFrame(dstMAC, vmMAC, vmIP, secret4, []byte("hello, sealed world")),
		"ipv4-udp-0": ipv4UDPFrame(dstMAC, vmMAC, vmIP, secret4, nil),
		"ipv6-tcp":   ipv6TCPFrame(dstMAC, vmMAC, vmIP6, secret6, []byte("GET / HTTP/1.1\r\n")),
	}
	// IPv4 UDP without a checksum stays without one.
	noCsum := ipv4UDPFrame(dstMAC, vmMAC, vmIP, secret4, []byte("x"))
	noCsum[EthHeaderLen+20+6], noCsum[EthHeaderLen+20+7] = 0, 0
	frames["ipv4-udp-nocsum"] = noCsum
	for name, orig := range frames {
		t.Run(name, func(t *testing.T) {
			sf := e.seal(t, orig)
			if got := binary.BigEndian.Uint16(sf[12:14]); got != EtherTypeSealed {
				t.Fatalf("EtherType %#x", got)
			}
			if len(sf) != SealedHeaderLen+len(orig)-EthHeaderLen {
				t.Fatalf("sealed length %d, want %d", len(sf), SealedHeaderLen+len(orig)-EthHeaderLen)
			}
			assertNoClearDst(t, sf, orig)
			out := make([]byte, 2048)
			got, err := OpenFrame(e.table, testVport, sf, out)
			if err != nil {
				t.Fatalf("OpenFrame: %v", err)
			}
			if !bytes.Equal(got, orig) {
				t.Fatalf("reconstructed frame differs\n got %x\nwant %x", got, orig)
			}
		})
	}
}

// assertNoClearDst checks that a sealed frame carries neither the
// destination MAC nor the destination IP of the original frame, and that the
// blinded payload's checksums do not depend on it.
func assertNoClearDst(t testing.TB, sealed, orig []byte) {
	t.Helper()
	var ip []byte
	if binary.BigEndian.Uint16(orig[12:14]) == 0x0800 {
		ip = orig[EthHeaderLen+16 : EthHeaderLen+20]
	} else {
		ip = orig[EthHeaderLen+24 : EthHeaderLen+40]
	}
	if bytes.Contains(sealed, ip) || bytes.Contains(sealed, orig[0:6]) {
		t.Fatalf("sealed frame contains the clear destination:\n%x", sealed)
	}
}

func TestSealedChecksumsIndependentOfDestination(t *testing.T) {
	// Two frames identical but for the destination must seal to payloads
	// that are identical too: otherwise a checksum leaks the address.
	e := newSealEnv(t)
	a := e.seal(t, ipv4UDPFrame(dstMAC, vmMAC, vmIP, secret4, []byte("same")))
	b := e.seal(t, ipv4UDPFrame(dstMAC, vmMAC, vmIP, netip.MustParseAddr("192.0.2.200"), []byte("same")))
	if !bytes.Equal(a[SealedHeaderLen:], b[SealedHeaderLen:]) {
		t.Fatalf("blinded payloads differ:\n%x\n%x", a[SealedHeaderLen:], b[SealedHeaderLen:])
	}
}

func TestSealedNoncesNeverRepeat(t *testing.T) {
	e := newSealEnv(t)
	f := ipv4UDPFrame(dstMAC, vmMAC, vmIP, secret4, nil)
	seen := map[[24]byte]bool{}
	for range 1000 {
		sf := e.seal(t, f)
		n := [24]byte(sf[offNonce:offBlock])
		if seen[n] {
			t.Fatal("nonce repeated")
		}
		seen[n] = true
	}
}

func TestOpenFrameZeroAllocs(t *testing.T) {
	e := newSealEnv(t)
	sf := e.seal(t, ipv4UDPFrame(dstMAC, vmMAC, vmIP, secret4, make([]byte, 22)))
	out := make([]byte, 2048)
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := OpenFrame(e.table, testVport, sf, out); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("OpenFrame allocates %v times per frame", allocs)
	}
	bad := append([]byte(nil), sf...)
	bad[offBlock+3] ^= 1
	allocs = testing.AllocsPerRun(1000, func() {
		if _, err := OpenFrame(e.table, testVport, bad, out); err != ErrTampered {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("a refused frame allocates %v times", allocs)
	}
}

func TestOpenFrameWipesScratchOnError(t *testing.T) {
	e := newSealEnv(t)
	// A VM that leaves its destination in the payload is refused, and the
	// clear block it sealed must not stay in the caller's buffer.
	orig := ipv4UDPFrame(dstMAC, vmMAC, vmIP, secret4, nil)
	sf := e.seal(t, orig)
	copy(sf[SealedHeaderLen+16:], orig[EthHeaderLen+16:EthHeaderLen+20]) // un-blind
	out := make([]byte, 256)
	if _, err := OpenFrame(e.table, testVport, sf, out); err != ErrMalformed {
		t.Fatalf("got %v, want ErrMalformed", err)
	}
	if !bytes.Equal(out[:ClearBlockLen], make([]byte, ClearBlockLen)) {
		t.Fatalf("clear block left in the output buffer: %x", out[:ClearBlockLen])
	}
}

func TestOpenFrameShortOutput(t *testing.T) {
	e := newSealEnv(t)
	sf := e.seal(t, ipv4UDPFrame(dstMAC, vmMAC, vmIP, secret4, make([]byte, 100)))
	if _, err := OpenFrame(e.table, testVport, sf, make([]byte, 60)); err != ErrShortBuffer {
		t.Fatalf("got %v, want ErrShortBuffer", err)
	}
}

func TestKeyRotationWindow(t *testing.T) {
	e := newSealEnv(t)
	frame := ipv4UDPFrame(dstMAC, vmMAC, vmIP, secret4, []byte("rotate"))
	oldFrame := e.seal(t, frame)

	newPub, newKey := mustKey(t)
	if err := e.table.Register(testVport, 2, newPub); err != nil {
		t.Fatal(err)
	}
	newSealer, err := NewSealer(newKey, e.table.PublicKey(), 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	newFrame, _ := newSealer.SealFrame(nil, frame)
	out := make([]byte, 512)
	for _, f := range [][]byte{oldFrame, newFrame} {
		if _, err := OpenFrame(e.table, testVport, f, out); err != nil {
			t.Fatalf("inside the rotation window: %v", err)
		}
	}
	if ks := e.table.Keys(testVport); len(ks) != 2 || ks[0].KeyID != 2 || ks[1].KeyID != 1 || ks[1].Until.IsZero() {
		t.Fatalf("keys during rotation: %+v", ks)
	}
	e.clock.Advance(10 * time.Second)
	if _, err := OpenFrame(e.table, testVport, oldFrame, out); err != ErrUnknownKey {
		t.Fatalf("old key after the window: got %v, want ErrUnknownKey", err)
	}
	if _, err := OpenFrame(e.table, testVport, newFrame, out); err != nil {
		t.Fatalf("new key after the window: %v", err)
	}
	e.table.Sweep()
	if ks := e.table.Keys(testVport); len(ks) != 1 || ks[0].KeyID != 2 {
		t.Fatalf("keys after sweep: %+v", ks)
	}
	// A third key retires the second and the window starts again.
	thirdPub, _ := mustKey(t)
	if err := e.table.Register(testVport, 3, thirdPub); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFrame(e.table, testVport, newFrame, out); err != nil {
		t.Fatalf("second key right after the third was registered: %v", err)
	}
	e.table.Revoke(testVport, 2)
	if _, err := OpenFrame(e.table, testVport, newFrame, out); err != ErrUnknownKey {
		t.Fatalf("revoked key: got %v, want ErrUnknownKey", err)
	}
}

func TestKeyTableRegisterRules(t *testing.T) {
	e := newSealEnv(t)
	if err := e.table.Register(testVport, 1, e.vmPub); err != nil {
		t.Fatalf("registering the same key again: %v", err)
	}
	other, _ := mustKey(t)
	if err := e.table.Register(testVport, 1, other); err == nil {
		t.Fatal("a live key id was rebound to another key")
	}
	if err := e.table.Register(testVport, 9, PublicKey{}); err == nil {
		t.Fatal("a low-order (all-zero) VM key was accepted")
	}
	if ks := e.table.Keys(testVport); len(ks) != 1 || ks[0].Public != e.vmPub {
		t.Fatalf("refused registrations changed the table: %+v", ks)
	}
	e.table.RemoveVport(testVport)
	if ks := e.table.Keys(testVport); ks != nil {
		t.Fatalf("keys after RemoveVport: %+v", ks)
	}
}

package directory

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"net/netip"
	"testing"
)

func testKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func sample() Record {
	return Record{VNI: 100, CA: netip.MustParseAddr("10.0.0.5"), MAC: [6]byte{2, 0, 0, 0, 0, 5}, VM: "vm5",
		Tenant: "t", VNET: "net", Version: 4,
		Loc:    Location{Host: "host-a", PA: netip.MustParseAddr("198.18.0.1"), Generation: 1},
		Shadow: Location{Host: "host-c", PA: netip.MustParseAddr("198.18.0.3"), Generation: 2}}
}

func TestRecordRoundTrip(t *testing.T) {
	k := testKey(1)
	r := sample()
	b, err := Sign(&r, k)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Verifier{Trusted: []ed25519.PublicKey{k.Public().(ed25519.PublicKey)}}.Verify(r.Key(), b)
	if err != nil {
		t.Fatal(err)
	}
	if got.VM != "vm5" || got.Loc != r.Loc || got.Shadow != r.Shadow || got.CA != r.CA || got.MAC != r.MAC || got.Version != 4 {
		t.Fatalf("decoded %+v, want %+v", got, r)
	}
	b2, err := got.Encode()
	if err != nil || !bytes.Equal(b, b2) {
		t.Fatalf("re-encoding differs: %v", err)
	}
	// IPv6, no shadow.
	r6 := sample()
	r6.CA, r6.Shadow = netip.MustParseAddr("2001:db8::5"), Location{}
	b6, err := Sign(&r6, k)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Decode(b6); err != nil || got.CA != r6.CA || got.Shadow.Host != "" {
		t.Fatalf("v6: %+v %v", got, err)
	}
}

func TestRecordRefused(t *testing.T) {
	k, other := testKey(1), testKey(2)
	v := Verifier{Trusted: []ed25519.PublicKey{k.Public().(ed25519.PublicKey)}}
	r := sample()
	b, _ := Sign(&r, k)
	// Every single-byte change of the signed part breaks the signature or
	// the format.
	for i := range b {
		bad := bytes.Clone(b)
		bad[i] ^= 0x40
		if _, err := v.Verify(r.Key(), bad); err == nil {
			t.Fatalf("flipping byte %d accepted", i)
		}
	}
	unsigned, _ := r.body(nil)
	if _, err := v.Verify(r.Key(), unsigned); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("unsigned: %v", err)
	}
	forged := sample()
	forged.Loc.PA = netip.MustParseAddr("203.0.113.66")
	fb, _ := Sign(&forged, other)
	if _, err := v.Verify(r.Key(), fb); !errors.Is(err, ErrSigner) {
		t.Fatalf("signed by an untrusted key: %v", err)
	}
	if _, err := v.Verify(Key(101, r.CA), b); !errors.Is(err, ErrKey) {
		t.Fatalf("under another key: %v", err)
	}
	if _, err := v.Verify(r.Key(), b[:len(b)-1]); err == nil {
		t.Fatal("truncated signature accepted")
	}
}

func TestSelectHighestValid(t *testing.T) {
	k, other := testKey(1), testKey(2)
	v := Verifier{Trusted: []ed25519.PublicKey{k.Public().(ed25519.PublicKey)}}
	mk := func(ver uint64, key ed25519.PrivateKey, pa string) []byte {
		r := sample()
		r.Version, r.Loc.PA = ver, netip.MustParseAddr(pa)
		b, _ := Sign(&r, key)
		return b
	}
	v4, v5 := mk(4, k, "198.18.0.1"), mk(5, k, "198.18.0.3")
	forged := mk(99, other, "203.0.113.66")
	tieA, tieB := mk(5, k, "198.18.0.7"), mk(5, k, "198.18.0.8")
	key := sample().Key()
	if i, err := v.Select(key, [][]byte{v4, forged, v5}); err != nil || i != 2 {
		t.Fatalf("select = %d, %v; want the version 5 record", i, err)
	}
	// A tie resolves to the same record whatever the order.
	i1, _ := v.Select(key, [][]byte{tieA, tieB})
	i2, _ := v.Select(key, [][]byte{tieB, tieA})
	if !bytes.Equal([][]byte{tieA, tieB}[i1], [][]byte{tieB, tieA}[i2]) {
		t.Fatal("a tie does not resolve deterministically")
	}
	if _, err := v.Select(key, [][]byte{forged, []byte("junk")}); err == nil {
		t.Fatal("selected among invalid records only")
	}
}

func TestKeyRoundTrip(t *testing.T) {
	for _, ca := range []string{"10.1.2.3", "2001:db8::1"} {
		k := Key(7, netip.MustParseAddr(ca))
		vni, a, err := ParseKey(k)
		if err != nil || vni != 7 || a.String() != ca {
			t.Fatalf("%s: %d %v %v", k, vni, a, err)
		}
	}
	for _, k := range []string{"/other/1/10.0.0.1", "/nicpath/x/10.0.0.1", "/nicpath/1", "/nicpath/01/10.0.0.1", "/nicpath/1/::ffff:10.0.0.1x"} {
		if _, _, err := ParseKey(k); err == nil {
			t.Fatalf("%q parsed", k)
		}
	}
}

package securechan

import (
	"bytes"
	"reflect"
	"testing"
)

// TestSealedFrameAttacks: every hostile variant of a sealed frame is refused
// with a typed error, without panicking, without changing the key table and
// without leaving clear bytes in the output buffer.
func TestSealedFrameAttacks(t *testing.T) {
	e := newSealEnv(t)
	orig := ipv4UDPFrame(dstMAC, vmMAC, vmIP, secret4, []byte("payload"))
	sf := e.seal(t, orig)

	// Another VM, registered on another vport, with its own key.
	otherPub, otherKey := mustKey(t)
	if err := e.table.Register(testVport+1, 1, otherPub); err != nil {
		t.Fatal(err)
	}
	other, _ := NewSealer(otherKey, e.table.PublicKey(), 1, nil)
	otherFrame, _ := other.SealFrame(nil, orig)

	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(sf)) }
	cases := []struct {
		name  string
		vport uint32
		frame []byte
		want  error
	}{
		{"empty", testVport, nil, ErrTruncated},
		{"ethernet-only", testVport, sf[:EthHeaderLen], ErrTruncated},
		{"header-cut", testVport, sf[:offBlock+10], ErrTruncated},
		{"block-cut", testVport, sf[:SealedHeaderLen-1], ErrTruncated},
		{"payload-cut", testVport, sf[:SealedHeaderLen+10], ErrTruncated},
		{"not-sealed", testVport, orig, ErrNotSealed},
		{"version-0", testVport, mod(func(b []byte) []byte { b[offSealVersion] = 0; return b }), ErrVersion},
		{"version-2", testVport, mod(func(b []byte) []byte { b[offSealVersion] = 2; return b }), ErrVersion},
		{"flags", testVport, mod(func(b []byte) []byte { b[offFlags] = 1; return b }), ErrMalformed},
		{"nonce", testVport, mod(func(b []byte) []byte { b[offNonce+5] ^= 1; return b }), ErrTampered},
		{"block", testVport, mod(func(b []byte) []byte { b[offBlock+40] ^= 1; return b }), ErrTampered},
		{"tag", testVport, mod(func(b []byte) []byte { b[offBlock] ^= 1; return b }), ErrTampered},
		{"src-mac-spoofed", testVport, mod(func(b []byte) []byte { b[6] ^= 2; return b }), ErrTampered},
		{"unknown-key-id", testVport, mod(func(b []byte) []byte { b[offKeyID] = 7; return b }), ErrUnknownKey},
		{"unknown-vport", 99, sf, ErrUnknownKey},
		{"other-vm-on-our-vport", testVport, otherFrame, ErrTampered},
		{"our-frame-on-other-vport", testVport + 1, sf, ErrTampered},
		{"payload-family-mismatch", testVport, mod(func(b []byte) []byte { b[SealedHeaderLen] = 0x65; return b }), ErrMalformed},
		{"payload-unblinded", testVport, mod(func(b []byte) []byte { b[SealedHeaderLen+16] = 203; return b }), ErrMalformed},
		{"garbage", testVport, append(append([]byte{}, sf[:offNonce]...), bytes.Repeat([]byte{0xa5}, 200)...), ErrTampered},
	}
	keysBefore := [][]KeyInfo{e.table.Keys(testVport), e.table.Keys(testVport + 1)}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := bytes.Repeat([]byte{0xee}, 512)
			var err error
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("panic: %v", r)
					}
				}()
				_, err = OpenFrame(e.table, tc.vport, tc.frame, out)
			}()
			if err != tc.want {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if ReasonOf(err) == DropOther {
				t.Fatalf("error %v has no drop reason", err)
			}
			if bytes.Contains(out, secret4.AsSlice()) || bytes.Contains(out, dstMAC[:]) {
				t.Fatal("the clear destination stayed in the output buffer")
			}
		})
	}
	if keysAfter := [][]KeyInfo{e.table.Keys(testVport), e.table.Keys(testVport + 1)}; !reflect.DeepEqual(keysBefore, keysAfter) {
		t.Fatal("refused frames changed the key table")
	}
	// And the genuine frame still opens.
	if got, err := OpenFrame(e.table, testVport, sf, make([]byte, 512)); err != nil || !bytes.Equal(got, orig) {
		t.Fatalf("genuine frame: %v", err)
	}
}

func TestIsSealedFrame(t *testing.T) {
	e := newSealEnv(t)
	orig := ipv4UDPFrame(dstMAC, vmMAC, vmIP, secret4, nil)
	sf := e.seal(t, orig)
	tag := func(f []byte, tpid uint16) []byte {
		return append(append(append([]byte{}, f[:12]...), byte(tpid>>8), byte(tpid), 0, 5), f[12:]...)
	}
	for name, c := range map[string]struct {
		frame []byte
		want  bool
	}{
		"sealed":          {sf, true},
		"vlan-sealed":     {tag(sf, 0x8100), true},
		"qinq-sealed":     {tag(tag(sf, 0x8100), 0x88a8), true},
		"ordinary":        {orig, false},
		"vlan-ordinary":   {tag(orig, 0x8100), false},
		"short":           {sf[:13], false},
		"three-tags-deep": {tag(tag(tag(sf, 0x8100), 0x8100), 0x8100), false},
	} {
		if got := IsSealedFrame(c.frame); got != c.want {
			t.Errorf("%s: IsSealedFrame = %v, want %v", name, got, c.want)
		}
	}
}

package securechan

import (
	"errors"
	"net/netip"
	"testing"
)

func TestMessageCodec(t *testing.T) {
	for _, m := range sampleMessages() {
		enc, err := AppendMessage(nil, &m)
		if err != nil {
			t.Fatalf("%v: %v", m.Type, err)
		}
		if enc[0] != MsgVersion || len(enc) > MaxMessageLen {
			t.Fatalf("%v: version %d, %d bytes", m.Type, enc[0], len(enc))
		}
		var got Message
		n, err := DecodeMessage(append(enc, 0xff, 0xff), &got) // followed by more bytes
		if err != nil || n != len(enc) || got != m {
			t.Fatalf("%v: round trip %+v n=%d err=%v", m.Type, got, n, err)
		}
		for cut := range len(enc) {
			if _, err := DecodeMessage(enc[:cut], &got); !errors.Is(err, ErrTruncated) {
				t.Fatalf("%v cut at %d: %v", m.Type, cut, err)
			}
		}
		down := append([]byte(nil), enc...)
		down[0] = 0
		if _, err := DecodeMessage(down, &got); !errors.Is(err, ErrVersion) {
			t.Fatalf("%v version 0: %v", m.Type, err)
		}
		// A body one byte longer than its fields: refused, not ignored.
		long := append(append([]byte(nil), enc...), 0)
		long[3]++
		if _, err := DecodeMessage(long, &got); !errors.Is(err, ErrMalformed) {
			t.Fatalf("%v with a trailing body byte: %v", m.Type, err)
		}
	}
}

func TestMessageValidate(t *testing.T) {
	bad := []Message{
		{Type: 0},
		{Type: 99},
		{Type: MsgMappingAdd, VNI: 1 << 24, Addr: vmIP, PA: vmIP},
		{Type: MsgMappingAdd, VNI: 1, Addr: vmIP},                                           // no PA
		{Type: MsgMappingRemove, VNI: 1, Addr: vmIP, Vport: 3},                              // stray field
		{Type: MsgAddressLearned, VNI: 1, Addr: netip.MustParseAddr("::ffff:198.51.100.7")}, // mapped form
		{Type: MsgAddressLearned, VNI: 1, Addr: netip.MustParseAddr("fe80::1%eth0")},        // zone
		{Type: MsgKeyRegister, Vport: 1, KeyID: 1},                                          // no key
		{Type: MsgAck, AckSeq: 1, Key: PublicKey{1}},                                        // stray key
	}
	for _, m := range bad {
		if _, err := AppendMessage(nil, &m); !errors.Is(err, ErrMalformed) {
			t.Errorf("%+v: got %v, want ErrMalformed", m, err)
		}
	}
}

func TestMessageCodecAllocations(t *testing.T) {
	msgs := sampleMessages()
	buf := make([]byte, 0, len(msgs)*MaxMessageLen)
	var m Message
	allocs := testing.AllocsPerRun(100, func() {
		b := buf[:0]
		for i := range msgs {
			b, _ = AppendMessage(b, &msgs[i])
		}
		for len(b) > 0 {
			n, err := DecodeMessage(b, &m)
			if err != nil {
				t.Fatal(err)
			}
			b = b[n:]
		}
	})
	if allocs != 0 {
		t.Fatalf("codec allocates %v times per batch", allocs)
	}
}

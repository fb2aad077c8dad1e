package securechan

import (
	"errors"
	"reflect"
	"testing"
)

func TestSessionExchange(t *testing.T) {
	for _, datagram := range []bool{false, true} {
		p := newPair(t, datagram, nil)
		ini, res, _ := handshake(t, p)
		if ini.PeerKey() != p.nicPub || res.PeerKey() != p.hostPub {
			t.Fatalf("peer keys: initiator sees %v, responder sees %v", ini.PeerKey(), res.PeerKey())
		}
		msgs := sampleMessages()
		got := deliver(t, res, sealMsgs(t, ini, msgs...))
		if len(got) != 1 || !reflect.DeepEqual(decodeAll(t, got[0]), msgs) {
			t.Fatalf("host→nic: got %v", got)
		}
		got = deliver(t, ini, sealMsgs(t, res, msgs[3], msgs[4]))
		if len(got) != 1 || !reflect.DeepEqual(decodeAll(t, got[0]), []Message{msgs[3], msgs[4]}) {
			t.Fatalf("nic→host: got %v", got)
		}
	}
}

func TestSessionKeysDifferPerDirectionAndSession(t *testing.T) {
	p := newPair(t, false, nil)
	a1, b1, _ := handshake(t, p)
	a2, _, _ := handshake(t, p)
	if a1.sendKey == b1.sendKey {
		t.Fatal("both directions use the same key")
	}
	if a1.sendKey == a2.sendKey {
		t.Fatal("two sessions between the same static keys share a key: ephemeral keys not used")
	}
	if a1.sendKey != b1.cur.key {
		t.Fatal("initiator send key is not the responder's receive key")
	}
}

func TestSessionCleanClose(t *testing.T) {
	p := newPair(t, false, nil)
	ini, res, _ := handshake(t, p)
	ini.Close()
	frames := drain(t, ini)
	if len(frames) != 1 {
		t.Fatalf("close queued %d frames", len(frames))
	}
	if _, err := res.Open(nil, frames[0]); err == nil || err.Error() != "EOF" {
		t.Fatalf("close: got %v, want io.EOF", err)
	}
	if _, err := ini.SealData(nil, []byte("x")); err == nil {
		t.Fatal("sealing after Close succeeded")
	}
	if _, err := res.SealData(nil, []byte("x")); err == nil {
		t.Fatal("sealing after the peer closed succeeded")
	}
	if _, err := res.Open(nil, frames[0]); !errors.Is(err, ErrClosed) {
		t.Fatalf("frame after close: got %v, want ErrClosed", err)
	}
}

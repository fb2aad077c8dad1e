package securechan

import (
	"errors"
	"io"
	"reflect"
	"testing"
	"time"
)

// pump delivers queued control frames both ways until neither side has
// anything to send.
func pump(t *testing.T, a, b *Session) {
	t.Helper()
	for range 10 {
		fa, fb := drain(t, a), drain(t, b)
		if len(fa)+len(fb) == 0 {
			return
		}
		deliver(t, b, fa)
		deliver(t, a, fb)
	}
	t.Fatal("control frames never settle")
}

// roundTrip sends one message each way and checks it arrives.
func roundTrip(t *testing.T, ini, res *Session, seq uint64) {
	t.Helper()
	m := Message{Type: MsgAck, Seq: seq, AckSeq: seq}
	for _, d := range [][2]*Session{{ini, res}, {res, ini}} {
		got := deliver(t, d[1], sealMsgs(t, d[0], m))
		if len(got) != 1 || !reflect.DeepEqual(decodeAll(t, got[0]), []Message{m}) {
			t.Fatalf("message %d lost %v→%v: %v", seq, d[0].role, d[1].role, got)
		}
	}
}

func TestRekeyAfterMessages(t *testing.T) {
	p := newPair(t, false, nil)
	p.host.RekeyAfterMessages = 4
	p.nic.RekeyAfterMessages = 4
	ini, res, _ := handshake(t, p)
	keys := map[[32]byte]bool{ini.sendKey: true, res.sendKey: true}
	for i := range uint64(40) {
		roundTrip(t, ini, res, i)
		pump(t, ini, res)
		keys[ini.sendKey], keys[res.sendKey] = true, true
		if ini.sendCtr > 2*4 || res.sendCtr > 2*4 {
			t.Fatalf("counter %d/%d past the rekey limit", ini.sendCtr, res.sendCtr)
		}
	}
	if ini.Epoch() < 5 || ini.Epoch() != res.Epoch() {
		t.Fatalf("epochs after 40 round trips with rekey every 4 frames: initiator %d responder %d", ini.Epoch(), res.Epoch())
	}
	if len(keys) < 2*5 {
		t.Fatalf("only %d distinct send keys", len(keys))
	}
	roundTrip(t, ini, res, 1000)
	if ini.prev != nil || res.prev != nil {
		t.Fatal("a stream keeps the previous key after the peer switched")
	}
}

func TestRekeyAfterTime(t *testing.T) {
	clock := newFakeClock()
	p := newPair(t, false, clock)
	p.host.RekeyAfterTime = time.Minute
	p.nic.RekeyAfterTime = time.Minute
	ini, res, _ := handshake(t, p)
	roundTrip(t, ini, res, 1)
	if ini.Epoch() != 0 {
		t.Fatal("rekeyed too early")
	}
	clock.Advance(time.Minute)
	roundTrip(t, ini, res, 2)
	pump(t, ini, res)
	roundTrip(t, ini, res, 3)
	if ini.Epoch() != 1 || res.Epoch() != 1 {
		t.Fatalf("epochs after RekeyAfterTime: %d %d", ini.Epoch(), res.Epoch())
	}
}

func TestResponderAsksForRekey(t *testing.T) {
	p := newPair(t, false, nil)
	p.nic.RekeyAfterMessages = 3 // only the NIC side is due
	ini, res, _ := handshake(t, p)
	for i := range uint64(5) {
		got := deliver(t, ini, sealMsgs(t, res, Message{Type: MsgAck, Seq: i}))
		if len(got) != 1 {
			t.Fatal("message lost")
		}
		pump(t, ini, res)
	}
	if res.Epoch() == 0 {
		t.Fatal("the responder's request did not lead to a rekey")
	}
}

func TestKeyExhaustedWhenRekeyStalls(t *testing.T) {
	p := newPair(t, false, nil)
	p.host.RekeyAfterMessages = 4
	ini, _, _ := handshake(t, p)
	// The responder never answers: after 2×4 frames the key is spent.
	var err error
	for i := 0; i < 20 && err == nil; i++ {
		_, err = ini.SealData(nil, []byte{0})
		drain(t, ini)
	}
	if !errors.Is(err, ErrKeyExhausted) {
		t.Fatalf("got %v, want ErrKeyExhausted", err)
	}
	if ini.sendCtr > 8 {
		t.Fatalf("sealed %d frames under one key, limit 8", ini.sendCtr)
	}
}

func TestDatagramRekeyWithLossAndReorder(t *testing.T) {
	clock := newFakeClock()
	p := newPair(t, true, clock)
	p.host.RekeyAfterMessages = 3
	p.host.RekeyGrace = 3 * time.Second
	p.nic.RekeyGrace = 3 * time.Second
	ini, res, _ := handshake(t, p)

	// Old-epoch frames from the initiator, held back (reordered).
	late := sealMsgs(t, ini, Message{Type: MsgAck, Seq: 100})
	late2 := sealMsgs(t, ini, Message{Type: MsgAck, Seq: 101})
	// The next seal starts the rekey: RekeyInit is queued.
	f := sealMsgs(t, ini, Message{Type: MsgAck, Seq: 102})
	deliver(t, res, f) // data + RekeyInit
	// The responder's RekeyResp is lost.
	if lost := drain(t, res); len(lost) != 1 {
		t.Fatalf("responder queued %d frames, want its RekeyResp", len(lost))
	}
	if res.Epoch() != 0 {
		t.Fatal("responder switched before the initiator proved the new key")
	}
	// After RekeyRetry the initiator asks again with the same key, and the
	// responder answers again with the same key.
	clock.Advance(time.Second)
	retry := sealMsgs(t, ini, Message{Type: MsgAck, Seq: 103})
	deliver(t, res, retry)
	answer := drain(t, res)
	deliver(t, ini, answer)
	if ini.Epoch() != 1 {
		t.Fatal("initiator did not switch after the retransmitted answer")
	}
	deliver(t, res, drain(t, ini)) // keepalive under the new key
	if res.Epoch() != 1 {
		t.Fatal("responder did not switch on the initiator's first new-key frame")
	}
	// The held-back old-epoch frames arrive now: inside the grace period
	// they are still accepted.
	deliver(t, res, late)
	clock.Advance(3 * time.Second)
	refuse(t, res, late2[0], ErrUnknownKey) // the previous key is gone
	roundTrip(t, ini, res, 200)
}

func TestConnRekeysOverUnixSocket(t *testing.T) {
	p := newPair(t, false, nil)
	p.host.RekeyAfterMessages = 3
	p.nic.RekeyAfterMessages = 3
	a, b := unixStreamPair(t)
	host, nic := connPair(t, p, a, b)
	defer host.Close()
	defer nic.Close()
	const n = 200
	// Rekeys need both ends reading: the host's reader takes in the NIC's
	// rekey answers.
	hostRecv := make(chan error, 1)
	go func() {
		var m Message
		hostRecv <- host.Recv(&m)
	}()
	errc := make(chan error, 1)
	go func() {
		for i := range uint64(n) {
			m := Message{Type: MsgMappingRemove, Seq: i, VNI: 1, Addr: vmIP}
			err := host.Send(&m)
			if err == nil {
				err = host.Flush() // one frame per message: many rekeys
			}
			if err != nil {
				errc <- err
				b.Close() // unblock the reader below
				return
			}
		}
		errc <- nil
	}()
	for i := range uint64(n) {
		var m Message
		if err := nic.Recv(&m); err != nil {
			t.Fatalf("Recv %d: %v", i, err)
		}
		if m.Seq != i {
			t.Fatalf("got seq %d, want %d", m.Seq, i)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	nic.Close()
	if err := <-hostRecv; !errors.Is(err, io.EOF) {
		t.Fatalf("host reader: %v", err)
	}
	if e := host.Session().Epoch(); e < 10 {
		t.Fatalf("only %d rekeys for %d frames with RekeyAfterMessages=3", e, n)
	}
}

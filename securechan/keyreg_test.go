package securechan

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/nicpath/nicpath/securechan/sealtest"
)

// nicAgent stands for the NIC's control plane on the channel: it applies
// key messages to its KeyTable, answers every message with an Ack, and
// reports the source addresses it learned from opened sealed frames.
type nicAgent struct {
	conn  *Conn
	table *KeyTable
	// learned receives the source of every sealed frame the NIC opened; the
	// agent reports it to the host as MsgAddressLearned.
	learned chan Message
	done    chan error
}

func startNICAgent(conn *Conn, table *KeyTable) *nicAgent {
	a := &nicAgent{conn: conn, table: table, learned: make(chan Message, 16), done: make(chan error, 1)}
	go func() {
		for {
			var m Message
			err := conn.Recv(&m)
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				a.done <- err
				return
			}
			var ack Message
			switch m.Type {
			case MsgKeyRegister, MsgKeyRevoke:
				ack = table.HandleMessage(&m)
			default:
				ack = Message{Type: MsgAck, AckSeq: m.Seq, Status: AckOK}
			}
			if err := conn.Send(&ack); err != nil {
				a.done <- err
				return
			}
		drainLearned:
			for {
				select {
				case l := <-a.learned:
					if err := conn.Send(&l); err != nil {
						a.done <- err
						return
					}
				default:
					break drainLearned
				}
			}
			if err := conn.Flush(); err != nil {
				a.done <- err
				return
			}
		}
	}()
	return a
}

// request sends m from the host and returns the Ack for it (skipping
// address reports, which it collects).
func request(t *testing.T, host *Conn, m Message, reports *[]Message) Message {
	t.Helper()
	if err := host.Send(&m); err != nil {
		t.Fatal(err)
	}
	if err := host.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		var r Message
		if err := host.Recv(&r); err != nil {
			t.Fatalf("waiting for ack of %v: %v", m.Type, err)
		}
		if r.Type == MsgAck && r.AckSeq == m.Seq {
			return r
		}
		*reports = append(*reports, r)
	}
}

// TestKeyRegistrationOverChannelAndNoLeak registers a VM key over the
// channel, rotates it, and checks that everything the channel carried, on
// the wire and in clear at both ends, never contains the destination the VM
// sealed.
func TestKeyRegistrationOverChannelAndNoLeak(t *testing.T) {
	clock := newFakeClock()
	p := newPair(t, false, nil)
	a, b := unixStreamPair(t)
	hostWire, nicWire := sealtest.Record(a), sealtest.Record(b)
	host, nic := connPair(t, p, hostWire, nicWire)

	_, nicSealKey := mustKey(t)
	const grace = 10 * time.Second
	table := NewKeyTable(nicSealKey, WithClock(clock.Now), WithRotationGrace(grace))
	agent := startNICAgent(nic, table)
	var reports []Message

	// The host also programs ordinary mappings over the same channel.
	mapping := Message{Type: MsgMappingAdd, Seq: 1, VNI: 5001, Addr: vmIP,
		PA: netip.MustParseAddr("198.18.0.7"), MAC: vmMAC}
	if ack := request(t, host, mapping, &reports); ack.Status != AckOK {
		t.Fatalf("mapping ack: %+v", ack)
	}

	// Key 1 for the VM on vport 7, registered by the host over the channel.
	vm1Pub, vm1Key := mustKey(t)
	if ack := request(t, host, Message{Type: MsgKeyRegister, Seq: 2, Vport: testVport, KeyID: 1, Key: vm1Pub}, &reports); ack.Status != AckOK {
		t.Fatalf("register ack: %+v", ack)
	}
	if ks := table.Keys(testVport); len(ks) != 1 || ks[0].KeyID != 1 || ks[0].Public != vm1Pub {
		t.Fatalf("key table after register over the channel: %+v", ks)
	}
	sealer1, err := NewSealer(vm1Key, table.PublicKey(), 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	orig := ipv4UDPFrame(dstMAC, vmMAC, vmIP, secret4, []byte("to the sealed destination"))
	out := make([]byte, 1500)
	// nicFastPath opens a sealed frame as the NIC would and queues a report
	// of the frame's source only.
	nicFastPath := func(s *Sealer) error {
		sf, err := s.SealFrame(nil, orig)
		if err != nil {
			return err
		}
		f, err := OpenFrame(table, testVport, sf, out)
		if err != nil {
			return err
		}
		if !bytes.Equal(f, orig) {
			t.Fatal("opened frame differs from the VM's")
		}
		agent.learned <- Message{Type: MsgAddressLearned, Vport: testVport, VNI: 5001, MAC: [6]byte(f[6:12]),
			Addr: netip.AddrFrom4([4]byte(f[EthHeaderLen+12 : EthHeaderLen+16]))}
		return nil
	}
	if err := nicFastPath(sealer1); err != nil {
		t.Fatalf("sealed frame under the registered key: %v", err)
	}

	// Rotation: key 2 registered; both keys work during the window.
	vm2Pub, vm2Key := mustKey(t)
	if ack := request(t, host, Message{Type: MsgKeyRegister, Seq: 3, Vport: testVport, KeyID: 2, Key: vm2Pub}, &reports); ack.Status != AckOK {
		t.Fatalf("rotate ack: %+v", ack)
	}
	sealer2, err := NewSealer(vm2Key, table.PublicKey(), 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []time.Duration{0, grace / 2, grace/2 - time.Nanosecond} {
		clock.Advance(step)
		for _, s := range []*Sealer{sealer1, sealer2} {
			if err := nicFastPath(s); err != nil {
				t.Fatalf("key %d %v into the rotation window: %v", s.KeyID(), step, err)
			}
		}
	}
	clock.Advance(time.Nanosecond) // the window is over
	if err := nicFastPath(sealer1); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("old key after the window: got %v, want ErrUnknownKey", err)
	}
	if err := nicFastPath(sealer2); err != nil {
		t.Fatalf("new key after the window: %v", err)
	}
	// Revocation over the channel takes effect at once.
	if ack := request(t, host, Message{Type: MsgKeyRevoke, Seq: 4, Vport: testVport, KeyID: 2}, &reports); ack.Status != AckOK {
		t.Fatalf("revoke ack: %+v", ack)
	}
	if err := nicFastPath(sealer2); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("revoked key: got %v, want ErrUnknownKey", err)
	}
	// A refused registration is acknowledged as such.
	if ack := request(t, host, Message{Type: MsgKeyRegister, Seq: 5, Vport: testVport, KeyID: 3, Key: PublicKey{1}}, &reports); ack.Status != AckRefused {
		t.Fatalf("low-order key: ack %+v, want AckRefused", ack)
	}
	// Flush the last reports with one more request.
	request(t, host, Message{Type: MsgMappingRemove, Seq: 6, VNI: 5001, Addr: vmIP}, &reports)

	if err := host.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-agent.done; err != nil {
		t.Fatalf("nic agent: %v", err)
	}
	nic.Close()

	if len(reports) != 8 {
		t.Fatalf("host received %d address reports, want 8 (one per opened frame)", len(reports))
	}
	secret := sealtest.Secret{IP: secret4, MAC: dstMAC}
	for _, r := range reports {
		if r.Type != MsgAddressLearned || r.Addr != vmIP || r.MAC != vmMAC {
			t.Fatalf("unexpected report %+v", r)
		}
		enc, _ := AppendMessage(nil, &r)
		if leak := sealtest.FindLeak(enc, secret); leak != "" {
			t.Fatalf("message to the host carries the sealed destination: %s", leak)
		}
	}
	// Everything on the wire, both directions, both ends.
	for name, rec := range map[string]*sealtest.Recorder{"host": hostWire, "nic": nicWire} {
		read, written := rec.Captured()
		if len(read) == 0 || len(written) == 0 {
			t.Fatalf("%s side recorded nothing", name)
		}
		for dir, data := range map[string][]byte{"read": read, "written": written} {
			if leak := sealtest.FindLeak(data, secret); leak != "" {
				t.Fatalf("%s side %s bytes carry the sealed destination: %s", name, dir, leak)
			}
		}
	}
}

// TestLeakCheckCatchesAReport shows the leak check can fail: a NIC that
// reported the destination of a sealed frame would be caught in clear at
// the host, though the wire itself is encrypted.
func TestLeakCheckCatchesAReport(t *testing.T) {
	bad := Message{Type: MsgAddressLearned, Vport: testVport, VNI: 1, MAC: dstMAC, Addr: secret4}
	enc, err := AppendMessage(nil, &bad)
	if err != nil {
		t.Fatal(err)
	}
	if sealtest.FindLeak(enc, sealtest.Secret{IP: secret4, MAC: dstMAC}) == "" {
		t.Fatal("leak check missed a report of the sealed destination")
	}
}

package tether

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/securechan"
)

// FuzzDecodeMessage holds the tunnel's message decoder to its contract: it
// never panics, a message it takes encodes back to the same bytes, and a
// frame aliases the input.
func FuzzDecodeMessage(f *testing.F) {
	f.Add(AppendFrame(nil, 1001, testFrame(1, 60)))
	f.Add(AppendProbe(nil, false, 7, 1234))
	f.Add(AppendProbe(nil, true, 7, 1234))
	f.Add(AppendKeepalive(nil))
	f.Add([]byte{KindFrame, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Message
		if err := DecodeMessage(b, &m); err != nil {
			return
		}
		var re []byte
		switch m.Kind {
		case KindFrame:
			if m.VNI == 0 || m.VNI > maxVNI || len(m.Frame) < minEthLen {
				t.Fatalf("took %+v", m)
			}
			re = AppendFrame(nil, m.VNI, m.Frame)
		case KindProbe, KindProbeAck:
			re = AppendProbe(nil, m.Kind == KindProbeAck, m.Seq, m.Clock)
		case KindKeepalive:
			re = AppendKeepalive(nil)
		default:
			t.Fatalf("kind %d taken", m.Kind)
		}
		if !bytes.Equal(re, b) {
			t.Fatalf("%x decodes to %+v, which encodes to %x", b, m, re)
		}
	})
}

// FuzzAnchorReceive feeds arbitrary datagrams from an arbitrary endpoint to
// an anchor with an established session: none may move the endpoint or
// reach the overlay, since none is sealed under the session's keys.
func FuzzAnchorReceive(f *testing.F) {
	f.Add([]byte{1, 1, 1, 0}, uint16(1))
	f.Add(append([]byte{1, 3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 9}, make([]byte, 40)...), uint16(2))
	f.Add(append([]byte{1, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0}, make([]byte, 17)...), uint16(3))
	f.Add(make([]byte, 188), uint16(4))
	aPub, aPriv := keys(f)
	tPub, tPriv := keys(f)
	real := netip.MustParseAddrPort("203.0.113.7:40000")
	f.Fuzz(func(t *testing.T, b []byte, port uint16) {
		// An anchor and a session of their own for every input, so that
		// an input's path depends on the input alone: one anchor shared by
		// all inputs carried into the next whatever the earlier ones left
		// in its handshake and session state.
		delivered := 0
		a, err := NewAnchor(nopConn{}, AnchorConfig{Key: aPriv, Peers: []Peer{{Name: "b", Key: tPub, VNI: 1}}, Logger: quiet(),
			Deliver: func(string, uint32, []byte) { delivered++ }})
		if err != nil {
			t.Fatal(err)
		}
		// Establish a session in memory: the tether's Init and Confirm.
		ini, _ := securechan.NewInitiator(&securechan.Config{PrivateKey: tPriv, PeerKeys: []securechan.PublicKey{aPub}, Datagram: true}, aPub)
		initMsg, _ := ini.Start()
		ini.NextOutbound(nil)
		a.Receive(initMsg, real, nil)
		resp := nopLast
		if _, err := ini.Open(nil, resp); err != nil {
			t.Fatal(err)
		}
		confirm, _, _ := ini.NextOutbound(nil)
		a.Receive(confirm, real, nil)
		if ep, ok := a.Endpoint("b"); !ok || ep != real {
			t.Fatalf("no session: %v", ep)
		}
		from := netip.AddrPortFrom(netip.MustParseAddr("198.51.100.9"), port)
		a.Receive(b, from, nil)
		if ep, _ := a.Endpoint("b"); ep != real {
			t.Fatalf("endpoint moved to %v", ep)
		}
		if delivered != 0 {
			t.Fatal("a forged datagram reached the overlay")
		}
	})
}

// nopConn drops what the anchor sends, remembering the last datagram.
type nopConn struct{ PacketConn }

var nopLast []byte

func (nopConn) WriteToUDPAddrPort(b []byte, _ netip.AddrPort) (int, error) {
	nopLast = bytes.Clone(b)
	return len(b), nil
}

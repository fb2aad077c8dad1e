package securechan_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"

	"github.com/nicpath/nicpath/securechan"
)

// The host tells its NIC about a CA→PA mapping over the channel, and the
// NIC acknowledges it. Each side pins the other's static key; a node whose
// key is not pinned is refused in the handshake.
func ExampleClient() {
	hostPub, hostPriv, _ := securechan.GenerateKey(nil)
	nicPub, nicPriv, _ := securechan.GenerateKey(nil)
	_, strangerPriv, _ := securechan.GenerateKey(nil)

	hostEnd, nicEnd := net.Pipe() // any stream: a unix socket, TCP, a mailbox
	nicDone := make(chan error, 1)
	go func() {
		// The NIC accepts the host's key only.
		c, err := securechan.Server(nicEnd, &securechan.Config{PrivateKey: nicPriv, PeerKeys: []securechan.PublicKey{hostPub}})
		if err != nil {
			nicDone <- err
			return
		}
		defer c.Close()
		var m securechan.Message
		if err := c.Recv(&m); err != nil {
			nicDone <- err
			return
		}
		fmt.Printf("NIC: %s vni %d %s at %s\n", m.Type, m.VNI, m.Addr, m.PA)
		ack := securechan.Message{Type: securechan.MsgAck, Seq: 1, AckSeq: m.Seq, Status: securechan.AckOK}
		if err := c.Send(&ack); err == nil {
			err = c.Flush()
		}
		nicDone <- err
	}()

	c, err := securechan.Client(hostEnd, &securechan.Config{PrivateKey: hostPriv, PeerKeys: []securechan.PublicKey{nicPub}}, nicPub)
	if err != nil {
		fmt.Println(err)
		return
	}
	m := securechan.Message{Type: securechan.MsgMappingAdd, Seq: 7, VNI: 1001,
		Addr: netip.MustParseAddr("10.0.0.11"), PA: netip.MustParseAddr("198.18.0.2"), MAC: [6]byte{2, 0, 0, 0xb, 0, 2}}
	if err := c.Send(&m); err == nil {
		err = c.Flush()
	}
	var ack securechan.Message
	if err := c.Recv(&ack); err == nil {
		fmt.Printf("host: %s of %d, status %d\n", ack.Type, ack.AckSeq, ack.Status)
	}
	// The NIC closes the channel cleanly: the host reads io.EOF.
	if err := c.Recv(&ack); err == io.EOF {
		fmt.Println("host: the NIC closed the channel")
	}
	c.Close()
	if err := <-nicDone; err != nil {
		fmt.Println("NIC:", err)
	}

	// A node the NIC does not know is refused.
	a, b := net.Pipe()
	go func() {
		_, _ = securechan.Server(b, &securechan.Config{PrivateKey: nicPriv, PeerKeys: []securechan.PublicKey{hostPub}})
	}()
	_, err = securechan.Client(a, &securechan.Config{PrivateKey: strangerPriv}, nicPub)
	fmt.Println("stranger refused:", err != nil)
	// Output:
	// NIC: mapping-add vni 1001 10.0.0.11 at 198.18.0.2
	// host: ack of 7, status 0
	// host: the NIC closed the channel
	// stranger refused: true
}

package sealclient

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/securechan"
)

// Config says which interface to use and which keys to seal with.
type Config struct {
	// Interface is the VM's interface toward its vport.
	Interface string
	// NICKey is the NIC's sealing public key (LoadPublicKey reads the
	// file the host publishes).
	NICKey securechan.PublicKey
	// Key is the VM's private key, whose public half the policy lists
	// under KeyID.
	Key   securechan.PrivateKey
	KeyID uint8
}

// Client sends sealed frames and receives replies on one interface. It is
// not safe for concurrent Recv calls; Send may be called concurrently.
type Client struct {
	sealer *securechan.Sealer
	mac    hal.MAC
	addrs  []netip.Addr
	sock   *packetSocket
}

// Open binds to the interface and precomputes the seal.
func Open(cfg Config) (*Client, error) {
	ifi, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("sealclient: %w", err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("sealclient: %s has no Ethernet address", cfg.Interface)
	}
	s, err := securechan.NewSealer(cfg.Key, cfg.NICKey, cfg.KeyID, nil)
	if err != nil {
		return nil, fmt.Errorf("sealclient: %w", err)
	}
	c := &Client{sealer: s, mac: hal.MAC(ifi.HardwareAddr)}
	if as, err := ifi.Addrs(); err == nil {
		for _, a := range as {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok && !ip.Unmap().IsLinkLocalUnicast() {
					c.addrs = append(c.addrs, ip.Unmap())
				}
			}
		}
	}
	if c.sock, err = openPacketSocket(ifi.Index); err != nil {
		return nil, fmt.Errorf("sealclient: %s: %w", cfg.Interface, err)
	}
	return c, nil
}

// Close releases the socket.
func (c *Client) Close() error { return c.sock.close() }

// MAC is the interface's MAC, the source of every frame sent.
func (c *Client) MAC() hal.MAC { return c.mac }

// SourceFor picks the interface's address of dst's family.
func (c *Client) SourceFor(dst netip.Addr) (netip.Addr, error) {
	for _, a := range c.addrs {
		if a.Is4() == dst.Is4() {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("sealclient: the interface has no %s address toward %s", family(dst), dst)
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// UDP is one datagram to seal.
type UDP struct {
	Src, Dst         netip.Addr // Src: zero picks the interface's
	SrcPort, DstPort uint16
	DstMAC           hal.MAC // zero: securechan.SealedDstMAC (the NIC sets the real one)
	Payload          []byte
}

// Frame builds the clear Ethernet frame of u (for tests and inspection:
// this is what the seal hides).
func (c *Client) Frame(u UDP) ([]byte, error) {
	if !u.Dst.IsValid() {
		return nil, errors.New("sealclient: no destination")
	}
	src := u.Src
	if !src.IsValid() {
		var err error
		if src, err = c.SourceFor(u.Dst); err != nil {
			return nil, err
		}
	}
	if src.Is4() != u.Dst.Is4() {
		return nil, fmt.Errorf("sealclient: source %s and destination %s are not of one family", src, u.Dst)
	}
	dmac := u.DstMAC
	if dmac.IsZero() {
		dmac = securechan.SealedDstMAC
	}
	return wire.Build(wire.FrameSpec{SrcMAC: c.mac, DstMAC: dmac, Src: src, Dst: u.Dst, Proto: hal.ProtoUDP,
		SrcPort: u.SrcPort, DstPort: u.DstPort, Payload: u.Payload}), nil
}

// SendUDP seals u and sends it.
func (c *Client) SendUDP(u UDP) error {
	f, err := c.Frame(u)
	if err != nil {
		return err
	}
	return c.SendFrame(f)
}

// SendFrame seals an ordinary Ethernet frame (IPv4 or IPv6, untagged) and
// sends it.
func (c *Client) SendFrame(frame []byte) error {
	sealed, err := c.sealer.SealFrame(nil, frame)
	if err != nil {
		return fmt.Errorf("sealclient: seal: %w", err)
	}
	return c.sock.send(sealed)
}

// Reply is a UDP datagram received.
type Reply struct {
	Src              netip.Addr
	SrcPort, DstPort uint16
	Payload          []byte
}

// RecvUDP waits until deadline for a UDP datagram to this interface's MAC
// and destination port port, and returns it. Other frames are skipped.
func (c *Client) RecvUDP(port uint16, deadline time.Time) (Reply, error) {
	buf := make([]byte, 65536)
	for {
		wait := time.Until(deadline)
		if wait <= 0 {
			return Reply{}, os.ErrDeadlineExceeded
		}
		n, err := c.sock.recv(buf, wait)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			return Reply{}, err
		}
		if r, ok := c.matchUDP(buf[:n], port); ok {
			return r, nil
		}
	}
}

// matchUDP decodes frame as a UDP datagram to c's MAC and port.
func (c *Client) matchUDP(frame []byte, port uint16) (Reply, bool) {
	var k hal.FlowKey
	var l wire.Layout
	if err := wire.Parse(frame, 0, &k, &l); err != nil || k.TunKind != hal.EncapNone {
		return Reply{}, false
	}
	if k.EthDst != c.mac || k.Proto != hal.ProtoUDP || k.L4Dst != port || l.L4 < 0 || len(frame) < l.L4+8 {
		return Reply{}, false
	}
	return Reply{Src: k.Src(), SrcPort: k.L4Src, DstPort: k.L4Dst, Payload: append([]byte(nil), frame[l.L4+8:]...)}, true
}

// LoadPublicKey reads a public key file: 64 hex digits (vswitchd's
// seal_public_key file), surrounding space ignored.
func LoadPublicKey(path string) (securechan.PublicKey, error) {
	var k securechan.PublicKey
	b, err := readHexKey(path)
	if err != nil {
		return k, err
	}
	copy(k[:], b)
	return k, nil
}

// LoadPrivateKey reads a private key file: 64 hex digits.
func LoadPrivateKey(path string) (securechan.PrivateKey, error) {
	var k securechan.PrivateKey
	b, err := readHexKey(path)
	if err != nil {
		return k, err
	}
	copy(k[:], b)
	clear(b)
	return k, nil
}

// ParseKey decodes a key given as 64 hex digits.
func ParseKey(s string) ([32]byte, error) {
	var k [32]byte
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != len(k) {
		return k, fmt.Errorf("sealclient: want a key as %d hex digits", 2*len(k))
	}
	copy(k[:], b)
	clear(b)
	return k, nil
}

func readHexKey(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParseKey(string(data))
	clear(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k[:], nil
}

// Command nicseal is a VM's tool for sealed addresses: it seals the
// destination of UDP datagrams to the NIC's public key, sends them on the
// VM's interface, and prints the replies. It is a thin main over
// securechan/sealclient; run it inside the VM (or the VM's network
// namespace: ip netns exec VM nicseal …), as root or with CAP_NET_RAW.
//
// Usage:
//
//	nicseal genkey <private-key-file>
//	    make the VM's key pair: the private key is written to the file
//	    (mode 0600), the public key printed for the VM's seal_keys in
//	    the policy
//	nicseal send -i <interface> -nic-key <file> -key <file> [-id N]
//	             [-src addr] [-sport N] [-count N] [-timeout d] <dst> <port> <message>
//	    seal <message> to <dst>:<port> and print each reply
//
// -nic-key is the file vswitchd publishes (seal_public_key) or the key
// itself in hex; -id is the key id the policy gives the VM's key (default 1).
// send exits 1 when a datagram gets no reply before the timeout.
package main

import (
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/nicpath/nicpath/securechan"
	"github.com/nicpath/nicpath/securechan/sealclient"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const usage = `usage:
  nicseal genkey <private-key-file>
  nicseal send -i <interface> -nic-key <file|hex> -key <file> [-id N] [-src addr] [-sport N] [-count N] [-timeout d] <dst> <port> <message>
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "genkey":
		if len(args) != 2 {
			fmt.Fprint(stderr, usage)
			return 2
		}
		err = genkey(args[1], stdout)
	case "send":
		err = send(args[1:], stdout, stderr)
	default:
		fmt.Fprint(stderr, usage)
		return 2
	}
	var ue usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "nicseal: %v\n%s", err, usage)
		return 2
	case err != nil:
		fmt.Fprintf(stderr, "nicseal: %v\n", err)
		return 1
	}
	return 0
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func genkey(path string, stdout io.Writer) error {
	pub, priv, err := securechan.GenerateKey(nil)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, werr := fmt.Fprintln(f, hex.EncodeToString(priv[:]))
	clear(priv[:])
	if err := f.Close(); werr == nil {
		werr = err
	}
	if werr != nil {
		return werr
	}
	fmt.Fprintln(stdout, hex.EncodeToString(pub[:]))
	return nil
}

func send(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ifname := fs.String("i", "eth0", "the VM's interface")
	nicKey := fs.String("nic-key", "", "the NIC's public key: a file (vswitchd's seal_public_key) or 64 hex digits")
	keyFile := fs.String("key", "", "the VM's private key file (nicseal genkey)")
	id := fs.Uint("id", 1, "the key id the policy gives the VM's key")
	src := fs.String("src", "", "source address (default: the interface's, of the destination's family)")
	sport := fs.Uint("sport", 40000, "source port (replies are awaited on it)")
	count := fs.Int("count", 1, "datagrams to send")
	timeout := fs.Duration("timeout", 2*time.Second, "how long to wait for each reply")
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if fs.NArg() != 3 {
		return usageError{"send takes a destination, a port and a message"}
	}
	if *nicKey == "" || *keyFile == "" {
		return usageError{"send needs -nic-key and -key"}
	}
	if *id > 255 || *sport == 0 || *sport > 65535 || *count < 1 {
		return usageError{"-id is 0..255, -sport 1..65535, -count at least 1"}
	}
	dst, err := netip.ParseAddr(fs.Arg(0))
	if err != nil {
		return usageError{fmt.Sprintf("destination %q: %v", fs.Arg(0), err)}
	}
	port, err := strconv.ParseUint(fs.Arg(1), 10, 16)
	if err != nil || port == 0 {
		return usageError{fmt.Sprintf("port %q: want 1..65535", fs.Arg(1))}
	}
	u := sealclient.UDP{Dst: dst.Unmap(), DstPort: uint16(port), SrcPort: uint16(*sport), Payload: []byte(fs.Arg(2))}
	if *src != "" {
		if u.Src, err = netip.ParseAddr(*src); err != nil {
			return usageError{fmt.Sprintf("-src %q: %v", *src, err)}
		}
	}
	var nk securechan.PublicKey
	if k, err := sealclient.ParseKey(*nicKey); err == nil {
		nk = k
	} else if nk, err = sealclient.LoadPublicKey(*nicKey); err != nil {
		return err
	}
	priv, err := sealclient.LoadPrivateKey(*keyFile)
	if err != nil {
		return err
	}
	c, err := sealclient.Open(sealclient.Config{Interface: *ifname, NICKey: nk, Key: priv, KeyID: uint8(*id)})
	clear(priv[:])
	if err != nil {
		return err
	}
	defer c.Close()
	for i := 0; i < *count; i++ {
		start := time.Now()
		if err := c.SendUDP(u); err != nil {
			return err
		}
		r, err := c.RecvUDP(u.SrcPort, start.Add(*timeout))
		if err != nil {
			return fmt.Errorf("no reply from %s port %d within %s: %w", dst, port, *timeout, err)
		}
		fmt.Fprintf(stdout, "reply from %s port %d in %s: %s\n", r.Src, r.SrcPort, time.Since(start).Round(time.Microsecond), r.Payload)
	}
	return nil
}

package sealclient_test

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/securechan"
	"github.com/nicpath/nicpath/securechan/sealclient"
)

// The VM's side of a sealed address, without the socket: it loads the
// NIC's public key the host published and its own private key, seals a
// frame the way Client.SendFrame does, and the NIC (here a KeyTable
// standing for it) opens it. The sealed frame carries the destination
// only inside the seal.
func Example() {
	dir, err := os.MkdirTemp("", "sealclient-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	// The NIC's key pair and the VM's (the host registers the VM's public
	// key with the NIC under key id 1, from the policy's seal_keys).
	nicPub, nicPriv, _ := securechan.GenerateKey(nil)
	vmPub, vmPriv, _ := securechan.GenerateKey(nil)
	nic := securechan.NewKeyTable(nicPriv)
	const vport, keyID = 7, 1
	if err := nic.Register(vport, keyID, vmPub); err != nil {
		fmt.Println(err)
		return
	}

	// The files the VM is given: vswitchd's seal_public_key, and its own
	// private key (64 hex digits each).
	os.WriteFile(filepath.Join(dir, "seal_public_key"), []byte(nicPub.String()+"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "vm.key"), []byte(hex.EncodeToString(vmPriv[:])+"\n"), 0o600)
	nicKey, err := sealclient.LoadPublicKey(filepath.Join(dir, "seal_public_key"))
	if err != nil {
		fmt.Println(err)
		return
	}
	key, err := sealclient.LoadPrivateKey(filepath.Join(dir, "vm.key"))
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg := sealclient.Config{Interface: "eth0", NICKey: nicKey, Key: key, KeyID: keyID}

	// What sealclient.Open precomputes from cfg, and the clear frame
	// Client.Frame builds (destination MAC: securechan.SealedDstMAC).
	sealer, err := securechan.NewSealer(cfg.Key, cfg.NICKey, cfg.KeyID, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	dst := netip.MustParseAddr("198.51.100.20")
	frame := wire.Build(wire.FrameSpec{SrcMAC: hal.MustMAC("02:00:00:00:07:01"), DstMAC: securechan.SealedDstMAC,
		Src: netip.MustParseAddr("198.18.7.1"), Dst: dst, Proto: hal.ProtoUDP, SrcPort: 40000, DstPort: 7,
		Payload: []byte("hello")})
	sealed, err := sealer.SealFrame(nil, frame)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("sealed:", securechan.IsSealedFrame(sealed))
	fmt.Println("destination visible in the sealed frame:", bytes.Contains(sealed, dst.AsSlice()))

	// The NIC opens it with the VM's registered key.
	mac, ip, err := securechan.SealedDestination(nic, vport, sealed)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("the NIC reads:", hal.MAC(mac), ip)
	// Output:
	// sealed: true
	// destination visible in the sealed frame: false
	// the NIC reads: 02:88:b5:00:00:00 198.51.100.20
}

// ParseKey takes a key as the files hold it: 64 hex digits, with space
// around allowed and nothing else.
func ExampleParseKey() {
	k, err := sealclient.ParseKey(" 8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f\n")
	fmt.Printf("%x %v\n", k[:4], err)
	_, err = sealclient.ParseKey("8f40c5")
	fmt.Println(err)
	// Output:
	// 8f40c5ad <nil>
	// sealclient: want a key as 64 hex digits
}

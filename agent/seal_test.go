package agent

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/control"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/securechan"
)

const sealPolicyDoc = `hosts:
  - name: host-a
    pa: 198.18.0.1
  - name: host-b
    pa: 198.18.0.2
tenants:
  - name: t
    vnets:
      - name: v
        vni: 7
        subnets: [10.0.0.0/24, "fd00:0:0:7::/64"]
        vms:
          - name: s1
            mac: 02:00:00:00:07:01
            ca: [10.0.0.1, "fd00:0:0:7::1"]
            host: host-a
%s          - name: s2
            mac: 02:00:00:00:07:02
            ca: [10.0.0.2, "fd00:0:0:7::2"]
            host: host-a
          - name: r1
            mac: 02:00:00:00:07:03
            ca: [10.0.0.3, "fd00:0:0:7::3"]
            host: host-b
`

// sealKeysYAML lists keys for s1 in the policy's syntax.
func sealKeysYAML(keys map[uint8]securechan.PublicKey, order ...uint8) string {
	if len(order) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("            seal_keys:\n")
	for _, id := range order {
		k := keys[id]
		fmt.Fprintf(&b, "              - id: %d\n                public: %s\n", id, hex.EncodeToString(k[:]))
	}
	return b.String()
}

// TestSealKeysFromPolicy: the daemon turns crypto on for softnic, writes
// the NIC's public key where the configuration says (the same key after a
// restart, from the seal_key file), registers s1's keys from the policy
// and follows its rotations on reload; a VM sealing to the published key
// reaches its neighbour with no unsealed packet first; vswitchctl's seal
// command says all of it.
func TestSealKeysFromPolicy(t *testing.T) {
	dir := t.TempDir()
	keys := map[uint8]securechan.PublicKey{}
	privs := map[uint8]securechan.PrivateKey{}
	for _, id := range []uint8{1, 2} {
		pub, priv, err := securechan.GenerateKey(nil)
		if err != nil {
			t.Fatal(err)
		}
		keys[id], privs[id] = pub, priv
	}
	writePolicy := func(order ...uint8) {
		t.Helper()
		doc := fmt.Sprintf(sealPolicyDoc, sealKeysYAML(keys, order...))
		tmp := filepath.Join(dir, "policy.yaml.tmp")
		if err := os.WriteFile(tmp, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "policy.yaml")); err != nil {
			t.Fatal(err)
		}
	}
	writePolicy(1)
	cfg := `host: host-a
driver: softnic
binding: none
policy: policy.yaml
uplink: up0
ports:
  s1: vm-s1
  s2: vm-s2
control: ` + filepath.Join(dir, "ctl.sock") + `
watch_interval: 1h
seal_public_key: nic.pub
driver_options:
  seal_key: nic.key
`
	cfgPath := filepath.Join(dir, "vswitchd.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	r := startDaemon(t, cfgPath, nil)
	sa, ok := r.d.NIC().(hal.SealedAddresses)
	if !ok || !r.d.NIC().Capabilities().Crypto {
		t.Fatal("the daemon's softnic does not open sealed frames")
	}
	nicKey := sa.SealPublicKey()
	published, err := os.ReadFile(filepath.Join(dir, "nic.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if string(published) != hex.EncodeToString(nicKey[:])+"\n" {
		t.Fatalf("published key %q, NIC's %x", published, nicKey)
	}
	var s control.Seal
	if err := call(t, r, "seal", nil, &s); err != nil {
		t.Fatal(err)
	}
	if !s.Crypto || s.PublicKey != hex.EncodeToString(nicKey[:]) || len(s.Ports) != 1 || s.Ports[0].VM != "s1" ||
		fmt.Sprint(s.Ports[0].KeyIDs) != "[1]" || s.Routes != 4 || s.Error != "" {
		t.Fatalf("seal: %+v", s)
	}
	var show control.Show
	if err := call(t, r, "show", nil, &show); err != nil || show.SealPublicKey != s.PublicKey {
		t.Fatalf("show: %v %q", err, show.SealPublicKey)
	}

	// s1 seals toward s2 with the published key: delivered, no first packet.
	sealer, err := securechan.NewSealer(privs[1], securechan.PublicKey(nicKey), 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	mac1, mac2 := hal.MustMAC("02:00:00:00:07:01"), hal.MustMAC("02:00:00:00:07:02")
	frame := wire.Build(wire.FrameSpec{SrcMAC: mac1, DstMAC: mac2, Src: mustAddr("fd00:0:0:7::1"), Dst: mustAddr("fd00:0:0:7::2"),
		Proto: hal.ProtoUDP, SrcPort: 7, DstPort: 7, Payload: []byte("sealed")})
	sealed, err := sealer.SealFrame(nil, frame)
	if err != nil {
		t.Fatal(err)
	}
	p1, _ := r.d.SoftPort("s1")
	p2, _ := r.d.SoftPort("s2")
	if _, err := p1.Send([][]byte{sealed}); err != nil {
		t.Fatal(err)
	}
	bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := p2.Recv(bufs, sizes)
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			if !bytes.Equal(bufs[0][:sizes[0]], frame) {
				t.Fatalf("s2 got % x\nwant % x", bufs[0][:sizes[0]], frame)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sealed frame never reached s2")
		}
		time.Sleep(time.Millisecond)
	}

	// Rotation: key 2 joins, then key 1 leaves.
	for _, step := range []struct {
		order []uint8
		want  string
	}{{[]uint8{1, 2}, "[1 2]"}, {[]uint8{2}, "[2]"}} {
		writePolicy(step.order...)
		if _, err := r.d.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := call(t, r, "seal", nil, &s); err != nil {
			t.Fatal(err)
		}
		if len(s.Ports) != 1 || fmt.Sprint(s.Ports[0].KeyIDs) != step.want {
			t.Fatalf("after keys %v: %+v", step.order, s)
		}
	}
	// Key 1 is revoked on the NIC: its frames are refused.
	if _, err := p1.Send([][]byte{sealed}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if n, _ := p2.Recv(bufs, sizes); n != 0 {
		t.Fatal("a frame sealed with a revoked key was delivered")
	}

	// A restart keeps the NIC's key (driver_options.seal_key).
	r.stop()
	r2 := startDaemon(t, cfgPath, nil)
	if k := r2.d.NIC().(hal.SealedAddresses).SealPublicKey(); k != nicKey {
		t.Fatalf("the NIC's key changed across a restart: %x, was %x", k, nicKey)
	}
}

// TestSealCryptoOff: with driver_options.crypto off the NIC does not open
// sealed frames, no key file is written, and seal says the vswitch fails
// closed.
func TestSealCryptoOff(t *testing.T) {
	dir := t.TempDir()
	pub, _, _ := securechan.GenerateKey(nil)
	doc := fmt.Sprintf(sealPolicyDoc, sealKeysYAML(map[uint8]securechan.PublicKey{1: pub}, 1))
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := `host: host-a
driver: softnic
binding: none
policy: policy.yaml
uplink: up0
ports:
  s1: vm-s1
control: ` + filepath.Join(dir, "ctl.sock") + `
seal_public_key: nic.pub
driver_options:
  crypto: "off"
`
	cfgPath := filepath.Join(dir, "vswitchd.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	r := startDaemon(t, cfgPath, nil)
	if r.d.NIC().Capabilities().Crypto {
		t.Fatal("crypto is on")
	}
	if _, err := os.Stat(filepath.Join(dir, "nic.pub")); !os.IsNotExist(err) {
		t.Fatalf("a public key was written for a NIC without crypto: %v", err)
	}
	var s control.Seal
	if err := call(t, r, "seal", nil, &s); err != nil || s.Crypto || s.PublicKey != "" {
		t.Fatalf("seal: %+v %v", s, err)
	}
	if !strings.Contains(r.logs.String(), "fail closed") {
		t.Fatalf("no warning about the policy's keys:\n%s", r.logs.String())
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

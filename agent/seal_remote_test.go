package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nicpath/nicpath/drivers/remote/remotetest"
	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/securechan"
)

// TestRemoteSealed: on a NIC served over the secure channel the daemon
// registers s1's key and the vswitch pushes s1's sealed routes through the
// channel; when the NIC side restarts on a fresh NIC, both are there again
// after the reconnect.
func TestRemoteSealed(t *testing.T) {
	// Key files host.key, host.pub, nic.key and nic.pub in a short
	// directory (a unix socket path is limited to 108 bytes).
	bed := remotetest.NewBedFiles(t)
	dir := bed.Dir
	served := func() *softnic.NIC {
		n, err := softnic.New(softnic.Config{Device: "nicd host-a", Crypto: true, Ports: []softnic.PortConfig{
			{Name: "vm-s1", Kind: hal.PortVPort, MAC: hal.MustMAC("02:00:00:00:07:01")},
			{Name: "vm-s2", Kind: hal.PortVPort, MAC: hal.MustMAC("02:00:00:00:07:02")},
			{Name: "up0", Kind: hal.PortUplink, MAC: hal.MustMAC("02:00:00:00:ff:01"), MTU: 1600},
		}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	pub, _, err := securechan.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	doc := fmt.Sprintf(sealPolicyDoc, sealKeysYAML(map[uint8]securechan.PublicKey{1: pub}, 1))
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	soft1 := served()
	s1 := bed.Serve(t, soft1)
	cfg := "host: host-a\n" + remoteDriver(bed) + `policy: policy.yaml
uplink: up0
ports:
  s1: vm-s1
  s2: vm-s2
control: ` + filepath.Join(dir, "ctl.sock") + `
watch_interval: 1h
seal_public_key: seal.pub
`
	cfgPath := filepath.Join(dir, "vswitchd.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	r := startDaemon(t, cfgPath, nil)
	check := func(soft *softnic.NIC, what string) {
		t.Helper()
		s1p := portNamed(t, soft, "vm-s1")
		deadline := time.Now().Add(10 * time.Second)
		for len(soft.SealKeys(s1p)) != 1 || len(soft.SealedRoutes(s1p)) != 4 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: keys %v, %d sealed routes on the served NIC\nlogs:\n%s", what, soft.SealKeys(s1p), len(soft.SealedRoutes(s1p)), r.logs.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
		if k := soft.SealKeys(s1p)[0]; k.KeyID != 1 {
			t.Fatalf("%s: key %+v", what, k)
		}
	}
	check(soft1, "at start")
	published, err := os.ReadFile(filepath.Join(dir, "seal.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if k := soft1.SealPublicKey(); string(published) != fmt.Sprintf("%x\n", k) {
		t.Fatalf("published %q, the served NIC's key is %x", published, k)
	}
	s1.Stop()
	soft2 := served()
	bed.Serve(t, soft2)
	check(soft2, "after the NIC side restarted on a fresh NIC")
	// The fresh NIC has a key of its own: published in place of the old.
	deadline := time.Now().Add(10 * time.Second)
	for {
		published, _ = os.ReadFile(filepath.Join(dir, "seal.pub"))
		if string(published) == fmt.Sprintf("%x\n", soft2.SealPublicKey()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("published %q after the restart, the fresh NIC's key is %x", published, soft2.SealPublicKey())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

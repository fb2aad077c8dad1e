package agent

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/nicpath/nicpath/agent/driver"
	"github.com/nicpath/nicpath/control"
	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/securechan"
)

// Sealed addresses. On a NIC that opens sealed frames (Capabilities.Crypto
// and hal.SealedAddresses) the daemon registers every local VM's sealing
// keys from the policy (or the store's state, which is a policy too) with
// the NIC, in the policy's order (the last listed is the newest, the
// other stays valid for the NIC's rotation grace), revokes the keys a new
// policy drops, and publishes the NIC's public key: in the file
// Config.SealPublicKey names, in vswitchctl show and seal. The vswitch
// pushes the sealed routes itself. On a NIC without crypto nothing is
// registered: sealed frames are dropped and counted (fail closed), and a
// policy that gives VMs keys is warned about.
//
// softnic opens sealed frames unless driver_options.crypto is "off"; its
// private key is driver_options.seal_key (a file of 64 hex digits, created
// with a fresh key when missing, so that the public key survives restarts),
// or a fresh key per start.

// sealKeys is what the daemon registered, per vport, oldest first.
type sealKeys struct {
	mu      sync.Mutex
	reg     map[hal.PortID][]policy.SealKey
	warned  bool
	lastErr string
}

// softnicCrypto sets softnic's sealed-address options from the driver's.
func softnicCrypto(sc *softnic.Config, c driver.Config) error {
	switch c.Options["crypto"] {
	case "", "on":
		sc.Crypto = true
	case "off":
		return nil
	default:
		return fmt.Errorf("driver_options.crypto: %q (want on or off)", c.Options["crypto"])
	}
	path := c.Options["seal_key"]
	if path == "" {
		return nil
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(c.Dir, path)
	}
	k, err := loadOrCreateSealKey(path)
	if err != nil {
		return fmt.Errorf("driver_options.seal_key: %w", err)
	}
	sc.SealKey = &k
	return nil
}

// loadOrCreateSealKey reads a private key file (64 hex digits), or
// creates one with a fresh key (mode 0600) when there is none.
func loadOrCreateSealKey(path string) (securechan.PrivateKey, error) {
	var k securechan.PrivateKey
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		_, k, err = securechan.GenerateKey(nil)
		if err != nil {
			return k, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return k, err
		}
		_, werr := fmt.Fprintf(f, "%s\n", hex.EncodeToString(k[:]))
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		return k, werr
	}
	if err != nil {
		return k, err
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(b) != len(k) {
		return k, fmt.Errorf("%s: want a private key as %d hex digits", path, 2*len(k))
	}
	copy(k[:], b)
	clear(b)
	return k, nil
}

// sealer returns the NIC's sealed-address interface when it opens sealed
// frames.
func (d *Agent) sealer() (hal.SealedAddresses, bool) {
	sa, ok := d.nic.(hal.SealedAddresses)
	if !ok || !d.nic.Capabilities().Crypto {
		return nil, false
	}
	return sa, true
}

// syncSealKeys makes the keys registered with the NIC those st gives the
// VMs of this daemon's ports. Errors are logged and kept for seal; they do
// not refuse the policy (the VM's sealed frames are refused by the NIC,
// counted there).
func (d *Agent) syncSealKeys(ctx context.Context, st *policy.State) {
	s := &d.seal
	s.mu.Lock()
	defer s.mu.Unlock()
	sa, ok := d.sealer()
	if !ok {
		for _, vm := range d.plan.vms {
			if v, found := st.VM(vm); found && len(v.SealKeys) > 0 && !s.warned {
				d.log.Warn("the policy gives VMs sealing keys but the NIC does not open sealed frames: they are dropped (fail closed)",
					"vm", vm, "driver", d.nic.Capabilities().Driver)
				s.warned = true
			}
		}
		return
	}
	if s.reg == nil {
		s.reg = map[hal.PortID][]policy.SealKey{}
	}
	var errs []string
	fail := func(vm string, id uint8, what string, err error) {
		d.log.Warn("sealing key "+what, "vm", vm, "key_id", id, "err", err)
		errs = append(errs, fmt.Sprintf("%s key %d: %s: %v", vm, id, what, err))
	}
	for _, vm := range d.plan.vms {
		port := d.plan.vmPort[vm]
		var want []policy.SealKey
		if v, found := st.VM(vm); found {
			want = v.SealKeys
		}
		have := s.reg[port]
		var kept []policy.SealKey
		for _, k := range have {
			if slicesContain(want, k) {
				kept = append(kept, k)
				continue
			}
			if err := sa.RevokeSealKey(ctx, port, k.ID); err != nil {
				fail(vm, k.ID, "revoke", err)
				kept = append(kept, k)
				continue
			}
			d.log.Info("sealing key revoked", "vm", vm, "key_id", k.ID)
		}
		for _, k := range want {
			if slicesContain(kept, k) {
				continue
			}
			if err := sa.RegisterSealKey(ctx, port, k.ID, k.Public); err != nil {
				fail(vm, k.ID, "register", err)
				continue
			}
			kept = append(kept, k)
			d.log.Info("sealing key registered", "vm", vm, "key_id", k.ID)
		}
		if len(kept) == 0 {
			delete(s.reg, port)
		} else {
			s.reg[port] = kept
		}
	}
	s.lastErr = strings.Join(errs, "; ")
}

func slicesContain(l []policy.SealKey, k policy.SealKey) bool {
	for _, x := range l {
		if x == k {
			return true
		}
	}
	return false
}

// sealPublicKeyHex is the NIC's sealing public key in hex, or "" when the
// NIC does not open sealed frames.
func (d *Agent) sealPublicKeyHex() string {
	sa, ok := d.sealer()
	if !ok {
		return ""
	}
	k := sa.SealPublicKey()
	return hex.EncodeToString(k[:])
}

// publishSealKey writes the NIC's public key to Config.SealPublicKey (a
// temporary file renamed into place: a reader never sees half a key).
func (d *Agent) publishSealKey() error {
	path := d.cfg.SealPublicKey
	if path == "" {
		return nil
	}
	pub := d.sealPublicKeyHex()
	if pub == "" {
		d.log.Warn("seal_public_key is set but the NIC does not open sealed frames: no key written", "file", path)
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(pub+"\n"), 0o644); err != nil {
		return fmt.Errorf("seal_public_key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("seal_public_key: %w", err)
	}
	d.log.Info("NIC sealing public key published", "file", path)
	return nil
}

// sealStatus answers the control command seal.
func (d *Agent) sealStatus() control.Seal {
	_, crypto := d.sealer()
	out := control.Seal{Crypto: crypto, PublicKey: d.sealPublicKeyHex()}
	if crypto {
		out.File = d.cfg.SealPublicKey
	}
	st := d.sw.Stats()
	out.Routes, out.Refused = st.SealedRoutes, st.SealedRefused
	s := &d.seal
	s.mu.Lock()
	for port, keys := range s.reg {
		sp := control.SealPort{VM: d.plan.vmOf[port], Port: uint32(port)}
		for _, k := range keys {
			sp.KeyIDs = append(sp.KeyIDs, k.ID)
		}
		out.Ports = append(out.Ports, sp)
	}
	out.Error = s.lastErr
	s.mu.Unlock()
	sort.Slice(out.Ports, func(i, j int) bool { return out.Ports[i].Port < out.Ports[j].Port })
	return out
}

// resyncSealKeys registers every key again after the NIC reconnected (a
// restarted NIC side lost them; one that kept them refuses nothing it has,
// but the older key of a rotation in progress, which it keeps anyway) and
// publishes the NIC's public key again.
func (d *Agent) resyncSealKeys(ctx context.Context) {
	d.seal.mu.Lock()
	d.seal.reg = nil
	d.seal.mu.Unlock()
	d.syncSealKeys(ctx, d.State())
	// A fresh NIC side may have a new key of its own.
	if err := d.publishSealKey(); err != nil {
		d.log.Warn("publishing the NIC's sealing key after the reconnect", "err", err)
	}
}

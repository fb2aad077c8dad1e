package securechan

import (
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/nacl/box"
)

// DefaultRotationGrace is how long a VM's previous sealing key keeps working
// after a new one is registered: long enough for the VM to switch all its
// queues to the new key (it learns of it from its own control plane), short
// enough that a retired key stops being useful soon.
const DefaultRotationGrace = 30 * time.Second

// sealKey is one registered VM key. Immutable once published.
type sealKey struct {
	id     uint8
	public PublicKey
	shared [32]byte // box.Precompute(VM public, NIC private)
	until  int64    // unix nanoseconds after which it is refused; 0: no limit
}

// vportKeys holds the live keys of one vport: keys[0] is the newest, keys[1]
// the previous one during its rotation window. Replaced, never changed, so
// that the fast path reads it without a lock.
type vportKeys struct {
	keys [2]*sealKey
}

// KeyInfo describes a live key of a vport (for inspection and tests).
type KeyInfo struct {
	KeyID  uint8
	Public PublicKey
	Until  time.Time // zero: no expiry (the newest key)
}

// KeyTable is the NIC side of sealed addresses: the NIC's private key and,
// per vport, up to two VM keys with their shared keys precomputed
// (box.Precompute), so that opening a frame costs one secretbox.Open. Reads
// (OpenFrame) take no lock and do not allocate; writes (Register, Revoke,
// Sweep) are serialized and publish a new snapshot.
type KeyTable struct {
	priv  PrivateKey
	pub   PublicKey
	grace time.Duration
	now   func() time.Time

	mu   sync.Mutex // serializes writers; readers use snap
	snap atomic.Pointer[keySnapshot]
}

// denseVports is how many low vport numbers are kept in a slice indexed by
// vport rather than in a map: NICs number their ports from 1 upwards, and an
// index costs a couple of nanoseconds where a map lookup costs ten or more,
// which matters next to a ~300 ns open. At most 4096 pointers (32 KiB) per
// snapshot, and only up to the highest vport in use.
const denseVports = 4096

// keySnapshot is an immutable view of the table.
type keySnapshot struct {
	dense  []*vportKeys          // vport < denseVports
	sparse map[uint32]*vportKeys // the rest
}

func (s *keySnapshot) get(vport uint32) *vportKeys {
	if vport < uint32(len(s.dense)) {
		return s.dense[vport]
	}
	if vport < denseVports {
		return nil
	}
	return s.sparse[vport]
}

// each calls f for every vport with keys.
func (s *keySnapshot) each(f func(uint32, *vportKeys)) {
	for i, v := range s.dense {
		if v != nil {
			f(uint32(i), v)
		}
	}
	for k, v := range s.sparse {
		f(k, v)
	}
}

// KeyTableOption configures a KeyTable.
type KeyTableOption func(*KeyTable)

// WithRotationGrace sets how long the previous key of a vport stays valid
// after a new key id is registered (DefaultRotationGrace otherwise).
func WithRotationGrace(d time.Duration) KeyTableOption {
	return func(t *KeyTable) { t.grace = d }
}

// WithClock sets the clock used for rotation windows (tests).
func WithClock(now func() time.Time) KeyTableOption {
	return func(t *KeyTable) { t.now = now }
}

// NewKeyTable returns an empty table for the NIC whose private key is nic.
func NewKeyTable(nic PrivateKey, opts ...KeyTableOption) *KeyTable {
	t := &KeyTable{priv: nic, pub: nic.Public(), grace: DefaultRotationGrace, now: time.Now}
	for _, o := range opts {
		o(t)
	}
	t.snap.Store(&keySnapshot{})
	return t
}

// PublicKey is the NIC's public key, which VMs seal to.
func (t *KeyTable) PublicKey() PublicKey { return t.pub }

// lookup returns the shared key for (vport, keyID) if it is live.
func (t *KeyTable) lookup(vport uint32, keyID uint8) *[32]byte {
	v := t.snap.Load().get(vport)
	if v == nil {
		return nil
	}
	for _, k := range v.keys {
		if k != nil && k.id == keyID {
			// Only a key inside its rotation window costs a clock read.
			if k.until != 0 && t.now().UnixNano() >= k.until {
				return nil
			}
			return &k.shared
		}
	}
	return nil
}

// update publishes a copy of the table with vport's entry replaced (nil
// removes it). Called with mu held.
func (t *KeyTable) update(vport uint32, v *vportKeys) {
	old := t.snap.Load()
	if v != nil && v.keys[0] == nil && v.keys[1] == nil {
		v = nil
	}
	next := &keySnapshot{dense: old.dense, sparse: old.sparse}
	if vport < denseVports {
		n := max(len(old.dense), int(vport)+1)
		next.dense = make([]*vportKeys, n)
		copy(next.dense, old.dense)
		next.dense[vport] = v
		for len(next.dense) > 0 && next.dense[len(next.dense)-1] == nil {
			next.dense = next.dense[:len(next.dense)-1]
		}
	} else {
		next.sparse = maps.Clone(old.sparse)
		if v == nil {
			delete(next.sparse, vport)
		} else {
			if next.sparse == nil {
				next.sparse = map[uint32]*vportKeys{}
			}
			next.sparse[vport] = v
		}
	}
	t.snap.Store(next)
}

// Register accepts frames from vport sealed with the VM key public under
// keyID. If vport already has a different newest key, that key becomes the
// previous one and stays valid for the rotation grace period; a key older
// than that is dropped at once (two keys per vport at most). Registering the
// same (keyID, public) again changes nothing. Reusing a live keyID for a
// different key is refused: revoke it first.
func (t *KeyTable) Register(vport uint32, keyID uint8, public PublicKey) error {
	if _, err := dh(&t.priv, &public); err != nil {
		return fmt.Errorf("securechan: register vport %d key %d: %w", vport, keyID, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.snap.Load().get(vport)
	var cur vportKeys
	if old != nil {
		cur = *old
	}
	for _, k := range cur.keys {
		if k != nil && k.id == keyID {
			if k.public == public && k == cur.keys[0] {
				return nil
			}
			return fmt.Errorf("securechan: register vport %d: key id %d is live with another key: %w", vport, keyID, ErrMalformed)
		}
	}
	nk := &sealKey{id: keyID, public: public}
	box.Precompute(&nk.shared, (*[32]byte)(&public), (*[32]byte)(&t.priv))
	next := vportKeys{}
	next.keys[0] = nk
	if prev := cur.keys[0]; prev != nil {
		retired := *prev
		retired.until = t.now().Add(t.grace).UnixNano()
		next.keys[1] = &retired
	}
	t.update(vport, &next)
	return nil
}

// Revoke stops accepting keyID on vport at once. Revoking a key that is not
// live is not an error (the result is the same).
func (t *KeyTable) Revoke(vport uint32, keyID uint8) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.snap.Load().get(vport)
	if old == nil {
		return
	}
	next := *old
	changed := false
	for i, k := range next.keys {
		if k != nil && k.id == keyID {
			next.keys[i] = nil
			changed = true
		}
	}
	if !changed {
		return
	}
	if next.keys[0] == nil {
		next.keys[0], next.keys[1] = next.keys[1], nil
	}
	t.update(vport, &next)
}

// RemoveVport forgets every key of vport (the VM is gone).
func (t *KeyTable) RemoveVport(vport uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.update(vport, nil)
}

// Sweep drops keys whose rotation window ended. OpenFrame already refuses
// them; Sweep frees their memory and keeps the fast path from reading the
// clock for them. Call it now and then (every few seconds).
func (t *KeyTable) Sweep() {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now().UnixNano()
	t.snap.Load().each(func(vport uint32, v *vportKeys) {
		next := *v
		changed := false
		for i, k := range next.keys {
			if k != nil && k.until != 0 && now >= k.until {
				next.keys[i] = nil
				changed = true
			}
		}
		if changed {
			if next.keys[0] == nil {
				next.keys[0], next.keys[1] = next.keys[1], nil
			}
			t.update(vport, &next)
		}
	})
}

// Keys lists the live keys of vport, newest first.
func (t *KeyTable) Keys(vport uint32) []KeyInfo {
	v := t.snap.Load().get(vport)
	if v == nil {
		return nil
	}
	now := t.now().UnixNano()
	var out []KeyInfo
	for _, k := range v.keys {
		if k == nil || (k.until != 0 && now >= k.until) {
			continue
		}
		ki := KeyInfo{KeyID: k.id, Public: k.public}
		if k.until != 0 {
			ki.Until = time.Unix(0, k.until)
		}
		out = append(out, ki)
	}
	return out
}

// HandleMessage applies a key message received over the channel (the NIC
// side of key registration) and returns the Ack to send back. Messages of
// other types are answered AckUnknown and change nothing.
func (t *KeyTable) HandleMessage(m *Message) Message {
	ack := Message{Type: MsgAck, AckSeq: m.Seq, Status: AckOK}
	switch m.Type {
	case MsgKeyRegister:
		if err := t.Register(m.Vport, m.KeyID, m.Key); err != nil {
			ack.Status = AckRefused
		}
	case MsgKeyRevoke:
		t.Revoke(m.Vport, m.KeyID)
	default:
		ack.Status = AckUnknown
	}
	return ack
}

package softnic

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/learn"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/securechan"
)

// DriverName is the driver name softnic reports in Capabilities and errors.
const DriverName = "softnic"

// Headroom is the space Process needs in front of every frame: the largest
// encapsulation wire can write plus two pushed 802.1Q tags (softnic refuses
// rules that push more). Buffers given to Process start their frames at an
// offset of at least Headroom.
const Headroom = wire.MaxEncapHeadroom + 2*wire.VLANTagLen

// MaxBurst is how many frames the datapath works on at once. 64 frames are
// enough for the bulk lookup to overlap the cache misses of a 1M-rule table
// (the CPU keeps about ten misses in flight) while the per-burst state (keys,
// layouts, results) stays in L1/L2. Larger Send/Process calls are cut into
// bursts.
const MaxBurst = 64

// maxConcurrentBursts bounds the reused datapath working states (about
// 100 KiB each with Send's buffers): more than the cores that would call
// Process at once on one NIC.
const maxConcurrentBursts = 16

// Defaults of Config fields left zero.
const (
	DefaultMTU            = 1500
	DefaultMaxRules       = 1 << 20
	DefaultMaxBatch       = 1 << 16
	DefaultRingSize       = 1024
	DefaultExceptionQueue = 1024
	DefaultMaxScopes      = 1 << 16
	// MostRules is the largest Config.MaxRules: a batch's modifies hold
	// new entries beside the old ones, in a table of at most 1<<30.
	MostRules = maxEntries / 2
	// l2Allowance is what an Ethernet frame adds to its port's MTU: the
	// header and up to two tags (QinQ), the most wire.Parse walks.
	l2Allowance = wire.EthHeaderLen + wire.MaxVLANs*wire.VLANTagLen
)

// PortConfig describes one port. Ports get IDs 1, 2, … in the order given.
type PortConfig struct {
	Name string
	Kind hal.PortKind
	MAC  hal.MAC
	MTU  int // L3 MTU; 0 means DefaultMTU
}

// Disable lists capabilities a NIC must not have, so that tests and the
// vswitch can prove their fallback on "a NIC that reports fewer
// capabilities". A disabled capability is missing from Capabilities, refused
// by Validate, and never done by the datapath.
type Disable struct {
	MatchFields  hal.MatchField // not matchable at all
	MaskedFields hal.MatchField // matchable exactly, not with a partial mask
	Actions      hal.ActionSet
	Encaps       hal.EncapSet
	// Decaps: tunnelled frames of these kinds are not parsed into tunnel
	// metadata; they go to the host with ReasonUnsupported.
	Decaps      hal.EncapSet
	Generations bool // Activate fails; rules with a scope or generation are refused
	// TunnelFilter: SetTunnelEndpoint fails with ErrNotSupported and every
	// tunnelled frame is processed, whatever its outer destination.
	TunnelFilter bool
}

// Config configures a NIC.
type Config struct {
	Device string // a free-form name reported in Capabilities.Device
	Ports  []PortConfig
	// MaxRules is the size of the rule table (DefaultMaxRules when 0); an
	// add beyond it fails with hal.ErrTableFull. Memory is used as rules
	// are added, not reserved up front.
	MaxRules int
	// MaxBatch bounds the operations of one Apply call (DefaultMaxBatch).
	MaxBatch int
	// MaxScopes bounds the distinct scopes rules and Activate may name
	// (DefaultMaxScopes, also the most: entries hold a scope in 16 bits).
	MaxScopes int
	// RingSize is how many frames each port's transmit ring holds
	// (DefaultRingSize); a frame for a full ring is dropped with
	// ReasonQueueFull.
	RingSize int
	// ExceptionQueue is how many frames wait for ReadExceptions
	// (DefaultExceptionQueue); beyond it they are dropped with
	// ReasonQueueFull.
	ExceptionQueue int
	// Disable removes capabilities.
	Disable Disable
	// Crypto enables sealed addresses (hal.SealedAddresses, see sealed.go):
	// the NIC holds a securechan.KeyTable and opens 0x88B5 frames from its
	// vports on the fast path. Without it such frames are dropped
	// (ReasonSealed) and Capabilities.Crypto is false.
	Crypto bool
	// SealKey is the NIC's sealing private key; nil generates one. New
	// copies it; read the public half with SealPublicKey.
	SealKey *securechan.PrivateKey
	// SealRotationGrace is how long a VM's previous key stays valid after
	// a new one is registered (securechan.DefaultRotationGrace when 0).
	SealRotationGrace time.Duration
	// SealClock is the clock of rotation windows (time.Now when nil).
	SealClock func() time.Time
}

// NIC is the software reference NIC. All methods are safe for concurrent use.
type NIC struct {
	caps  hal.Capabilities
	ports []*Port // index = PortID-1
	maxRules,
	maxBatch,
	maxScopes int

	closed atomic.Bool
	// encapTails: some program compiled so far has program.encapTail
	// (never cleared: it only has executeBurst look for such programs).
	encapTails atomic.Bool

	// rcu lets the datapath read the rule tables without locks; see table.go.
	rcu leftRight

	// wmu serialises writers: Apply, Activate, Dump, Close. It guards w.
	wmu sync.Mutex
	w   writerState

	exc excQueue

	// learn reports the addresses vports use (learn.go).
	learn *learn.Learner

	stats [2][hal.NumReasons]atomic.Uint64 // [0] exceptions, [1] drops

	// bursts is a bounded free list of datapath working states: one per
	// goroutine in the datapath at once, up to its capacity, is reused;
	// beyond that they are allocated and dropped. (sync.Pool would do, but
	// it drops items at random under the race detector, and the zero-alloc
	// guarantee is tested there too.)
	bursts  chan *burst
	burstSz int

	// seal opens sealed-address frames; nil without Config.Crypto.
	seal *sealState
}

var (
	_ hal.NIC            = (*NIC)(nil)
	_ hal.AtomicApplier  = (*NIC)(nil)
	_ hal.AddressLearner = (*NIC)(nil)
)

// ErrRingFull is returned by Inject when a port's transmit ring had no room
// for some frames; they were dropped and counted with ReasonQueueFull.
var ErrRingFull = errors.New("softnic: transmit ring full")

// ErrBatchTooLarge is the result of every operation of an Apply call with
// more operations than Capabilities.MaxBatch; nothing of it is applied.
var ErrBatchTooLarge = hal.ErrBatchTooLarge

// New builds a NIC.
func New(cfg Config) (*NIC, error) {
	if len(cfg.Ports) == 0 {
		return nil, errors.New("softnic: a NIC needs at least one port")
	}
	n := &NIC{
		maxRules:  orDefault(cfg.MaxRules, DefaultMaxRules),
		maxBatch:  orDefault(cfg.MaxBatch, DefaultMaxBatch),
		maxScopes: orDefault(cfg.MaxScopes, DefaultMaxScopes),
	}
	if n.maxScopes > 1<<16 {
		return nil, fmt.Errorf("softnic: MaxScopes %d above %d", n.maxScopes, 1<<16)
	}
	if n.maxRules > MostRules {
		return nil, fmt.Errorf("softnic: MaxRules %d above %d", n.maxRules, MostRules)
	}
	ringSize := orDefault(cfg.RingSize, DefaultRingSize)
	maxMTU := 0
	names := map[string]bool{}
	for i, pc := range cfg.Ports {
		if pc.Kind != hal.PortVPort && pc.Kind != hal.PortUplink {
			return nil, fmt.Errorf("softnic: port %d (%q): kind %d is neither vport nor uplink", i+1, pc.Name, pc.Kind)
		}
		if pc.Name == "" {
			pc.Name = fmt.Sprintf("%s%d", pc.Kind, i+1)
		}
		if names[pc.Name] {
			return nil, fmt.Errorf("softnic: port name %q used twice", pc.Name)
		}
		names[pc.Name] = true
		mtu := orDefault(pc.MTU, DefaultMTU)
		if mtu < 68 || mtu > 65535-l2Allowance-Headroom {
			return nil, fmt.Errorf("softnic: port %q: MTU %d out of range", pc.Name, mtu)
		}
		maxMTU = max(maxMTU, mtu)
		p := &Port{nic: n, info: hal.Port{ID: hal.PortID(i + 1), Name: pc.Name, Kind: pc.Kind, MAC: pc.MAC, MTU: mtu}}
		n.ports = append(n.ports, p)
	}
	// Every frame the NIC emits fits frameCap: the MTU check bounds the L3
	// part, and the L2 part is at most a header and four tags (two that
	// arrived, two pushed).
	frameCap := maxMTU + wire.EthHeaderLen + 4*wire.VLANTagLen
	for _, p := range n.ports {
		p.tx.init(ringSize, frameCap)
		p.ready = make(chan struct{}, 1)
	}
	n.exc.init(orDefault(cfg.ExceptionQueue, DefaultExceptionQueue), maxMTU+l2Allowance)
	n.learn = learn.New()
	n.caps = n.capabilities(cfg)
	n.w.init(n)
	n.rcu.init(n)
	n.burstSz = Headroom + maxMTU + l2Allowance
	if cfg.Crypto {
		var err error
		if n.seal, err = newSealState(&cfg); err != nil {
			return nil, err
		}
	}
	n.bursts = make(chan *burst, maxConcurrentBursts)
	return n, nil
}

func orDefault(v, d int) int {
	if v <= 0 {
		return d
	}
	return v
}

// Capabilities reports what the NIC does (less what Config.Disable removed).
func (n *NIC) Capabilities() hal.Capabilities {
	c := n.caps
	c.Notes = append([]string(nil), c.Notes...)
	return c
}

// Ports lists the ports.
func (n *NIC) Ports() []hal.Port {
	out := make([]hal.Port, len(n.ports))
	for i, p := range n.ports {
		out[i] = p.info
	}
	return out
}

// Port returns the far side of port id: what its VM or its wire sees.
func (n *NIC) Port(id hal.PortID) (*Port, error) {
	if id == 0 || int(id) > len(n.ports) {
		return nil, fmt.Errorf("softnic: port %d: %w", id, hal.ErrNotFound)
	}
	return n.ports[id-1], nil
}

// PortByName returns the port with the given name.
func (n *NIC) PortByName(name string) (*Port, error) {
	for _, p := range n.ports {
		if p.info.Name == name {
			return p, nil
		}
	}
	return nil, fmt.Errorf("softnic: port %q: %w", name, hal.ErrNotFound)
}

func (n *NIC) port(id hal.PortID) *Port {
	if id == 0 || int(id) > len(n.ports) {
		return nil
	}
	return n.ports[id-1]
}

// Close removes every rule, wakes ReadExceptions callers and makes every
// later call fail with hal.ErrClosed. Frames already in the transmit rings
// can still be read with Recv.
func (n *NIC) Close() error {
	n.wmu.Lock()
	defer n.wmu.Unlock()
	if n.closed.Swap(true) {
		return hal.ErrClosed
	}
	// Readers that entered before closed was set finish their burst on the
	// old tables; after the swap to an empty view no rule is live.
	n.w.reset()
	n.rcu.publishEmpty()
	n.exc.close()
	n.learn.Close()
	return nil
}

package multihost

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/store"
	"github.com/nicpath/nicpath/vswitch/vswitchtest"
)

// Host is one simulated machine (vswitch/vswitchtest: a software NIC, its
// vswitch, the far sides of the NIC's ports) and the follower that keeps
// the vswitch on the store.
type Host struct {
	*vswitchtest.Host
	Follower *store.Follower

	mu sync.Mutex
	// activeSince records, for the tracked VM, when this host first applied
	// a state with each live generation.
	activeSince map[uint64]time.Time

	cancel context.CancelFunc
	done   chan struct{}
}

// ActiveSince returns when the host first applied a state in which the
// tracked VM's live generation is gen.
func (h *Host) ActiveSince(gen uint64) (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := h.activeSince[gen]
	return t, ok
}

// Options tune a Fabric.
type Options struct {
	// Track is the VM whose live generation the hosts record (ActiveSince).
	Track string
	// Heartbeat and Retry are the followers' (store.FollowerConfig).
	Heartbeat, Retry time.Duration
	Logger           *slog.Logger
	// Stores, when set, gives each host its own connection to the store by
	// host name (etcd: one client per host, as on real machines); default
	// the Fabric's store for all.
	Stores func(host string) (store.Store, error)
}

// Fabric is the hosts of one store's state and the underlay between them.
type Fabric struct {
	Hosts []*Host
	byNm  map[string]*Host
	bySim map[*vswitchtest.Host]*Host
	wire  *vswitchtest.Underlay
	opt   Options
	vms   map[string]vmAddr
}

type vmAddr struct {
	mac hal.MAC
	ca  netip.Addr
}

// uplinkMAC is every host's uplink address: the underlay is one segment.
var uplinkMAC = hal.MustMAC("02:00:00:00:ff:01")

// NewFabric loads s and builds one host per host of its state, each with a
// vport for every VM (any VM may migrate anywhere: vswitch.Config.Ports is
// fixed at New), starts every host's follower and waits until each applies
// the loaded state.
func NewFabric(ctx context.Context, s store.Store, opt Options) (*Fabric, error) {
	snap, err := s.Load(ctx)
	if err != nil {
		return nil, err
	}
	st := snap.State
	fb := &Fabric{byNm: map[string]*Host{}, bySim: map[*vswitchtest.Host]*Host{}, wire: vswitchtest.NewUnderlay(), opt: opt, vms: map[string]vmAddr{}}
	for _, vm := range st.VMs() {
		for _, ca := range vm.CAs {
			if ca.Is4() {
				fb.vms[vm.Name] = vmAddr{mac: hal.MAC(vm.MAC), ca: ca}
				break
			}
		}
	}
	for _, ph := range st.Hosts() {
		h, err := fb.newHost(ctx, s, st, ph)
		if err != nil {
			fb.Close()
			return nil, fmt.Errorf("%s: %w", ph.Name, err)
		}
		fb.Hosts = append(fb.Hosts, h)
		fb.byNm[h.Name], fb.bySim[h.Host] = h, h
		fb.wire.Add(h.Host)
	}
	// Every host on the loaded state before anyone uses the bed.
	if err := fb.WaitSynced(ctx, snap.Revision); err != nil {
		fb.Close()
		return nil, err
	}
	return fb, nil
}

func (fb *Fabric) newHost(ctx context.Context, s store.Store, st *policy.State, ph policy.Host) (*Host, error) {
	sim, err := vswitchtest.NewHost(ph, st, st.VMs(), uplinkMAC, fb.opt.Logger)
	if err != nil {
		return nil, err
	}
	h := &Host{Host: sim, activeSince: map[uint64]time.Time{}, done: make(chan struct{})}
	hs := s
	if fb.opt.Stores != nil {
		if hs, err = fb.opt.Stores(ph.Name); err != nil {
			sim.Close()
			return nil, err
		}
	}
	h.Follower = store.NewFollower(store.FollowerConfig{Store: hs, Host: ph.Name, Target: h.Switch, Logger: fb.opt.Logger,
		Heartbeat: fb.opt.Heartbeat, Retry: fb.opt.Retry, OnApply: h.onApply(fb.opt.Track)})
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	h.cancel = cancel
	go func() {
		defer close(h.done)
		h.Follower.Run(rctx)
	}()
	return h, nil
}

func (h *Host) onApply(vm string) func(store.Snapshot) {
	return func(snap store.Snapshot) {
		if vm == "" || snap.State == nil {
			return
		}
		gen, ok := snap.State.ActiveGeneration(vm)
		if !ok {
			return
		}
		h.mu.Lock()
		if _, seen := h.activeSince[gen]; !seen {
			h.activeSince[gen] = time.Now()
		}
		h.mu.Unlock()
	}
}

// Host returns the host named name.
func (fb *Fabric) Host(name string) *Host { return fb.byNm[name] }

// StopFollower stops one host's follower (the host keeps forwarding on the
// state it has, like a vswitchd whose store connection is gone for good);
// StartFollower starts a new one on the same switch.
func (fb *Fabric) StopFollower(h *Host) {
	h.cancel()
	<-h.done
}

// StartFollower starts a new follower for h on s.
func (fb *Fabric) StartFollower(h *Host, s store.Store) {
	h.done = make(chan struct{})
	h.Follower = store.NewFollower(store.FollowerConfig{Store: s, Host: h.Name, Target: h.Switch, Logger: fb.opt.Logger,
		Heartbeat: fb.opt.Heartbeat, Retry: fb.opt.Retry, OnApply: h.onApply(fb.opt.Track)})
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	f, done := h.Follower, h.done
	go func() {
		defer close(done)
		f.Run(ctx)
	}()
}

// WaitSynced waits until every host applies revision rev or a later one.
func (fb *Fabric) WaitSynced(ctx context.Context, rev int64) error {
	for {
		all := true
		for _, h := range fb.Hosts {
			if h.Follower.Applied().Revision < rev {
				all = false
			}
		}
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("hosts not at revision %d: %w", rev, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

// Close stops every follower and switch and closes the NICs.
func (fb *Fabric) Close() {
	for _, h := range fb.Hosts {
		h.cancel()
		<-h.done
		h.Host.Close()
	}
}

// Delivery is a frame that left the fabric on a vport (VM set) or on an
// uplink toward an address that is no host (VM empty).
type Delivery struct {
	Host  *Host
	VM    string
	Frame []byte
}

// Send has vm, on host from, transmit frame, and carries the frame to the
// end of its walk (vswitchtest.Underlay.Send); it returns where it (and
// anything it caused) landed. One goroutine at a time.
func (fb *Fabric) Send(from *Host, vm string, frame []byte) ([]Delivery, error) {
	ds, err := fb.wire.Send(from.Host, vm, frame)
	out := make([]Delivery, len(ds))
	for i, d := range ds {
		out[i] = Delivery{Host: fb.bySim[d.Host], VM: d.VM, Frame: d.Frame}
	}
	return out, err
}

// streamPort is the UDP port of the stream; the payload starts with a magic
// and the sequence number.
const (
	streamPort  = 4791
	streamMagic = 0x6e696370 // "nicp"
	// payloadOff is where the payload starts in an untagged IPv4/UDP frame
	// without options, as delivered to a vport.
	payloadOff = 14 + 20 + 8
)

// StreamFrame builds packet seq of a UDP stream from one VM to another.
func (fb *Fabric) StreamFrame(from, to string, seq uint64) ([]byte, error) {
	a, ok1 := fb.vms[from]
	b, ok2 := fb.vms[to]
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("no IPv4 VM %q or %q", from, to)
	}
	payload := make([]byte, 32) // keeps the frame over the 60-byte minimum: no padding
	binary.BigEndian.PutUint32(payload, streamMagic)
	binary.BigEndian.PutUint64(payload[4:], seq)
	return wire.Build(wire.FrameSpec{SrcMAC: a.mac, DstMAC: b.mac, Src: a.ca, Dst: b.ca,
		Proto: hal.ProtoUDP, SrcPort: streamPort, DstPort: streamPort, Payload: payload}), nil
}

// streamSeq returns the sequence number of a delivered stream frame.
func streamSeq(fr []byte) (uint64, bool) {
	if len(fr) < payloadOff+12 || binary.BigEndian.Uint32(fr[payloadOff:]) != streamMagic {
		return 0, false
	}
	return binary.BigEndian.Uint64(fr[payloadOff+4:]), true
}

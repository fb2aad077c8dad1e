package multihost

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/store"
	"github.com/nicpath/nicpath/vswitch"
)

// Host is one simulated machine: a software NIC, its vswitch, the follower
// that keeps the vswitch on the store, and the far sides of the NIC's ports.
type Host struct {
	Name     string
	PA       netip.Addr
	NIC      *softnic.NIC
	Switch   *vswitch.Switch
	Follower *store.Follower

	ports  map[string]hal.PortID // VM name → vport
	vmOf   map[hal.PortID]string
	uplink hal.PortID
	far    map[hal.PortID]*softnic.Port
	ids    []hal.PortID // far ports in order, for deterministic draining
	batch  []hal.Exception

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
	byPA  map[netip.Addr]*Host
	byNm  map[string]*Host
	opt   Options
	vms   map[string]vmAddr
	bufs  [][]byte
	sizes []int
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
	fb := &Fabric{byPA: map[netip.Addr]*Host{}, byNm: map[string]*Host{}, opt: opt, vms: map[string]vmAddr{}}
	for _, vm := range st.VMs() {
		for _, ca := range vm.CAs {
			if ca.Is4() {
				fb.vms[vm.Name] = vmAddr{mac: hal.MAC(vm.MAC), ca: ca}
				break
			}
		}
	}
	fb.bufs = make([][]byte, 32)
	for i := range fb.bufs {
		fb.bufs[i] = make([]byte, 2048)
	}
	fb.sizes = make([]int, len(fb.bufs))
	for _, ph := range st.Hosts() {
		h, err := fb.newHost(ctx, s, st, ph)
		if err != nil {
			fb.Close()
			return nil, fmt.Errorf("%s: %w", ph.Name, err)
		}
		fb.Hosts = append(fb.Hosts, h)
		fb.byPA[h.PA], fb.byNm[h.Name] = h, h
	}
	// Every host on the loaded state before anyone uses the bed.
	if err := fb.WaitSynced(ctx, snap.Revision); err != nil {
		fb.Close()
		return nil, err
	}
	return fb, nil
}

func (fb *Fabric) newHost(ctx context.Context, s store.Store, st *policy.State, ph policy.Host) (*Host, error) {
	var pcs []softnic.PortConfig
	for _, vm := range st.VMs() {
		pcs = append(pcs, softnic.PortConfig{Name: vm.Name, Kind: hal.PortVPort, MAC: hal.MAC(vm.MAC)})
	}
	pcs = append(pcs, softnic.PortConfig{Name: "uplink", Kind: hal.PortUplink, MAC: uplinkMAC, MTU: 1600})
	nic, err := softnic.New(softnic.Config{Device: ph.Name, Ports: pcs})
	if err != nil {
		return nil, err
	}
	h := &Host{Name: ph.Name, PA: ph.PA, NIC: nic, ports: map[string]hal.PortID{}, vmOf: map[hal.PortID]string{},
		far: map[hal.PortID]*softnic.Port{}, activeSince: map[uint64]time.Time{}, done: make(chan struct{})}
	for _, p := range nic.Ports() {
		fp, err := nic.Port(p.ID)
		if err != nil {
			nic.Close()
			return nil, err
		}
		h.far[p.ID] = fp
		h.ids = append(h.ids, p.ID)
		if p.Kind == hal.PortUplink {
			h.uplink = p.ID
			continue
		}
		h.ports[p.Name], h.vmOf[p.ID] = p.ID, p.Name
	}
	sort.Slice(h.ids, func(i, j int) bool { return h.ids[i] < h.ids[j] })
	h.batch = make([]hal.Exception, 64)
	for i := range h.batch {
		h.batch[i].Buf = make([]byte, 2048)
	}
	h.Switch, err = vswitch.New(vswitch.Config{NIC: nic, Host: ph.Name, State: st, Ports: h.ports, Uplink: h.uplink, Logger: fb.opt.Logger})
	if err != nil {
		nic.Close()
		return nil, err
	}
	hs := s
	if fb.opt.Stores != nil {
		if hs, err = fb.opt.Stores(ph.Name); err != nil {
			h.Switch.Close()
			nic.Close()
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
		h.Switch.Close()
		h.NIC.Close()
	}
}

// Delivery is a frame that left the fabric on a vport (VM set) or on an
// uplink toward an address that is no host (VM empty).
type Delivery struct {
	Host  *Host
	VM    string
	Frame []byte
}

// maxHops bounds how often a frame may cross the underlay in one send.
const maxHops = 16

// Send has vm, on host from, transmit frame, and carries the frame to the
// end of its walk; it returns where it (and anything it caused) landed. One
// goroutine at a time.
func (fb *Fabric) Send(from *Host, vm string, frame []byte) ([]Delivery, error) {
	if _, err := from.far[from.ports[vm]].Send([][]byte{frame}); err != nil {
		return nil, err
	}
	var out []Delivery
	queue := []*Host{from}
	for hops := 0; len(queue) > 0; hops++ {
		if hops > maxHops {
			return out, errors.New("frames loop between hosts")
		}
		h := queue[0]
		queue = queue[1:]
		if err := h.pump(); err != nil {
			return out, err
		}
		for _, id := range h.ids {
			fp := h.far[id]
			for {
				n, err := fp.Recv(fb.bufs, fb.sizes)
				if err != nil {
					return out, err
				}
				for i := range n {
					fr := append([]byte(nil), fb.bufs[i][:fb.sizes[i]]...)
					if id != h.uplink {
						out = append(out, Delivery{Host: h, VM: h.vmOf[id], Frame: fr})
						continue
					}
					var k hal.FlowKey
					var l wire.Layout
					if err := wire.Parse(fr, id, &k, &l); err == nil && k.TunKind != hal.EncapNone {
						if h2 := fb.byPA[hal.AddrFrom16(k.TunDst)]; h2 != nil {
							if _, err := h2.far[h2.uplink].Send([][]byte{fr}); err != nil {
								return out, err
							}
							queue = append(queue, h2)
							continue
						}
					}
					out = append(out, Delivery{Host: h, Frame: fr})
				}
				if n < len(fb.bufs) {
					break
				}
			}
		}
	}
	return out, nil
}

// pump hands the host's queued exception packets to its vswitch until none
// is left: what vswitch.Run does, made synchronous.
func (h *Host) pump() error {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for {
		n, err := h.NIC.ReadExceptions(done, h.batch)
		if n == 0 || err != nil {
			return nil
		}
		if err := h.Switch.HandleBatch(context.Background(), h.batch[:n]); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
	}
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

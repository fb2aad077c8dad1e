package vswitch

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/haltest"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/internal/testclock"
	"github.com/nicpath/nicpath/policy"
)

// newClock is a clock tests move by hand, for aging.
func newClock() *testclock.Clock { return testclock.New(time.Unix(1_700_000_000, 0)) }

// testHost is one host of the in-memory topology: a softnic, its switch and
// the far sides of its ports (the VMs and the wire).
type testHost struct {
	name   string
	pa     netip.Addr
	soft   *softnic.NIC
	nic    hal.NIC
	fault  *haltest.FaultNIC
	sw     *Switch
	ports  map[string]hal.PortID
	portVM map[hal.PortID]string
	uplink hal.PortID
	far    map[hal.PortID]*softnic.Port
	batch  []hal.Exception
}

type topoOpts struct {
	disable   softnic.Disable
	maxRules  int
	fault     bool
	noOffload bool
	proactive bool
	// exact: every flow is offloaded as an exact rule
	// (Config.DisablePortWildcards), for tests of per-connection rules.
	exact    bool
	flowIdle time.Duration
	connIdle time.Duration
	// activateAt: after that many packets of a differential run, every
	// shadow is activated (0: never).
	activateAt int
	// newPorts: a differential run also opens new connections between
	// endpoints it sent between before (the same packet with new ports).
	newPorts bool
	// mtu gives the MTU of port (a VM's name, or "uplink") on host; 0
	// means 9000. Nil: every port has 9000.
	mtu func(host, port string) int
	// wrap, when set, decorates each host's NIC (after the fault
	// decorator) before its switch is built on it.
	wrap func(host string, nic hal.NIC) hal.NIC
	// crypto: each softnic opens sealed addresses (softnic.Config.Crypto).
	crypto bool
	// ringSize sizes each softnic's port rings and exception queue (0:
	// softnic's defaults). A topology that carries a frame or two and is
	// built again for each fuzz input needs few slots, and each slot of a
	// 9000-byte port holds a frame's worth of memory.
	ringSize int
}

func (o *topoOpts) portMTU(host, port string) int {
	if o.mtu != nil {
		if m := o.mtu(host, port); m != 0 {
			return m
		}
	}
	return 9000
}

type topo struct {
	t     testing.TB
	st    *policy.State
	hosts []*testHost
	byPA  map[netip.Addr]*testHost
	byNm  map[string]*testHost
	clock *testclock.Clock
	// wire, when set, sees every frame carried from one host's uplink to
	// another's.
	wire func(from, to *testHost, frame []byte)
}

var uplinkMAC = hal.MustMAC("02:00:00:00:ff:01")

// newTopo builds one softnic and one switch per host of st; every VM that
// runs on a host (or has a shadow there) gets a vport on it.
func newTopo(t testing.TB, st *policy.State, o topoOpts) *topo {
	t.Helper()
	tp := &topo{t: t, st: st, byPA: map[netip.Addr]*testHost{}, byNm: map[string]*testHost{}, clock: newClock()}
	for _, h := range st.Hosts() {
		var pcs []softnic.PortConfig
		names := []string{}
		for _, vm := range st.HostedVMs(h.Name) {
			pcs = append(pcs, softnic.PortConfig{Name: vm.Name, Kind: hal.PortVPort, MAC: hal.MAC(vm.MAC), MTU: o.portMTU(h.Name, vm.Name)})
			names = append(names, vm.Name)
		}
		pcs = append(pcs, softnic.PortConfig{Name: "uplink", Kind: hal.PortUplink, MAC: uplinkMAC, MTU: o.portMTU(h.Name, "uplink")})
		soft, err := softnic.New(softnic.Config{Device: h.Name, Ports: pcs, MaxRules: o.maxRules, Disable: o.disable, Crypto: o.crypto,
			RingSize: o.ringSize, ExceptionQueue: o.ringSize})
		if err != nil {
			t.Fatal(err)
		}
		th := &testHost{name: h.Name, pa: h.PA, soft: soft, nic: soft, ports: map[string]hal.PortID{},
			portVM: map[hal.PortID]string{}, far: map[hal.PortID]*softnic.Port{}}
		if o.fault {
			th.fault = haltest.NewFaultNIC(soft)
			th.nic = th.fault.NIC()
		}
		if o.wrap != nil {
			th.nic = o.wrap(h.Name, th.nic)
		}
		for i, n := range names {
			id := hal.PortID(i + 1)
			th.ports[n], th.portVM[id] = id, n
		}
		th.uplink = hal.PortID(len(names) + 1)
		for _, p := range soft.Ports() {
			fp, err := soft.Port(p.ID)
			if err != nil {
				t.Fatal(err)
			}
			th.far[p.ID] = fp
		}
		th.batch = make([]hal.Exception, 64)
		for i := range th.batch {
			th.batch[i].Buf = make([]byte, 16384)
		}
		// Every uplink of the test wire has uplinkMAC: the next hop of an
		// encapsulated frame is the receiving host's uplink. (The default,
		// broadcast, is refused by a receiver that accepts tunnelled
		// frames only for its own MAC.)
		sw, err := New(Config{NIC: th.nic, Host: h.Name, State: st, Ports: th.ports, Uplink: th.uplink, NextHopMAC: uplinkMAC,
			Clock: tp.clock.Now, FlowIdle: o.flowIdle, ConnIdle: o.connIdle, DisableOffload: o.noOffload, Proactive: o.proactive,
			DisablePortWildcards: o.exact})
		if err != nil {
			t.Fatal(err)
		}
		th.sw = sw
		tp.hosts = append(tp.hosts, th)
		tp.byPA[h.PA] = th
		tp.byNm[h.Name] = th
		t.Cleanup(func() { sw.Close(); soft.Close() })
	}
	return tp
}

var canceled = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// pump hands the host's queued exceptions to its switch until none is left.
func (h *testHost) pump(t testing.TB) {
	for {
		n, err := h.soft.ReadExceptions(canceled, h.batch)
		if n == 0 || err != nil {
			return
		}
		if err := h.sw.HandleBatch(context.Background(), h.batch[:n]); err != nil {
			t.Fatalf("%s: HandleBatch: %v", h.name, err)
		}
	}
}

// delivery is a frame that left the topology: on a VM's vport, or on an
// uplink toward a PA that is no host (a gateway).
type delivery struct {
	host  *testHost
	port  hal.PortID
	frame []byte
}

// send puts frame into host h on port and runs the topology until every
// frame has landed: exceptions are handled, frames on an uplink toward
// another host's PA are carried to that host's uplink (the test "wire").
func (tp *topo) send(h *testHost, port hal.PortID, frame []byte) []delivery {
	if _, err := h.far[port].Send([][]byte{frame}); err != nil {
		tp.t.Fatal(err)
	}
	return tp.settle(h)
}

func (tp *topo) settle(first *testHost) []delivery {
	var out []delivery
	queue := []*testHost{first}
	bufs := make([][]byte, 16)
	for i := range bufs {
		bufs[i] = make([]byte, 16384)
	}
	sizes := make([]int, len(bufs))
	for steps := 0; len(queue) > 0; steps++ {
		if steps > 64 {
			tp.t.Fatal("frames loop between hosts")
		}
		h := queue[0]
		queue = queue[1:]
		h.pump(tp.t)
		for id, fp := range h.far {
			for {
				n, err := fp.Recv(bufs, sizes)
				if err != nil {
					tp.t.Fatal(err)
				}
				for i := 0; i < n; i++ {
					fr := append([]byte(nil), bufs[i][:sizes[i]]...)
					if id != h.uplink {
						out = append(out, delivery{h, id, fr})
						continue
					}
					var k hal.FlowKey
					var l wire.Layout
					if err := wire.Parse(fr, id, &k, &l); err == nil && k.TunKind != hal.EncapNone {
						if h2 := tp.byPA[hal.AddrFrom16(k.TunDst)]; h2 != nil {
							if tp.wire != nil {
								tp.wire(h, h2, fr)
							}
							if _, err := h2.far[h2.uplink].Send([][]byte{fr}); err != nil {
								tp.t.Fatal(err)
							}
							queue = append(queue, h2)
							continue
						}
					}
					out = append(out, delivery{h, id, fr})
				}
				if n < len(bufs) {
					break
				}
			}
		}
	}
	return out
}

func frameOf(p policy.Packet) []byte {
	spec := wire.FrameSpec{SrcMAC: hal.MAC(p.SrcMAC), DstMAC: hal.MAC(p.DstMAC), TTL: p.TTL,
		Src: p.Src, Dst: p.Dst, Proto: p.Protocol, SrcPort: p.SrcPort, DstPort: p.DstPort,
		ICMPType: p.ICMPType, ICMPCode: p.ICMPCode, Payload: []byte("nicpath")}
	if !p.Src.IsValid() {
		spec.EthType = p.EtherType
		spec.Payload = make([]byte, 28)
	}
	return wire.Build(spec)
}

// packetFrom parses a delivered frame back into the policy's packet.
func packetFrom(t testing.TB, frame []byte) (policy.Packet, hal.FlowKey) {
	var k hal.FlowKey
	var l wire.Layout
	if err := wire.Parse(frame, 0, &k, &l); err != nil {
		t.Fatalf("delivered frame does not parse: %v", err)
	}
	p := packetOf(&k, ttlOf(frame, &l))
	return p, k
}

func describe(p policy.Packet) string { return fmt.Sprintf("%v ttl=%d", p, p.TTL) }

var errInjected = errors.New("injected device failure")

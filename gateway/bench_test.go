package gateway_test

import (
	"context"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/gateway"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
)

// BenchmarkSlowPath measures gateway.flows_per_s: new translated
// connections per second through the gateway's slow path. Every packet is
// the first of its connection (a new VM source port and remote port), as
// the NIC hands it to the host: a VXLAN frame that missed. Each one is
// judged by the policy, takes an external port, becomes two rules (from
// the tenant, and the answer's) offloaded to softnic in batches of 64, and
// is itself translated and sent on the host path, as HandleBatch does for
// a real miss. The VM's source ports are ephemeral ones (1024–65023) in the
// external range and free there, so the gateway keeps them (no port
// rewrite: the connection's rules share their action lists, and the NIC's
// programs, with the VM's other connections); BenchmarkSlowPathRewrite is
// the case where every connection's port must be rewritten.
func BenchmarkSlowPath(b *testing.B) { benchSlowPath(b, false) }

// BenchmarkSlowPathRewrite is BenchmarkSlowPath with the VM's source ports
// (1–19999) outside the external range (20000–59999): every connection
// takes another port, so both of its rules rewrite one and are unique.
func BenchmarkSlowPathRewrite(b *testing.B) { benchSlowPath(b, true) }

func benchSlowPath(b *testing.B, rewrite bool) {
	pb := policy.NewBuilder()
	hostPA, gwPA := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.100")
	pb.AddHost(policy.Host{Name: "host-a", PA: hostPA})
	pb.AddGateway(policy.Gateway{Name: "gw", PA: gwPA})
	pb.AddTenant(policy.Tenant{Name: "blue"})
	pb.AddVNET(policy.VNET{Tenant: "blue", Name: "web", VNI: 1001, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}})
	pb.AddVM(policy.VM{Name: "vm", Tenant: "blue", VNET: "web", MAC: blueMAC, CAs: []netip.Addr{vmCA}, Host: "host-a"})
	pb.AddRoute(policy.Route{Tenant: "blue", Prefix: netip.MustParsePrefix("198.51.100.0/24"),
		NextHop: policy.NextHop{Kind: policy.NextHopGateway, Gateway: "gw"}})
	st, err := pb.Build()
	if err != nil {
		b.Fatal(err)
	}
	// Rules for every connection of the run, both directions.
	nic, err := softnic.New(softnic.Config{Device: "gw", MaxRules: 2*b.N + 1024, Ports: []softnic.PortConfig{
		{Name: "ext", Kind: hal.PortVPort, MAC: extMAC},
		{Name: "uplink", Kind: hal.PortUplink, MAC: fabricMAC, MTU: 1600},
	}})
	if err != nil {
		b.Fatal(err)
	}
	defer nic.Close()
	router := netip.MustParseAddr("203.0.113.254")
	lo, hi, first, span := uint16(1024), uint16(65535), uint32(1024), uint32(64000)
	if rewrite {
		lo, hi, first, span = 20000, 59999, 1, 19999
	}
	g, err := gateway.New(gateway.Config{NIC: nic, State: st, Name: "gw", Uplink: 2, External: 1, Address: extAddr,
		Router: router, Neighbors: map[netip.Addr]hal.MAC{router: remoteMAC}, PortLo: lo, PortHi: hi, Idle: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	inner := wire.Build(wire.FrameSpec{SrcMAC: hal.MAC(blueMAC), DstMAC: hal.MAC(policy.DefaultRouterMAC), Src: vmCA,
		Dst: netip.MustParseAddr("198.51.100.7"), Proto: hal.ProtoUDP, SrcPort: 1, DstPort: 1, Payload: make([]byte, 18)})
	frame := wire.BuildEncap(&hal.Encap{Kind: hal.EncapVXLAN, VNI: 1001, Src: hostPA, Dst: gwPA, SrcMAC: fabricMAC, DstMAC: fabricMAC}, inner)
	var k hal.FlowKey
	var l wire.Layout
	if err := wire.Parse(frame, 2, &k, &l); err != nil {
		b.Fatal(err)
	}
	const batchLen = 64
	batch := make([]hal.Exception, batchLen)
	for i := range batch {
		batch[i] = hal.Exception{InPort: 2, Reason: hal.ReasonMiss, VNI: 1001, Buf: make([]byte, len(frame)), Len: len(frame)}
	}
	ext, _ := nic.Port(1)
	drain := make([][]byte, batchLen)
	for i := range drain {
		drain[i] = make([]byte, 2048)
	}
	sizes := make([]int, batchLen)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for done := 0; done < b.N; {
		n := min(batchLen, b.N-done)
		for i := range n {
			c := uint32(done + i)
			f := batch[i].Buf
			copy(f, frame)
			// A new connection: VM source port and remote port from the
			// counter (the UDP checksum is not the gateway's to check).
			binary.BigEndian.PutUint16(f[l.L4:], uint16(first+c%span))
			binary.BigEndian.PutUint16(f[l.L4+2:], uint16(c/span)+1)
		}
		if err := g.HandleBatch(ctx, batch[:n]); err != nil {
			b.Fatal(err)
		}
		for { // what the host path sent out, as the wire would take it
			if m, _ := ext.Recv(drain, sizes); m < batchLen {
				break
			}
		}
		done += n
	}
	el, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	s := g.Stats()
	if s.NewConns != uint64(b.N) || s.Offloaded != uint64(b.N) {
		b.Fatalf("%d packets made %d connections, %d offloaded: %+v", b.N, s.NewConns, s.Offloaded, s)
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "flows/s")
	if cpu > 0 {
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "cpu_flows/s")
	}
}

package main

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/nicpath/nicpath/gateway"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/vswitch/vswitchtest"
)

// The non-virtualized hosts of the in-process story, each on the external
// network of one gateway of the policy.
var (
	gwExternalMAC  = hal.MustMAC("02:65:00:00:00:01")
	internetHost   = netip.MustParseAddr("203.0.113.10")  // behind gw-shared
	internetMAC    = hal.MustMAC("02:65:00:00:00:10")     //
	storageArray   = netip.MustParseAddr("198.51.100.20") // behind gw-red-storage
	storageMAC     = hal.MustMAC("02:65:00:00:00:20")     //
	gatewayStories = []struct {
		name    string
		address string
		remote  netip.Addr
		mac     hal.MAC
	}{
		{"gw-shared", "203.0.113.1/24", internetHost, internetMAC},
		{"gw-red-storage", "198.51.100.1/24", storageArray, storageMAC},
	}
)

// gatewayStory adds the policy's two gateways to the fabric, each a host
// with an external port, and sends a tenant's traffic through each to a
// non-virtualized host and back; a frame of the wrong tenant to the
// dedicated gateway is refused.
func gatewayStory(s *story, fb *fabric) error {
	s.title("Gateways: the policy's gw-shared and gw-red-storage, each a host with an external port")
	gws := map[string]*vswitchtest.Host{}
	for _, g := range gatewayStories {
		pg, ok := fb.st.Gateway(g.name)
		if !ok {
			return fmt.Errorf("the policy has no gateway %s", g.name)
		}
		h, err := vswitchtest.NewGatewayHost(pg, fb.st, uplinkMAC, gwExternalMAC, gateway.Config{
			Address: netip.MustParsePrefix(g.address), Neighbors: map[netip.Addr]hal.MAC{g.remote: g.mac}})
		if err != nil {
			return err
		}
		defer h.Close()
		fb.wire.Add(h)
		gws[g.name] = h
		kind := "shared"
		if pg.Tenant != "" {
			kind = "dedicated to " + pg.Tenant
		}
		s.say("%-15s PA %s (%s), external address %s, non-virtualized host %s behind it", g.name, pg.PA, kind, g.address, g.remote)
	}
	router := hal.MAC(fb.st.RouterMAC())
	for _, c := range []struct {
		vm, gw, via string
		dst, remote netip.Addr
		remoteMAC   hal.MAC
		sport       uint16
	}{
		{"blue-web-1", "gw-shared", "its default route", internetHost, internetHost, internetMAC, 40100},
		{"red-app-1", "gw-red-storage", "its gateway rule storage (10.200.0.20 is 198.51.100.20)", netip.MustParseAddr("10.200.0.20"), storageArray, storageMAC, 40200},
	} {
		vm, err := vmOf(fb.st, c.vm)
		if err != nil {
			return err
		}
		gh := gws[c.gw]
		s.title("UDP %s → %s:2049 through %s, by %s", c.vm, c.dst, c.gw, c.via)
		frame := udpFrame(vm, vmInfo{ca: c.dst}, router, c.sport, 2049, "read block 7")
		got, err := fb.send(c.vm, frame)
		if err != nil {
			return err
		}
		var out hal.FlowKey
		var ol wire.Layout
		ok := len(got) == 1 && got[0].Host == gh && got[0].VM == vswitchtest.ExternalPort &&
			wire.Parse(got[0].Frame, 0, &out, &ol) == nil
		gwAddr := netip.MustParsePrefix(gatewayAddress(c.gw)).Addr()
		s.check(ok && out.Src() == gwAddr && out.Dst() == c.remote && out.L4Dst == 2049,
			"the datagram leaves %s's external port from %s:%d to %s:2049 (got: %s)", c.gw, out.Src(), out.L4Src, out.Dst(), where(got))
		if !ok {
			continue
		}
		answer := wire.Build(wire.FrameSpec{SrcMAC: c.remoteMAC, DstMAC: gwExternalMAC, Src: c.remote, Dst: gwAddr,
			Proto: hal.ProtoUDP, SrcPort: 2049, DstPort: out.L4Src, Payload: []byte("block 7")})
		got, err = fb.wire.Send(gh, vswitchtest.ExternalPort, answer)
		if err != nil {
			return err
		}
		h, _ := fb.vmHost(c.vm)
		s.check(deliveredOnly(got, h, c.vm, c.dst, vm.ca),
			"%s's answer reaches %s as from %s:2049 to %s:%d (got: %s)", c.remote, c.vm, c.dst, vm.ca, c.sport, where(got))
		before := gh.Gateway.Stats().HostPackets
		if _, err := fb.send(c.vm, frame); err != nil {
			return err
		}
		if _, err := fb.wire.Send(gh, vswitchtest.ExternalPort, answer); err != nil {
			return err
		}
		s.check(gh.Gateway.Stats().HostPackets == before,
			"the next datagram and answer stay on %s's NIC (no packet through its host)", c.gw)
		for _, cn := range gh.Gateway.Conns() {
			s.say("   %s: tenant %s vm %s: %s  as  %s  [%s]", c.gw, cn.Tenant, cn.VM, cn.Inside, cn.Outside, cn.Where)
		}
	}

	// blue forging a frame to red's dedicated gateway, as if from host-a.
	s.title("Isolation at a gateway: blue's VNI to red's dedicated gw-red-storage")
	web1, err := vmOf(fb.st, "blue-web-1")
	if err != nil {
		return err
	}
	gh := gws["gw-red-storage"]
	ha, _ := fb.vmHost("blue-web-1")
	forged := wire.BuildEncap(&hal.Encap{Kind: hal.EncapVXLAN, VNI: 1001, Src: ha.PA, Dst: gh.PA, SrcMAC: uplinkMAC, DstMAC: uplinkMAC},
		udpFrame(web1, vmInfo{ca: storageArray}, router, 40300, 2049, "blue wants red's storage"))
	for range 2 {
		if _, err := gh.Far[gh.Uplink].Send([][]byte{forged}); err != nil {
			return err
		}
		got, err := fb.wire.Settle(gh)
		if err != nil {
			return err
		}
		s.check(len(got) == 0, "blue's frame to gw-red-storage goes nowhere (got: %s)", where(got))
	}
	st := gh.Gateway.Stats()
	s.check(st.Refused[policy.ReasonTenantIsolation.String()] == 1,
		"gw-red-storage refused it once on its host (tenant-isolation), then a drop rule on its NIC took the second")
	x := gh.Gateway.Explain(gh.Uplink, forged)
	s.say("   why (gw-red-storage's explain):")
	s.say("%s", indent(strings.TrimRight(x.String(), "\n"), "     "))
	return nil
}

func gatewayAddress(name string) string {
	for _, g := range gatewayStories {
		if g.name == name {
			return g.address
		}
	}
	return ""
}

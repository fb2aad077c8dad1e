package vswitch

import (
	"testing"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy/policytest"
)

// TestRouteHintSameVerdict: a walk that takes the route the batch looked
// up ahead (prefetchWalk's hint) decides exactly what a walk that looks it
// up itself decides, on a small realistic policy (routed traffic across
// VNETs, gateways, on-premises destinations, ACLs); and the hints are
// taken.
func TestRouteHintSameVerdict(t *testing.T) {
	cfg := policytest.Realistic{Seed: 7, Hosts: 4, Tenants: 3, VMsPerTenant: 16, CAsPerVM: 16, ACLsPerTenant: 30, RoutesPerTenant: 60}
	st, err := cfg.Generate()
	if err != nil {
		t.Fatal(err)
	}
	host := policytest.HostName(0)
	ports := map[string]hal.PortID{}
	var pcfg []softnic.PortConfig
	for i, vm := range st.LocalVMs(host) {
		ports[vm.Name] = hal.PortID(i + 1)
		pcfg = append(pcfg, softnic.PortConfig{Name: vm.Name, Kind: hal.PortVPort, MAC: hal.MAC(vm.MAC)})
	}
	uplink := hal.PortID(len(pcfg) + 1)
	pcfg = append(pcfg, softnic.PortConfig{Name: "uplink", Kind: hal.PortUplink, MAC: uplinkMAC})
	soft, err := softnic.New(softnic.Config{Device: "hint", Ports: pcfg})
	if err != nil {
		t.Fatal(err)
	}
	defer soft.Close()
	sw, err := New(Config{NIC: soft, Host: host, State: st, Ports: ports, Uplink: uplink})
	if err != nil {
		t.Fatal(err)
	}
	defer sw.Close()
	sw.mu.Lock()
	defer sw.mu.Unlock()
	taken := 0
	for i, s := range cfg.Traffic(host, 2000) {
		var p pending
		var l wire.Layout
		if err := wire.Parse(frameOf(s.Packet), ports[s.VM], &p.key, &l); err != nil {
			t.Fatal(err)
		}
		sw.prefetchWalk(&p)
		sw.pf.flush()
		var want, got verdict
		wantAny := sw.cur.classify(&p.key, uplink, 64, nil, nil, &want)
		hint := &p.hint
		if hint.c == nil {
			hint = nil
		} else if hint.r != nil {
			taken++
		}
		gotAny := sw.cur.classifyHinted(&p.key, uplink, 64, nil, nil, &got, hint)
		if got != want || gotAny != wantAny {
			t.Fatalf("packet %d (%s from %s): with the route hint %+v (ports %v), without %+v (ports %v)", i, s.Packet, s.VM, got, gotAny, want, wantAny)
		}
	}
	if taken < 1000 {
		t.Fatalf("%d of 2000 walks had a route ahead", taken)
	}
}

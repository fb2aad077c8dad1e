package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/nicpath/nicpath/agent"
	"github.com/nicpath/nicpath/examples/agent/acme"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/vswitch"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	polPath := fs.String("policy", "examples/policies/two-tenants.yaml", "policy file")
	host := fs.String("host", "host-a", "this host's name in the policy")
	ctl := fs.String("control", "", "serve vswitchctl on this socket until interrupted, instead of telling the story")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: agent [-policy file] [-host name] [-control socket]")
		return 2
	}
	st, err := policy.LoadFile(*polPath)
	if err != nil {
		fmt.Fprintln(stderr, "agent:", err)
		return 1
	}
	nic, ports, uplink, err := openAcme(st, *host)
	if err != nil {
		fmt.Fprintln(stderr, "agent:", err)
		return 1
	}
	defer nic.Close()
	if *ctl != "" {
		err = serve(ctx, nic, st, *host, *polPath, *ctl, ports, stderr)
	} else {
		err = story(ctx, stdout, nic, st, *host, ports, uplink)
	}
	if err != nil {
		fmt.Fprintln(stderr, "agent:", err)
		return 1
	}
	return 0
}

// openAcme opens the vendor's NIC with a port for every VM the policy puts
// on this host (or migrates to it) and the uplink last; it returns the
// VM → port map the vswitch needs.
func openAcme(st *policy.State, host string) (*acme.NIC, map[string]hal.PortID, hal.PortID, error) {
	if _, ok := st.Host(host); !ok {
		return nil, nil, 0, fmt.Errorf("host %q is not in the policy", host)
	}
	vms := st.HostedVMs(host)
	sort.Slice(vms, func(i, j int) bool { return vms[i].Name < vms[j].Name })
	var dp []acme.Port
	ports := map[string]hal.PortID{}
	for i, vm := range vms {
		// Port names are the device's (virtual functions); the vswitch
		// knows VMs by the IDs.
		dp = append(dp, acme.Port{Name: fmt.Sprintf("vf%d", i), Kind: hal.PortVPort, MAC: hal.MAC(vm.MAC)})
		ports[vm.Name] = hal.PortID(i + 1)
	}
	dp = append(dp, acme.Port{Name: "uplink", Kind: hal.PortUplink, MAC: hal.MustMAC("02:ac:3e:00:00:01"), MTU: 1600})
	nic, err := acme.Open("AC9K-0001", dp)
	if err != nil {
		return nil, nil, 0, err
	}
	return nic, ports, hal.PortID(len(dp)), nil
}

// story is the integration in a few steps: the vswitch on the vendor's NIC,
// a flow the NIC takes, a flow it cannot (NAT toward the storage gateway)
// kept in the host with the reason, both delivered.
func story(ctx context.Context, w io.Writer, nic *acme.NIC, st *policy.State, host string,
	ports map[string]hal.PortID, uplink hal.PortID) error {
	caps := nic.Capabilities()
	fmt.Fprintf(w, "NIC: %s\n%s\n", caps.Device, strings.TrimRight(caps.String(), "\n"))
	sw, err := vswitch.New(vswitch.Config{NIC: nic, Host: host, State: st, Ports: ports, Uplink: uplink})
	if err != nil {
		return err
	}
	defer sw.Close()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sw.Run(runCtx) }()
	defer func() { cancel(); <-done }()

	web1, ok1 := st.VM("blue-web-1")
	web2, ok2 := st.VM("blue-web-2")
	red2, ok3 := st.VM("red-app-2")
	if !ok1 || !ok2 || !ok3 || ports["blue-web-1"] == 0 || ports["red-app-2"] == 0 {
		return errors.New("the story needs the example policy's host-a (blue-web-1, blue-web-2, red-app-2)")
	}
	up, err := nic.Wire(uplink)
	if err != nil {
		return err
	}
	send := func(vm policy.VM, dstMAC policy.MAC, dst netip.Addr, proto uint8, dport uint16) (hal.FlowKey, error) {
		p, err := nic.Wire(ports[vm.Name])
		if err != nil {
			return hal.FlowKey{}, err
		}
		f := wire.Build(wire.FrameSpec{SrcMAC: hal.MAC(vm.MAC), DstMAC: hal.MAC(dstMAC), Src: vm.CAs[0], Dst: dst,
			Proto: proto, SrcPort: 40000, DstPort: dport, Payload: []byte("agent")})
		if _, err := p.Send([][]byte{f}); err != nil {
			return hal.FlowKey{}, err
		}
		return waitUplink(up)
	}
	fmt.Fprintln(w, "\nblue-web-1 → blue-web-2 UDP 53, 3 datagrams:")
	for i := 0; i < 3; i++ {
		k, err := send(web1, web2.MAC, web2.CAs[0], hal.ProtoUDP, 53)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "  on the wire: vxlan vni %d to %s\n", k.VNI, hal.AddrFrom16(k.TunDst))
	}
	storage := netip.MustParseAddr("10.200.0.20")
	fmt.Fprintln(w, "red-app-2 → storage 10.200.0.20 TCP 3260 (gateway rule with NAT), 3 segments:")
	for i := 0; i < 3; i++ {
		k, err := send(red2, st.RouterMAC(), storage, hal.ProtoTCP, 3260)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "  on the wire: vxlan vni %d to %s, inner destination %s\n", k.VNI, hal.AddrFrom16(k.TunDst), k.Dst())
	}
	if err := sw.Maintain(ctx); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nflows:")
	var nicFlows, hostNotSupported int
	for _, f := range sw.Flows() {
		acts := make([]string, len(f.Actions))
		for i, a := range f.Actions {
			acts[i] = a.String()
		}
		fmt.Fprintf(w, "  %-4s %-15s packets=%d %s → %s\n", f.Path, f.Why, f.Packets, f.Match.Key.Src(), strings.Join(acts, ","))
		switch {
		case f.Path == vswitch.PathNIC:
			nicFlows++
		case f.Why == vswitch.WhyNotSupported:
			hostNotSupported++
		}
	}
	ex := sw.Explain(vswitch.Description{VM: "red-app-2", Packet: policy.Packet{SrcMAC: red2.MAC, DstMAC: st.RouterMAC(),
		EtherType: policy.EtherTypeIPv4, Src: red2.CAs[0], Dst: storage, Protocol: policy.ProtoTCP, SrcPort: 40000, DstPort: 3260, TTL: 64}})
	fmt.Fprintf(w, "\nexplain red-app-2 → 10.200.0.20:3260:\n%s", ex.String())
	if nicFlows == 0 || hostNotSupported == 0 || ex.Where != vswitch.PathHost {
		return fmt.Errorf("expected flows on the NIC and the NAT flow in the host (NIC %d, host for lack of NAT %d)", nicFlows, hostNotSupported)
	}
	return nil
}

// waitUplink returns the key of the next frame the NIC puts on the wire.
func waitUplink(up interface {
	Recv([][]byte, []int) (int, error)
}) (hal.FlowKey, error) {
	bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := up.Recv(bufs, sizes)
		if err != nil {
			return hal.FlowKey{}, err
		}
		if n == 1 {
			var k hal.FlowKey
			var l wire.Layout
			err := wire.Parse(bufs[0][:sizes[0]], 0, &k, &l)
			return k, err
		}
		if time.Now().After(deadline) {
			return hal.FlowKey{}, errors.New("nothing reached the wire")
		}
		time.Sleep(time.Millisecond)
	}
}

// serve runs the example daemon on the vendor's NIC: control socket
// (vswitchctl), policy watching, captures, all of vswitchd but the driver.
func serve(ctx context.Context, nic *acme.NIC, st *policy.State, host, polPath, sock string,
	ports map[string]hal.PortID, stderr io.Writer) error {
	cfg := &agent.Config{File: "agent", Host: host, Driver: acme.DriverName, Policy: polPath, Control: sock,
		Uplink: "uplink", Ports: map[string]string{}, WatchInterval: time.Second, LogLevel: slog.LevelInfo,
		Logger: slog.New(slog.NewTextHandler(stderr, nil))}
	byID := map[hal.PortID]string{}
	for _, p := range nic.Ports() {
		byID[p.ID] = p.Name
	}
	for vm, id := range ports {
		cfg.Ports[vm] = byID[id]
	}
	d, err := agent.NewWithNIC(ctx, nic, cfg)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Run(ctx)
}

package agent_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nicpath/nicpath/agent"
	"github.com/nicpath/nicpath/agent/driver"
	"github.com/nicpath/nicpath/control"
	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// exampleConfig is host-a of the example policy on a softnic whose ports
// are left unbound: the example plays the VMs and the wire itself.
func exampleConfig(dir, driver string) *agent.Config {
	pol, _ := filepath.Abs("../examples/policies/two-tenants.yaml")
	cfg, err := agent.ParseConfig(filepath.Join(dir, "agent.yaml"), []byte(`host: host-a
driver: `+driver+`
policy: `+pol+`
uplink: up0
ports: {blue-web-1: vm-bw1, blue-web-2: vm-bw2, red-app-2: vm-ra2, red-fw: vm-rfw}
control: `+filepath.Join(dir, "agent.sock")+"\n"))
	if err != nil {
		panic(err)
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	return cfg
}

// An agent on the reference NIC: a VM's first packet makes a flow that is
// offloaded, and the control socket reports it, as vswitchctl would ask.
func Example() {
	dir, _ := os.MkdirTemp("", "agent-example")
	defer os.RemoveAll(dir)
	cfg := exampleConfig(dir, "softnic")
	cfg.Binding = agent.BindNone

	a, err := agent.New(context.Background(), cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer a.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// blue-web-1 sends a datagram to blue-web-2 (on host-b): it leaves the
	// uplink encapsulated.
	vm, _ := a.SoftPort("blue-web-1")
	up, _ := a.SoftPort("uplink")
	vm.Send([][]byte{wire.Build(wire.FrameSpec{SrcMAC: hal.MustMAC("02:00:00:0b:00:01"), DstMAC: hal.MustMAC("02:00:00:0b:00:02"),
		Src: netip.MustParseAddr("10.0.0.10"), Dst: netip.MustParseAddr("10.0.0.11"), Proto: hal.ProtoUDP,
		SrcPort: 4000, DstPort: 53, Payload: []byte("query")})})
	bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if n, _ := up.Recv(bufs, sizes); n == 1 {
			break
		}
	}

	c := &control.Client{Path: cfg.Control}
	var show control.Show
	if err := c.Call(ctx, "show", nil, &show); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s on %s, %d ports\n", show.Host, show.Driver, len(show.Ports))
	var flows []control.Flow
	if err := c.Call(ctx, "flows", nil, &flows); err != nil {
		fmt.Println(err)
		return
	}
	for _, f := range flows {
		fmt.Printf("flow on the %s: %s\n", f.Location, f.Actions[1])
	}
	// Output:
	// host-a on softnic, 5 ports
	// flow on the nic: encap(vxlan vni=1001 src=198.18.0.1 dst=198.18.0.2)
}

var registerOnce sync.Once

// A driver of one's own, registered under a name: a configuration names it
// (with the options it takes) and the agent opens it with the ports
// numbered its way. The driver here is the reference NIC under another
// name.
func ExampleRegisterDriver() {
	registerOnce.Do(func() {
		agent.RegisterDriver("example-nic", func(ctx context.Context, c driver.Config) (hal.NIC, error) {
			var pcs []softnic.PortConfig
			for _, p := range c.Ports {
				fmt.Printf("port %d: %s %s", p.ID, p.Kind, p.Name)
				if p.VM != "" {
					fmt.Printf(" (%s)", p.VM)
				}
				fmt.Println()
				pcs = append(pcs, softnic.PortConfig{Name: p.Name, Kind: p.Kind, MAC: p.MAC})
			}
			return softnic.New(softnic.Config{Device: "example " + c.Options["serial"], Ports: pcs})
		}, "serial")
	})
	dir, _ := os.MkdirTemp("", "agent-example")
	defer os.RemoveAll(dir)
	cfg := exampleConfig(dir, "example-nic")
	cfg.DriverOptions = map[string]string{"serial": "EX-1"}
	a, err := agent.New(context.Background(), cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer a.Close()
	fmt.Println("device:", a.NIC().Capabilities().Device)
	// Output:
	// port 1: vport vm-bw1 (blue-web-1)
	// port 2: vport vm-bw2 (blue-web-2)
	// port 3: vport vm-ra2 (red-app-2)
	// port 4: vport vm-rfw (red-fw)
	// port 5: uplink up0
	// device: example EX-1
}

// A NIC the caller opened (a vendor's own driver): its ports are matched to
// the configuration's interfaces by name, and Close leaves it open.
func ExampleNewWithNIC() {
	var pcs []softnic.PortConfig
	for _, n := range []string{"vm-bw1", "vm-bw2", "vm-ra2", "vm-rfw"} {
		pcs = append(pcs, softnic.PortConfig{Name: n, Kind: hal.PortVPort})
	}
	pcs = append(pcs, softnic.PortConfig{Name: "up0", Kind: hal.PortUplink, MTU: 1600})
	nic, err := softnic.New(softnic.Config{Device: "mine", Ports: pcs})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nic.Close()
	dir, _ := os.MkdirTemp("", "agent-example")
	defer os.RemoveAll(dir)
	cfg := exampleConfig(dir, "softnic")
	cfg.Driver = "mine" // a name for the logs and show: no driver opens it
	a, err := agent.New(context.Background(), cfg)
	fmt.Println("New with an unregistered driver:", err)
	a, err = agent.NewWithNIC(context.Background(), nic, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("running on", a.NIC().Capabilities().Device)
	a.Close()
	fmt.Println("the NIC is still open:", len(nic.Ports()) == 5 && nic.Inject(context.Background(), 5, nil) == nil)
	// Output:
	// New with an unregistered driver: opening mine: unknown driver "mine"
	// running on mine
	// the NIC is still open: true
}

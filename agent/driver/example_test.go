package driver_test

import (
	"context"
	"fmt"
	"sync"

	"github.com/nicpath/nicpath/agent/driver"
	"github.com/nicpath/nicpath/hal"
)

var once sync.Once

// A driver registers under a name, with the options it takes; the agent
// opens it by that name when a configuration says driver: acme, giving it
// the ports numbered its way. (The opener here opens nothing: it shows what
// it is given.)
func ExampleRegister() {
	once.Do(func() {
		driver.Register("example-acme", func(ctx context.Context, c driver.Config) (hal.NIC, error) {
			for _, p := range c.Ports {
				fmt.Printf("port %d %s %s\n", p.ID, p.Kind, p.Name)
			}
			return nil, fmt.Errorf("no Acme 9000 with serial %s here", c.Options["serial"])
		}, "serial")
	})
	fmt.Println("options:", driver.Options("example-acme"))
	_, err := driver.Open(context.Background(), "example-acme", driver.Config{
		Ports: []driver.Port{
			{ID: 1, Name: "vf0", Kind: hal.PortVPort, VM: "blue-web-1"},
			{ID: 2, Name: "p0", Kind: hal.PortUplink},
		},
		Options: map[string]string{"serial": "AC9K-0001"},
	})
	fmt.Println(err)
	// Output:
	// options: [serial]
	// port 1 vport vf0
	// port 2 uplink p0
	// no Acme 9000 with serial AC9K-0001 here
}

package targets

import (
	"context"
	"time"

	"github.com/nicpath/nicpath/conformance"
	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
)

// SoftnicConfig is the in-memory NIC the suite runs against: two vports and
// an uplink, and a table small enough for the full-table case to fill.
func SoftnicConfig() softnic.Config {
	return softnic.Config{
		Device: "in-memory, 2 vports + uplink",
		Ports: []softnic.PortConfig{
			{Name: "vm1", Kind: hal.PortVPort, MAC: hal.MAC{0x02, 0, 0, 0, 0, 1}},
			{Name: "vm2", Kind: hal.PortVPort, MAC: hal.MAC{0x02, 0, 0, 0, 0, 2}},
			{Name: "uplink", Kind: hal.PortUplink, MAC: hal.MAC{0x02, 0, 0, 0, 0, 3}, MTU: 1600},
		},
		MaxRules: 512,
		MaxBatch: 256,
	}
}

// Softnic is the reference NIC as a target; mod adjusts its configuration
// (fewer capabilities, other ports).
func Softnic(mod ...func(*softnic.Config)) conformance.Target {
	return conformance.Target{
		Name: "softnic",
		Open: func(ctx context.Context) (hal.NIC, conformance.Harness, error) {
			cfg := SoftnicConfig()
			for _, m := range mod {
				m(&cfg)
			}
			nic, err := softnic.New(cfg)
			if err != nil {
				return nil, nil, err
			}
			return nic, softnic.FarSide{NIC: nic}, nil
		},
		// Frames are processed before Send returns: a short quiet time is
		// enough to know that nothing more comes.
		Quiet: 20 * time.Millisecond,
	}
}

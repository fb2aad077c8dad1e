package targets

import (
	"context"
	"fmt"
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
			return nic, &SoftnicHarness{NIC: nic}, nil
		},
		// Frames are processed before Send returns: a short quiet time is
		// enough to know that nothing more comes.
		Quiet: 20 * time.Millisecond,
	}
}

// SoftnicHarness reaches a softnic NIC's ports through their in-memory far
// sides.
type SoftnicHarness struct {
	NIC *softnic.NIC
}

// Send puts frames into the NIC on port.
func (h *SoftnicHarness) Send(port hal.PortID, frames ...[]byte) error {
	p, err := h.NIC.Port(port)
	if err != nil {
		return err
	}
	n, err := p.Send(frames)
	if err == nil && n != len(frames) {
		err = fmt.Errorf("softnic took %d of %d frames", n, len(frames))
	}
	return err
}

// Recv polls the port's transmit ring: softnic's Recv does not block.
func (h *SoftnicHarness) Recv(ctx context.Context, port hal.PortID, max int) ([][]byte, error) {
	p, err := h.NIC.Port(port)
	if err != nil {
		return nil, err
	}
	if max <= 0 {
		max = 1
	}
	for {
		if k := min(max, p.Pending()); k > 0 {
			bufs := make([][]byte, k)
			sizes := make([]int, k)
			for i := range bufs {
				bufs[i] = make([]byte, 1<<16)
			}
			n, err := p.Recv(bufs, sizes)
			out := make([][]byte, n)
			for i := range out {
				out[i] = bufs[i][:sizes[i]]
			}
			return out, err
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(200 * time.Microsecond):
		}
	}
}

// Close does nothing: the NIC owns the rings.
func (h *SoftnicHarness) Close() error { return nil }

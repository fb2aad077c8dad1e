package softnic_test

import (
	"context"
	"testing"
	"time"

	"github.com/nicpath/nicpath/conformance"
	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
)

// TestConformance runs the conformance suite against softnic: every case
// must pass, since softnic is the reference the other drivers are held to.
func TestConformance(t *testing.T) {
	conformanceRun(t, "softnic", false)
}

// TestConformanceCrypto runs the suite again on a softnic with sealed
// addresses: every ordinary case behaves the same, and the sealed case
// checks the crypto side (SealedAddresses, a key, unopenable frames
// counted and kept from the ports).
func TestConformanceCrypto(t *testing.T) {
	conformanceRun(t, "softnic-crypto", true)
}

func conformanceRun(t *testing.T, name string, crypto bool) {
	conformance.Run(t, conformance.Target{
		Name: name,
		Open: func(ctx context.Context) (hal.NIC, conformance.Harness, error) {
			nic, err := softnic.New(softnic.Config{
				Crypto: crypto,
				Ports: []softnic.PortConfig{
					{Name: "vm1", Kind: hal.PortVPort, MAC: hal.MAC{0x02, 0, 0, 0, 0, 1}},
					{Name: "vm2", Kind: hal.PortVPort, MAC: hal.MAC{0x02, 0, 0, 0, 0, 2}},
					{Name: "uplink", Kind: hal.PortUplink, MAC: hal.MAC{0x02, 0, 0, 0, 0, 3}, MTU: 1600},
				},
				// Small enough for the full-table case to fill.
				MaxRules: 512,
				MaxBatch: 256,
			})
			if err != nil {
				return nil, nil, err
			}
			return nic, softnic.FarSide{NIC: nic}, nil
		},
		// Send processes frames before it returns, so a short quiet time
		// is enough to know that nothing more comes.
		Quiet: 20 * time.Millisecond,
	})
}

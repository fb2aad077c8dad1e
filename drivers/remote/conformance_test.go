package remote_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/nicpath/nicpath/conformance"
	"github.com/nicpath/nicpath/drivers/remote"
	"github.com/nicpath/nicpath/drivers/remote/remotetest"
	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
)

// TestConformance runs the conformance suite against remote(softnic): a
// softnic served on a unix socket, programmed through the remote driver.
// It passes the cases softnic passes.
func TestConformance(t *testing.T) {
	conformanceRun(t, "remote(softnic)", false)
}

// TestConformanceCrypto is the same with sealed addresses on the served
// NIC: the remote NIC has hal.SealedAddresses, and keys registered through
// it land on the NIC.
func TestConformanceCrypto(t *testing.T) {
	conformanceRun(t, "remote(softnic-crypto)", true)
}

// servedHarness is the far side of the served softnic's ports; closing it
// stops the server and the softnic.
type servedHarness struct {
	softnic.FarSide
	stop func()
}

func (h servedHarness) Close() error {
	h.stop()
	return nil
}

func conformanceRun(t *testing.T, name string, crypto bool) {
	keys := remotetest.NewKeys(t)
	dir := remotetest.Dir(t, "remote-conf")
	seq := 0
	conformance.Run(t, conformance.Target{
		Name: name,
		Open: func(ctx context.Context) (hal.NIC, conformance.Harness, error) {
			soft, err := softnic.New(softnic.Config{
				Crypto: crypto,
				Ports: []softnic.PortConfig{
					{Name: "vm1", Kind: hal.PortVPort, MAC: hal.MAC{0x02, 0, 0, 0, 0, 1}},
					{Name: "vm2", Kind: hal.PortVPort, MAC: hal.MAC{0x02, 0, 0, 0, 0, 2}},
					{Name: "uplink", Kind: hal.PortUplink, MAC: hal.MAC{0x02, 0, 0, 0, 0, 3}, MTU: 1600},
				},
				MaxRules: 512,
				MaxBatch: 256,
			})
			if err != nil {
				return nil, nil, err
			}
			seq++
			addr := "unix:" + filepath.Join(dir, "nic"+string(rune('a'+seq%26))+".sock")
			srv, err := remotetest.StartServer(soft, addr, keys.ServerConfig())
			if err != nil {
				soft.Close()
				return nil, nil, err
			}
			stop := func() {
				srv.Stop()
				soft.Close()
			}
			nic, err := remote.Open(ctx, keys.Config(addr))
			if err != nil {
				stop()
				return nil, nil, err
			}
			return nic, servedHarness{FarSide: softnic.FarSide{NIC: soft}, stop: stop}, nil
		},
		// Exceptions cross the channel after Send returns: give them a
		// round trip on a loaded machine.
		Quiet: 100 * time.Millisecond,
	})
}

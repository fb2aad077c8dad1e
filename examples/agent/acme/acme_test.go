package acme_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nicpath/nicpath/conformance"
	"github.com/nicpath/nicpath/examples/agent/acme"
	"github.com/nicpath/nicpath/hal"
)

// TestConformance holds the driver to nicpath's conformance suite: what it
// advertises must work with traffic, what it does not must be refused with
// hal.ErrNotSupported. This is the test a vendor's driver runs first.
func TestConformance(t *testing.T) {
	conformance.Run(t, conformance.Target{
		Name: "acme",
		Open: func(ctx context.Context) (hal.NIC, conformance.Harness, error) {
			n, err := acme.Open("TEST", []acme.Port{
				{Name: "vf0", Kind: hal.PortVPort, MAC: hal.MAC{0x02, 0, 0, 0, 0, 1}},
				{Name: "vf1", Kind: hal.PortVPort, MAC: hal.MAC{0x02, 0, 0, 0, 0, 2}},
				{Name: "uplink", Kind: hal.PortUplink, MAC: hal.MAC{0x02, 0, 0, 0, 0, 3}, MTU: 1600},
			})
			if err != nil {
				return nil, nil, err
			}
			return n, harness{n}, nil
		},
		Quiet: 20 * time.Millisecond,
	})
}

// The refusal names the action and wraps hal.ErrNotSupported, which is what
// the vswitch branches on.
func TestValidateRefusesNAT(t *testing.T) {
	n, err := acme.Open("TEST", []acme.Port{{Name: "vf0", Kind: hal.PortVPort}, {Name: "up", Kind: hal.PortUplink}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	k := hal.FlowKey{InPort: 1, EthType: hal.EtherTypeIPv4}
	r := hal.Rule{ID: 1, Match: hal.Exact(&k), Actions: []hal.Action{{Kind: hal.ActionSetIPDst}, {Kind: hal.ActionOutput, OutPort: 2}}}
	err = n.Validate(&r)
	var ue *hal.UnsupportedError
	if !errors.Is(err, hal.ErrNotSupported) || !errors.As(err, &ue) || ue.Driver != "acme" || ue.Field != "actions[0] set_ip_dst" {
		t.Fatalf("Validate: %v", err)
	}
	res := make([]hal.OpResult, 1)
	if err := n.Apply(context.Background(), []hal.Op{hal.AddOp(r)}, res); err == nil || !errors.Is(res[0].Err, hal.ErrNotSupported) {
		t.Fatalf("Apply: %v, result %v", err, res[0].Err)
	}
	if c := n.Capabilities(); c.Actions.Has(hal.ActionSetIPDst) || c.Generations || c.MaxRules != acme.MaxRules {
		t.Fatalf("capabilities claim what the device lacks: %s", c.String())
	}
}

type harness struct{ n *acme.NIC }

func (h harness) Send(port hal.PortID, frames ...[]byte) error {
	p, err := h.n.Wire(port)
	if err != nil {
		return err
	}
	_, err = p.Send(frames)
	return err
}

func (h harness) Recv(ctx context.Context, port hal.PortID, max int) ([][]byte, error) {
	p, err := h.n.Wire(port)
	if err != nil {
		return nil, err
	}
	for {
		if k := min(max, p.Pending()); k > 0 {
			bufs := make([][]byte, k)
			for i := range bufs {
				bufs[i] = make([]byte, 16384)
			}
			sizes := make([]int, k)
			got, err := p.Recv(bufs, sizes)
			out := make([][]byte, got)
			for i := range out {
				out[i] = bufs[i][:sizes[i]]
			}
			return out, err
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(time.Millisecond):
		}
	}
}

func (h harness) Close() error { return nil }

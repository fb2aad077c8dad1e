//go:build linux

package tcflower

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/mdlayher/netlink"

	"github.com/nicpath/nicpath/hal"
)

// probeName says which of Open's probes a message is: "flower", "skip_sw",
// "mirred", "pedit", "csum", "vlan", "tunnel_key", or "remove" for the
// deletion of a probe filter; "" for anything else.
func probeName(t *testing.T, m netlink.Message) string {
	switch m.Header.Type {
	case rtmDelFilter:
		return "remove"
	case rtmNewFilter:
	default:
		return ""
	}
	top, _ := decodeAttrs(t, m.Data[tcmsgLen:])
	if binary.NativeEndian.Uint32(top[tcaChain]) != probeChain {
		return ""
	}
	opts, _ := decodeAttrs(t, top[tcaOptions])
	for _, kind := range []string{"mirred", "pedit", "csum", "vlan", "tunnel_key"} {
		if bytes.Contains(opts[flowerAct], []byte(kind+"\x00")) {
			return kind
		}
	}
	if binary.NativeEndian.Uint32(opts[flowerFlags])&clsFlagsSkipSW != 0 {
		return "skip_sw"
	}
	return "flower"
}

// probeNIC is a NIC on a fake kernel that answers probe p with answers[p]
// (an errno; 0 takes it). The kernel of a machine without tc offload
// refuses skip_sw with EOPNOTSUPP unless answers says otherwise.
func probeNIC(t *testing.T, placement Placement, answers map[string]syscall.Errno) *NIC {
	t.Helper()
	k := &fakeKernel{refuse: func(m netlink.Message) (int32, string) {
		p := probeName(t, m)
		if e, ok := answers[p]; ok {
			return int32(e), "refused by the test"
		}
		if p == "skip_sw" {
			return errnoEOPNOTSUPP, "TC offload is disabled on net device"
		}
		return 0, ""
	}}
	n := fakeNIC(t, k)
	n.caps = hal.Capabilities{}
	// Software placement: the ethtool probe then only reads, and the
	// fake ports' names are nothing on this machine anyway.
	n.cfg.Placement = placement
	return n
}

func TestProbeAnswersThreeWays(t *testing.T) {
	ctx := context.Background()
	t.Run("supported", func(t *testing.T) {
		n := probeNIC(t, PlaceSoftware, nil)
		if err := n.probe(ctx); err != nil {
			t.Fatalf("probe: %v", err)
		}
		for _, a := range []hal.ActionKind{hal.ActionOutput, hal.ActionSetIPDst, hal.ActionPushVLAN, hal.ActionEncap} {
			if !n.caps.HasAction(a) {
				t.Errorf("a kernel that takes every probe: no %s in %v", a, n.caps.Actions)
			}
		}
		if n.caps.Location != hal.LocationKernel || !strings.Contains(strings.Join(n.caps.Notes, "\n"), "no hardware tables") {
			t.Errorf("skip_sw refused with EOPNOTSUPP: location %v, notes %q", n.caps.Location, n.caps.Notes)
		}
	})
	t.Run("not-supported", func(t *testing.T) {
		// No act_vlan module: the kernel says ENOENT ("Failed to load TC
		// action module"); pedit attributes it does not know: EINVAL.
		n := probeNIC(t, PlaceSoftware, map[string]syscall.Errno{"vlan": syscall.ENOENT, "pedit": syscall.EINVAL})
		if err := n.probe(ctx); err != nil {
			t.Fatalf("probe: %v", err)
		}
		if n.caps.HasAction(hal.ActionPushVLAN) || n.caps.HasAction(hal.ActionSetEthDst) || !n.caps.HasAction(hal.ActionOutput) {
			t.Errorf("actions %v; want output, no vlan, no rewrites", n.caps.Actions)
		}
		notes := strings.Join(n.caps.Notes, "\n")
		if !strings.Contains(notes, "action vlan unavailable") || !strings.Contains(notes, "action pedit unavailable") {
			t.Errorf("notes do not say what is missing: %q", n.caps.Notes)
		}
	})
	t.Run("no-flower", func(t *testing.T) {
		n := probeNIC(t, PlaceSoftware, map[string]syscall.Errno{"flower": syscall.ENOENT})
		err := n.probe(ctx)
		if !errors.Is(err, hal.ErrNotSupported) || probeFailed(err) {
			t.Fatalf("probe without cls_flower = %v; want hal.ErrNotSupported", err)
		}
	})
	t.Run("hardware-placement-without-hardware", func(t *testing.T) {
		n := probeNIC(t, PlaceHardware, nil)
		if err := n.probe(ctx); !errors.Is(err, hal.ErrNotSupported) || probeFailed(err) {
			t.Fatalf("probe = %v; want hal.ErrNotSupported", err)
		}
	})
	// A probe that failed fails Open with its reason, whichever probe it
	// was; it never reads as a missing feature.
	for _, c := range []struct {
		probe string
		errno syscall.Errno
	}{
		{"flower", syscall.EPERM},
		{"skip_sw", syscall.ENOBUFS},
		{"mirred", syscall.EPERM},
		{"csum", syscall.ENOMEM},
		{"vlan", syscall.EBUSY},
		{"tunnel_key", syscall.EACCES},
		{"remove", syscall.EOPNOTSUPP}, // took the filter, then would not remove it
	} {
		t.Run("failed-"+c.probe, func(t *testing.T) {
			n := probeNIC(t, PlaceSoftware, map[string]syscall.Errno{c.probe: c.errno})
			err := n.probe(ctx)
			var pe *ProbeError
			if !errors.As(err, &pe) {
				t.Fatalf("probe with %s failing (%v) = %v; want a *ProbeError", c.probe, c.errno, err)
			}
			if errors.Is(err, hal.ErrNotSupported) {
				t.Errorf("a failed probe reads as not supported: %v", err)
			}
			if c.probe != "remove" && !errors.Is(err, c.errno) {
				t.Errorf("%v: errors.Is(%v) is false; the reason is lost", err, c.errno)
			}
			if !strings.Contains(err.Error(), "refused by the test") {
				t.Errorf("%v: the kernel's message is lost", err)
			}
		})
	}
}

// TestProbeLimits: Capabilities.MaxRules and MaxBatch are Config's, the
// package defaults when Config leaves them 0, and Open refuses negative
// ones before it touches the kernel. A batch one larger than MaxBatch is
// refused whole; the table refuses the add past MaxRules.
func TestProbeLimits(t *testing.T) {
	ctx := context.Background()
	n := probeNIC(t, PlaceSoftware, nil)
	if err := n.probe(ctx); err != nil {
		t.Fatalf("probe: %v", err)
	}
	if n.caps.MaxRules != DefaultMaxRules || n.caps.MaxBatch != DefaultMaxBatch {
		t.Errorf("defaults: MaxRules %d, MaxBatch %d; want %d, %d", n.caps.MaxRules, n.caps.MaxBatch, DefaultMaxRules, DefaultMaxBatch)
	}

	n = probeNIC(t, PlaceSoftware, nil)
	n.cfg.MaxRules, n.cfg.MaxBatch = 2, 3
	if err := n.probe(ctx); err != nil {
		t.Fatalf("probe: %v", err)
	}
	if n.caps.MaxRules != 2 || n.caps.MaxBatch != 3 {
		t.Fatalf("configured: MaxRules %d, MaxBatch %d; want 2, 3", n.caps.MaxRules, n.caps.MaxBatch)
	}
	if notes := strings.Join(n.caps.Notes, "\n"); !strings.Contains(notes, "max rules: 2,") {
		t.Errorf("notes do not give the configured table size: %q", n.caps.Notes)
	}
	// No atomic batches, and the notes say why (the conformance report
	// quotes the note that starts with the capability's name).
	if _, ok := any(n).(hal.AtomicApplier); ok || n.caps.AtomicBatch || !slices.Contains(n.caps.Notes, atomicBatchNote) {
		t.Errorf("atomic batches: AtomicBatch %v, notes %q; want false, with the note that says why", n.caps.AtomicBatch, n.caps.Notes)
	}
	ops := []hal.Op{hal.AddOp(rule(1, "192.0.2.1")), hal.AddOp(rule(2, "192.0.2.2")), hal.AddOp(rule(3, "192.0.2.3")), hal.AddOp(rule(4, "192.0.2.4"))}
	res := make([]hal.OpResult, len(ops))
	var be *hal.BatchError
	if err := n.Apply(ctx, ops, res); !errors.Is(err, hal.ErrBatchTooLarge) || !errors.As(err, &be) || be.Failed != 4 {
		t.Fatalf("a batch of 4 with MaxBatch 3: %v; want a *hal.BatchError, every op ErrBatchTooLarge", err)
	}
	if len(n.rules) != 0 {
		t.Fatalf("%d rules of a refused batch installed", len(n.rules))
	}
	err := n.Apply(ctx, ops[:3], res[:3])
	if res[0].Err != nil || res[1].Err != nil || !errors.Is(res[2].Err, hal.ErrTableFull) || !errors.Is(err, hal.ErrTableFull) {
		t.Errorf("three adds into a table of 2: %v, results %v; want nil, nil, ErrTableFull", err, res[:3])
	}
	if len(n.rules) != 2 {
		t.Errorf("%d rules installed, want 2", len(n.rules))
	}

	for _, cfg := range []Config{{MaxRules: -1}, {MaxBatch: -1}} {
		cfg.Ports = []PortConfig{{Name: "lo", Kind: hal.PortVPort}}
		if nic, err := Open(ctx, cfg); err == nil {
			nic.Close()
			t.Errorf("Open took MaxRules %d, MaxBatch %d", cfg.MaxRules, cfg.MaxBatch)
		} else if !strings.Contains(err.Error(), "negative") {
			t.Errorf("Open with MaxRules %d, MaxBatch %d: %v; want it to say which limit is negative", cfg.MaxRules, cfg.MaxBatch, err)
		}
	}
}

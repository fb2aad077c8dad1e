//go:build linux

package tcflower

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
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

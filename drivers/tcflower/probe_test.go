package tcflower

import (
	"errors"
	"syscall"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

func TestProbeOutcome(t *testing.T) {
	sock := errors.New("netlink: socket closed")
	for _, c := range []struct {
		err           error
		notSupported  bool // wraps hal.ErrNotSupported
		failed        bool // a *ProbeError
		keepsSentinel error
	}{
		{err: nil},
		{err: &KernelError{Errno: errnoENOENT}, notSupported: true},
		{err: &KernelError{Errno: errnoEOPNOTSUPP}, notSupported: true},
		{err: &KernelError{Errno: errnoEINVAL}, notSupported: true},
		{err: &KernelError{Errno: syscall.EPERM}, failed: true, keepsSentinel: syscall.EPERM},
		{err: &KernelError{Errno: syscall.ENOBUFS}, failed: true, keepsSentinel: syscall.ENOBUFS},
		{err: &KernelError{Errno: errnoEEXIST}, failed: true, keepsSentinel: hal.ErrExists},
		{err: sock, failed: true, keepsSentinel: sock},
	} {
		got := probeOutcome("action mirred", c.err)
		if c.err == nil {
			if got != nil {
				t.Errorf("probeOutcome(nil) = %v", got)
			}
			continue
		}
		if errors.Is(got, hal.ErrNotSupported) != c.notSupported || probeFailed(got) != c.failed {
			t.Errorf("probeOutcome(%v) = %v: not supported %v, failed %v; want %v, %v",
				c.err, got, errors.Is(got, hal.ErrNotSupported), probeFailed(got), c.notSupported, c.failed)
		}
		if c.keepsSentinel != nil && !errors.Is(got, c.keepsSentinel) {
			t.Errorf("probeOutcome(%v) = %v loses %v", c.err, got, c.keepsSentinel)
		}
	}
	// A failed probe never reads as not supported, even when its error
	// would (the removal of a probe filter refused with EOPNOTSUPP).
	pe := &ProbeError{Probe: "x", Err: &KernelError{Errno: errnoEOPNOTSUPP}}
	if errors.Is(pe, hal.ErrNotSupported) {
		t.Errorf("%v reads as not supported", pe)
	}
}

package tcflower

import (
	"errors"
	"fmt"

	"github.com/nicpath/nicpath/hal"
)

// ProbeError is Open's failure when one of its probes failed, rather than
// finding a feature missing: the kernel refused the probe for a reason that
// says nothing about the feature (EPERM, ENOBUFS, a netlink socket error,
// …). Open never reads such a failure as "not supported". Err is the
// kernel's or the socket's error; errors.Is(err, hal.ErrNotSupported) is
// false.
type ProbeError struct {
	Probe string // what was probed, e.g. "action mirred"
	Err   error
}

func (e *ProbeError) Error() string {
	return "tcflower: probing " + e.Probe + " failed (the feature's presence is unknown): " + e.Err.Error()
}

// Unwrap returns the probe's error (a *KernelError with its errno, …),
// unless that error would read as hal.ErrNotSupported (a probe filter the
// kernel took and then would not remove with EOPNOTSUPP): a failed probe
// never reads as a missing feature.
func (e *ProbeError) Unwrap() error {
	if errors.Is(e.Err, hal.ErrNotSupported) {
		return nil
	}
	return e.Err
}

// probeOutcome sorts what the kernel answered to a probe into three, as
// cilium/ebpf's feature tests do: nil (supported); an error wrapping
// hal.ErrNotSupported when the answer means the kernel or the device does
// not have the feature (ENOENT: no such classifier or action module;
// EOPNOTSUPP: the operation is not supported, e.g. skip_sw on a device
// without tc offload; EINVAL: attributes the kernel does not take, or
// skip_sw that no device took); and a *ProbeError for anything else, the
// probe itself having failed.
func probeOutcome(what string, err error) error {
	if err == nil {
		return nil
	}
	var ke *KernelError
	if errors.As(err, &ke) {
		switch ke.Errno {
		case errnoENOENT, errnoEOPNOTSUPP, errnoEINVAL:
			if errors.Is(err, hal.ErrNotSupported) {
				return err
			}
			return fmt.Errorf("%w: %w", hal.ErrNotSupported, err)
		}
	}
	return &ProbeError{Probe: what, Err: err}
}

// probeFailed reports whether err is a failed probe (not an answer).
func probeFailed(err error) bool {
	var pe *ProbeError
	return errors.As(err, &pe)
}

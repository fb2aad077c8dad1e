package tcflower

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/mdlayher/netlink"

	"github.com/nicpath/nicpath/hal"
)

const driverName = "tcflower"

// Linux errno values as netlink carries them. They are Linux's whatever OS
// this code is built for, so they are spelled out rather than taken from
// syscall.
const (
	errnoENOENT     = 2
	errnoE2BIG      = 7
	errnoENOMEM     = 12
	errnoENODEV     = 19
	errnoEEXIST     = 17
	errnoEINVAL     = 22
	errnoENOSPC     = 28
	errnoEOPNOTSUPP = 95
)

// KernelError is a refusal by the kernel: the errno and, when the kernel
// said one (extended acknowledgement), its message, e.g. "TC offload is
// disabled on net device". It sits inside a *hal.OpError that names the
// operation and the rule.
//
// errors.Is maps it onto the hal sentinels callers branch on: EOPNOTSUPP is
// hal.ErrNotSupported, ENOSPC and ENOMEM are hal.ErrTableFull, EEXIST is
// hal.ErrExists, ENOENT is hal.ErrNotFound.
type KernelError struct {
	Errno   syscall.Errno
	Message string
}

func (e *KernelError) Error() string {
	s := fmt.Sprintf("kernel: %s (errno %d)", errnoText(e.Errno), int(e.Errno))
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

func errnoText(n syscall.Errno) string {
	switch n {
	case errnoENOENT:
		return "no such file or directory"
	case errnoE2BIG:
		return "argument list too long"
	case errnoENOMEM:
		return "cannot allocate memory"
	case errnoEEXIST:
		return "file exists"
	case errnoEINVAL:
		return "invalid argument"
	case errnoENODEV:
		return "no such device"
	case errnoENOSPC:
		return "no space left on device"
	case errnoEOPNOTSUPP:
		return "operation not supported"
	}
	return "error"
}

// Is maps errnos onto hal's sentinels.
func (e *KernelError) Is(target error) bool {
	switch target {
	case hal.ErrNotSupported:
		return e.Errno == errnoEOPNOTSUPP
	case hal.ErrTableFull:
		return e.Errno == errnoENOSPC || e.Errno == errnoENOMEM
	case hal.ErrExists:
		return e.Errno == errnoEEXIST
	case hal.ErrNotFound:
		return e.Errno == errnoENOENT
	}
	return false
}

// Unwrap returns the errno.
func (e *KernelError) Unwrap() error { return e.Errno }

// kernelError turns what the netlink package returned into a *KernelError
// when it carries an errno from the kernel; other errors pass through.
func kernelError(err error) error {
	if err == nil {
		return nil
	}
	var oe *netlink.OpError
	if errors.As(err, &oe) {
		var errno syscall.Errno
		if errors.As(oe.Err, &errno) {
			return &KernelError{Errno: errno, Message: oe.Message}
		}
	}
	return err
}

func opError(op string, id hal.RuleID, err error) error {
	if err == nil {
		return nil
	}
	return &hal.OpError{Driver: driverName, Op: op, Rule: id, Err: kernelError(err)}
}

// errResultUnknown marks operations whose outcome the driver could not read
// back (the netlink socket failed after sending): they may or may not have
// landed, and the driver treats them as not landed.
var errResultUnknown = errors.New("tcflower: no acknowledgement from the kernel; outcome unknown")

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

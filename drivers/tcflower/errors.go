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

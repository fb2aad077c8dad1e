package softnic

import "github.com/nicpath/nicpath/hal"

// sealedFrame decides the fate of a sealed-address frame (EtherType 0x88B5).
//
// This is the hook for sealed addresses. softnic has no key to open them
// with yet, so it reports Capabilities.Crypto false and drops such frames,
// counted under ReasonSealed: the host must never see a clear address, and a
// sealed frame is useless to it. When the NIC gets its keys (hal.SealedAddresses,
// from the secure channel), this is where the frame is opened with the
// per-VM key, its destination written into the key, and the lookup
// continues like any other frame.
func (n *NIC) sealedFrame() (fate uint8, why hal.Reason) {
	return fateDrop, hal.ReasonSealed
}

// Package sealclient is the VM's side of sealed addresses: it seals the
// destination of a VM's frames to the NIC's public key, sends them on the
// VM's interface and receives the replies.
//
// The host's agent publishes the NIC's public key (vswitchd's
// seal_public_key file, vswitchctl seal) and registers the VM's public key
// with the NIC from the policy (seal_keys of the VM, with a key id). The VM
// keeps the private half. A sealed frame carries the VM's source MAC in
// clear and everything else of the destination (MAC and IP) inside a
// secretbox only the NIC can open; the payload's copy of the destination
// address is zeroed and its checksums adjusted (securechan.Sealer). The NIC
// opens it and forwards it on the sealed routes the host pushed; nothing
// about it reaches the host. Replies come back as ordinary frames (the
// VM's own address is no secret), forwarded by the NIC too.
//
// The VM does not resolve a sealed destination's MAC (an ARP request or a
// neighbor solicitation would name the destination to the host): the NIC's
// route sets the destination's MAC, and the frame sealed carries
// securechan.SealedDstMAC unless the caller gives one.
//
// Frames are sent and received on an AF_PACKET socket bound to the
// interface (Linux, CAP_NET_RAW): open it inside the VM (or the VM's
// network namespace). The command examples/nicseal is a thin main over
// this package.
package sealclient

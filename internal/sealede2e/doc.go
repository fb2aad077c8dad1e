// Package sealede2e holds the end-to-end tests of sealed addresses: a VM on
// softnic seals its destinations, the host's vswitch programs the flows and
// registers the VM's key over the secure channel, and the tests prove that
// sealed frames are routed by the NIC, that keys rotate without losing
// traffic, that the clear destination reaches nothing the host can see
// (exception path, channel, the switch's flows, explanations and logs),
// and that a NIC without crypto makes the whole path fail closed.
//
// TestSealedRoutesNoFirstPacket and TestSealedNetns cover sealed routing
// (no first packet in clear, local and remote destinations, IPv4 and IPv6,
// replies forwarded by the NIC); TestSealedNetns runs the product's path in
// network namespaces: the agent over AF_PACKET with the VM's key from the
// policy, the VM's library (securechan/sealclient) in the VM's namespace.
//
// It has no code of its own: everything is in its tests.
package sealede2e

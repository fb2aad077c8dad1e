// Package devices opens nicpath's device drivers (xdp, tcflower) as
// conformance targets on Linux interfaces, with a harness that sends and
// receives on each port's far side through AF_PACKET sockets. Only the
// runner imports it, so that the suite's own tests do not depend on the
// device drivers building.
package devices

package hal

import (
	"context"
	"net/netip"
)

// PortKind says what a port is for.
type PortKind uint8

const (
	PortVPort  PortKind = iota + 1 // a VM's port
	PortUplink                     // the port to the physical network
)

func (k PortKind) String() string {
	switch k {
	case PortVPort:
		return "vport"
	case PortUplink:
		return "uplink"
	}
	return "unknown"
}

// Port describes one port of a NIC.
type Port struct {
	ID   PortID
	Name string // e.g. the Linux interface, or a name given to softnic
	Kind PortKind
	MAC  MAC
	MTU  int
}

// PortCounters are one port's traffic counters.
type PortCounters struct {
	Rx, Tx     Counters
	Drops      uint64 // frames dropped on this port, any reason
	Exceptions uint64 // frames from this port handed to the host
}

// Stats are NIC-wide counters of the exception path and of drops, by reason.
type Stats struct {
	Exceptions [NumReasons]uint64
	Drops      [NumReasons]uint64
}

// RuleTable is the flow table.
type RuleTable interface {
	// Validate says whether the NIC can take r, without programming it.
	// A refusal wraps ErrNotSupported (an *UnsupportedError naming the field
	// or action) or ErrInvalidRule.
	Validate(r *Rule) error

	// Apply runs a batch of operations, filling results[i] for ops[i]
	// (results must be at least as long as ops). It returns nil when every
	// operation landed and a *BatchError otherwise; see the package doc. A
	// batch it cannot run at all is refused as CheckApply says.
	Apply(ctx context.Context, ops []Op, results []OpResult) error

	// Dump calls fn for every installed rule, live or not, with where it
	// really lives. fn must not call back into the NIC. A non-nil error from
	// fn stops the dump and is returned.
	Dump(ctx context.Context, fn func(*RuleInfo) error) error
}

// AtomicApplier is implemented by NICs that can apply a batch all or
// nothing: either every operation lands or the table is left as it was and
// every result carries an error (the failing ones their own, the others
// ErrNotApplied).
type AtomicApplier interface {
	ApplyAtomic(ctx context.Context, ops []Op, results []OpResult) error
}

// Generations switches which rules are live. Activate makes the rules of gen
// live for scope and the scope's other generations not live, in one step
// whose cost does not depend on how many rules change.
type Generations interface {
	Activate(ctx context.Context, scope Scope, gen Generation) error
	ActiveGeneration(scope Scope) (Generation, error)
}

// Exception is one packet on the exception path. The NIC copies the frame,
// as it arrived, into the caller's Buf, with one exception: a transport
// checksum the sender left partial (checksum offload) is completed, as a NIC
// with receive checksum offload hands its host verified frames, so that the
// host can reinject the frame as it is.
type Exception struct {
	InPort PortID
	Reason Reason
	VNI    uint32 // the VNI when the frame arrived tunnelled
	Rule   RuleID // the rule that matched (its ToHost action, or a TTL/MTU/header check after it); 0 on a miss
	Buf    []byte // caller-owned; the frame is Buf[:Len]
	Len    int
	// Truncated is set when the frame was longer than Buf; Len is then
	// len(Buf).
	Truncated bool
}

// Frame returns the frame bytes.
func (e *Exception) Frame() []byte { return e.Buf[:e.Len] }

// ExceptionPath connects the NIC and the host's slow path.
type ExceptionPath interface {
	// ReadExceptions fills batch with up to len(batch) exception packets,
	// each into its caller-owned Buf, and returns how many it filled. It
	// blocks until at least one is there or ctx is done.
	ReadExceptions(ctx context.Context, batch []Exception) (int, error)

	// Inject sends frames out of port as they are, bypassing the flow table
	// (the host's reinjection of a packet it has processed).
	Inject(ctx context.Context, port PortID, frames [][]byte) error
}

// CounterReader reads counters.
type CounterReader interface {
	// RuleCounters fills out[i] with the counters of ids[i].
	RuleCounters(ctx context.Context, ids []RuleID, out []Counters) error
	PortCounters(ctx context.Context, port PortID) (PortCounters, error)
	Stats(ctx context.Context) (Stats, error)
}

// NIC is what a driver implements and what the vswitch programs.
type NIC interface {
	Capabilities() Capabilities
	Ports() []Port
	RuleTable
	Generations
	ExceptionPath
	CounterReader
	// Close removes everything the NIC installed on the device and releases
	// it. Later calls return ErrClosed.
	Close() error
}

// SealedAddresses is implemented by NICs with the crypto capability: they
// open sealed-address frames (EtherType 0x88B5) on their fast path with a
// key precomputed per VM, and never hand the clear address to the host.
type SealedAddresses interface {
	// SealPublicKey is the NIC's Curve25519 public key that VMs seal to.
	SealPublicKey() [32]byte
	// RegisterSealKey accepts sealed frames from port under keyID, from a VM
	// whose public key is vmPublic. Two keys may be registered per port at
	// once so that a VM can rotate without losing traffic.
	RegisterSealKey(ctx context.Context, port PortID, keyID uint8, vmPublic [32]byte) error
	// RevokeSealKey stops accepting keyID on port.
	RevokeSealKey(ctx context.Context, port PortID, keyID uint8) error
	// SetSealedRoutes replaces the sealed routes of vport port: where a
	// frame the VM on port sealed goes once the NIC has opened it. The
	// host pushes, for each destination the policy lets the VM reach
	// without a per-connection decision, the actions it would program for
	// that destination; the NIC looks the opened destination up here and
	// forwards on its own, so that the host never sees which destination
	// a VM talks to. An opened frame without a route is dropped and
	// counted (never handed to the host). Routes are not counted per
	// destination: a per-route counter would tell the host the secret.
	// Nil routes remove the port's table.
	SetSealedRoutes(ctx context.Context, port PortID, routes []SealedRoute) error
}

// SealedRoute is one destination of SealedAddresses.SetSealedRoutes: an
// opened sealed frame from source MAC SrcMAC and source IP Src (the VM's
// own: a spoofed source takes no route) toward destination IP Dst (IPv4 or
// IPv6, the same family) gets Actions, which end in an output (a local
// vport, or the uplink after an encapsulation) or a drop.
type SealedRoute struct {
	SrcMAC  MAC
	Src     netip.Addr
	Dst     netip.Addr
	Actions []Action
	// Reply, when set, also forwards the destination's replies (ordinary
	// frames from Dst to Src) on the NIC when no rule matches them, so
	// that they do not reach the host either: a reply's source is the
	// sealed destination.
	Reply *SealedReply
}

// SealedReply is where the replies of a sealed route's destination arrive
// and what the NIC does with them. They are matched on InPort, their inner
// source and destination addresses (the route's Dst and Src) and, from a
// vport, SrcMAC; from the uplink, on the tunnel's kind, outer source TunSrc
// and VNI. Actions end in an output to the route's vport (after a decap, from
// the uplink). Like routes, replies are not counted per destination.
type SealedReply struct {
	InPort  PortID
	SrcMAC  MAC        // from a vport: the destination VM's MAC
	TunKind EncapKind  // from the uplink: the tunnel's kind
	TunSrc  netip.Addr // from the uplink: the destination's host
	VNI     uint32     // from the uplink
	Actions []Action
}

// TunnelEndpoint is what one uplink terminates tunnels for: the outer
// destination MAC and IP addresses of the tunnelled frames the NIC accepts
// on that port.
type TunnelEndpoint struct {
	Port PortID // an uplink
	// MAC is the outer destination MAC accepted; the zero MAC means the
	// port's own (Port.MAC).
	MAC MAC
	// Addrs are the provider addresses (unicast, IPv4 or IPv6) the NIC
	// terminates tunnels for. Empty turns filtering off for the port.
	Addrs []netip.Addr
	// Groups are multicast groups whose tunnelled frames are accepted too
	// (their outer destination MAC is the group's, not MAC).
	Groups []netip.Addr
}

// TunnelTerminator is implemented by NICs that accept tunnelled frames only
// for their own endpoint (Capabilities.TunnelFilter). Once an endpoint is set
// for an uplink, a tunnelled frame arriving there whose outer destination
// IP is none of Addrs and Groups, or whose outer destination MAC is not the
// endpoint's (unicast) or the group's (multicast), is dropped and counted
// with ReasonNotLocal: it is neither decapsulated, nor matched, nor handed
// to the host. Until an endpoint is set the NIC filters nothing. Setting it
// again replaces it; an endpoint with no Addrs removes it.
type TunnelTerminator interface {
	SetTunnelEndpoint(ctx context.Context, ep TunnelEndpoint) error
}

// LearnKind says how a NIC learned an address.
type LearnKind uint8

const (
	// LearnSeen: the address was the source of a frame from the vport
	// (an IPv4 or IPv6 source, or an ARP sender).
	LearnSeen LearnKind = iota + 1
	// LearnAnnounced: the vport announced the address — a gratuitous ARP
	// (sender address = target address) or an unsolicited neighbour
	// advertisement (ICMPv6 NA without the solicited flag), what a VM sends
	// once it runs somewhere new.
	LearnAnnounced
)

func (k LearnKind) String() string {
	switch k {
	case LearnSeen:
		return "seen"
	case LearnAnnounced:
		return "announced"
	}
	return "unknown"
}

// LearnedAddress is a source address a NIC saw a vport use. It carries the
// frame's source only: a NIC never reports a sealed frame's destination.
type LearnedAddress struct {
	Port PortID
	Kind LearnKind
	MAC  MAC        // the frame's source MAC (the ARP sender's, the NA's)
	Addr netip.Addr // the source address (ARP sender, NA target)
}

// AddressLearner is implemented by NICs that report the addresses their
// vports use (Capabilities.AddressLearning). Reports are deduplicated by
// the NIC (an address seen again is reported again only after a while)
// and bounded: reports the reader does not take in time are dropped, never
// the frames they came from. A NIC learns from the frames its exception
// path carries; one may learn as ReadExceptions reads them (xdp, tcflower),
// so that a frame the host never reads teaches nothing. Package hal/learn
// is the learning the project's drivers share.
type AddressLearner interface {
	// ReadLearned fills batch with learned addresses and returns how many
	// it filled. It blocks until at least one is there or ctx is done.
	ReadLearned(ctx context.Context, batch []LearnedAddress) (int, error)
}

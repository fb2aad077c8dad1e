// Package hal is nicpath's hardware abstraction layer: the contract between a
// NIC driver and the code that programs it (the vswitch, a vendor agent, the
// conformance suite).
//
// hal holds types and interfaces only. It imports nothing else from nicpath;
// drivers (drivers/softnic, drivers/xdp, drivers/tcflower) implement it, and
// wire formats live in hal/wire.
//
// # Rules
//
// A [Rule] is a priority, a [Match] (a [FlowKey] and a mask of the same shape),
// an ordered list of [Action]s, an owner [Cookie] and a ([Scope], [Generation])
// pair. Among the live rules whose match covers a packet's key, the one with the
// highest Priority wins; between equal priorities the lower [RuleID] wins, so
// that every driver resolves overlaps the same way. Actions run in order:
// decapsulation first, then header rewrites, then at most one encapsulation,
// and exactly one terminal action last (Output, Drop or ToHost). [CheckRule]
// enforces that shape, so a rule that is well formed for one driver is well
// formed for all of them; a [Checker] gives CheckRule's answers for a batch at
// less cost, and [Checker.CheckKnownActions] spares a driver that remembers
// which action lists passed (with which [ActionTraits] of their match) checking
// a list that its rules share again for every rule. [Rule.Clone] is the deep
// copy a driver keeps of a rule.
//
// # Capabilities and Validate
//
// [Capabilities] are data: what the opened device verifiably supports. A driver
// reports only what it checked on the device it opened (an offload mode is
// reported only after an offload attach succeeded, hardware tables only when
// rules really land in hardware). Validate says, before any programming,
// whether a rule can be taken; a refusal is an *[UnsupportedError] naming the
// field or action and the reason, and errors.Is(err, [ErrNotSupported]) holds.
// Callers treat such a refusal as "keep this flow in software", never as
// "drop the packet".
//
// # Apply
//
// [RuleTable.Apply] takes a batch of add, modify and delete operations and
// fills one [OpResult] per operation. Operations are independent: an invalid
// rule fails with its own error and the others still land. Apply returns nil
// when every operation landed, and otherwise a *[BatchError] (errors.Is sees
// the first failure's sentinel). After a device failure the results still say
// exactly which operations landed. A driver that can make a batch all-or-nothing
// implements [AtomicApplier]. Every driver starts Apply (and ApplyAtomic)
// with [CheckApply], so that a batch it cannot run at all (fewer results than
// operations, more than MaxBatch, the NIC closed, the context done) is refused
// the same way everywhere: nothing lands, every result carries the error, and
// errors.Is sees [ErrShortResults], [ErrBatchTooLarge], [ErrClosed] or the
// context's error. Modify replaces a rule's match and actions in one
// step: a packet sees the old rule or the new one, never a mix.
//
// # Generations
//
// Every rule belongs to a Scope and carries a Generation. A rule is live only
// while its Generation equals the scope's active generation, which starts at 0.
// [Generations.Activate] switches a scope's active generation in one step,
// independent of how many rules each generation holds: that is how shadow
// policies for a migrating VM are installed inactive and made live at once.
//
// # Exception path
//
// Packets the NIC does not handle (a miss, a ToHost action, a packet it cannot
// parse or process) reach the host through [ExceptionPath.ReadExceptions] in
// batches, with the in-port, a [Reason] and the VNI; a tunnelled frame comes
// with its outer headers, unless the NIC says it cannot hand tunnelled misses
// on at all (Capabilities.TunnelMissesUnseen). The host sends packets out
// of any port with [ExceptionPath.Inject]. Malformed frames never reach a VM:
// a driver drops them and counts the reason, or hands them to the host.
//
// # Errors
//
// Callers branch on the sentinels [ErrNotSupported], [ErrTableFull],
// [ErrClosed], [ErrExists], [ErrNotFound] and [ErrInvalidRule]. Device
// failures come as *[OpError], which names the operation and unwraps to the
// device's error.
package hal

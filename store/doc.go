// Package store is where every host's vswitch gets its desired state when
// there is more than one host: a Store hands out complete policy states, each
// built from one consistent revision, and watches for the next ones.
//
// # Implementations
//
//   - Memory: an in-process revisioned key-value store with the semantics of
//     etcd (revisions, prefix watches, transactions, compaction), for tests and
//     as the embedded default of a program that holds every host in one
//     process. Open it with NewKV(NewMemory(), prefix).
//   - File: one policy document (policy.LoadFile), watched for changes; the
//     default of a single vswitchd. Read-only: its file is the writer's.
//   - etcd: module github.com/nicpath/nicpath/store/etcd, a KV over
//     go.etcd.io/etcd/client/v3. It lives in its own module so that etcd's
//     dependencies (grpc, protobuf, zap, …) stay out of this one.
//
// KVStore turns any revisioned key-value backend (the KV interface) into a
// Store, a Writer and a StatusReader; KV implementations only move bytes.
//
// # Layout
//
// Under a prefix (DefaultPrefix), one key per object, its value the object's
// JSON encoding (policy's own types):
//
//	state/hosts/NAME          policy.Host
//	state/gateways/NAME       policy.Gateway
//	state/tenants/NAME        policy.Tenant
//	state/vnets/TENANT/NAME   policy.VNET
//	state/vms/NAME            policy.VM (one mapping per CA)
//	state/routes/TENANT/PFX   policy.Route (explicit routes)
//	state/acls/TENANT/ID      policy.ACL
//	state/gwrules/TENANT/NAME policy.GatewayRule
//	state/shadows/VM          policy.Shadow
//	state/activations/VM      policy.Activation
//	state/router_mac          policy.MAC
//	status/HOST               Status
//
// Path elements are escaped (url.PathEscape), so a route's prefix 10.0.0.0/24
// is one element. 1M mappings are 1M keys (or fewer, for VMs with several
// CAs): a host converges with paged reads at one revision, and a migration
// touches two keys (a shadow, then an activation), never the mappings.
//
// # Contracts
//
//   - All or nothing: a host only ever applies a state that Builder.Build
//     accepted, built from every object at one revision. A writer makes each
//     change in one transaction (Commit); a revision whose objects do not
//     build (an inconsistent write) is reported (Event.Invalid) and skipped,
//     and the host keeps the state it has.
//   - No lost or duplicated update: watches deliver revisions in order, and a
//     watcher that falls behind a compaction, or loses the store, resyncs from
//     a fresh Load: that snapshot contains every change up to its revision, so
//     intermediate revisions may be coalesced but none is lost, and a
//     revision at or below the applied one is never applied again.
//   - Activation is cheap: a revision that only changes activation records is
//     turned into State.Activate on the previous state, which the vswitch
//     applies as one generation switch; anything else rebuilds the state.
//
// # Following
//
// Follower connects a Store to a vswitch (anything with Update): it loads,
// applies, watches, reports a Status per applied revision (the VM manager
// waits on them), and when the store is unreachable keeps the last state
// (Stale) and resyncs on reconnection.
package store

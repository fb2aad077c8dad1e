// Package etcd is the etcd implementation of nicpath's store: a store.KV
// over go.etcd.io/etcd/client/v3, which store.NewKV turns into a Store,
// Writer and StatusReader with the layout described in package store.
//
// Reads of the whole state are paged (PageSize keys a request) at one
// pinned revision, so a host converges on a million mappings without one
// huge response, and still sees one consistent revision. Watches start at a
// revision and report compaction as store.ErrCompacted; the client's own
// reconnection keeps a watch going across short outages, and the
// follower's heartbeat (a read with a deadline) notices longer ones.
//
// It is its own Go module (see README.md): etcd's client and server pull in
// grpc, protobuf, zap, OpenTelemetry and more, which the core module, and
// everyone who only wants a file or in-process store, should not carry.
//
// Importing the package registers the "etcd" scheme with store.Open:
// etcd://127.0.0.1:2379,127.0.0.1:22379/prefix/.
package etcd

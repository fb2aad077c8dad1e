// Package directory resolves CA→PA mappings on demand instead of replicating
// every mapping to every host.
//
// A [Record] is one mapping: for a (VNI, customer address) the provider
// address, MAC, VM, host and generation of the VM's location, and, while the
// VM migrates, its shadow location. Records carry a version and are signed
// by the VM manager's ed25519 key ([Sign]); [Decode] and [Verifier] refuse
// malformed, unsigned or wrongly signed records, and [Select] picks among
// conflicting values deterministically (the highest valid version, then the
// greatest encoding), since a distributed directory has no consensus.
//
// [Publisher] is what the VM manager (store/migrate) writes records to, and
// [Resolver] what a host asks on a miss: the policy state satisfies it
// ([StateResolver]) as does a distributed directory (the separate module
// github.com/nicpath/nicpath/directory/dht, on a libp2p Kademlia DHT).
// [Cache] sits in front of a resolver on a host: answers are kept for a TTL,
// misses for a shorter negative TTL, concurrent lookups of one destination
// are merged, and each lookup is bounded in time. The package
// directory/ondemand (its Layer) puts the cache in front of a vswitch:
// first packets to an unresolved destination wait in a bounded queue per
// destination while the lookup runs, and are then walked as usual, or
// dropped and counted.
package directory

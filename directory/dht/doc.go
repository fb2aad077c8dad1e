// Package dht is nicpath's mapping directory on a private libp2p Kademlia
// DHT (github.com/libp2p/go-libp2p-kad-dht): every host runs a Node, the VM
// manager publishes signed directory.Records through one, and each host's
// vswitch resolves a destination on its first packet (directory.Resolver).
//
// The network is private: its own protocol prefix (default "/nicpath"),
// every node in server mode, bootstrap peers from the configuration and no
// public bootstrap. A node refuses every peer whose ID is not pinned in the
// configuration (Config.Peers), through a connection gater that runs after
// the security handshake has authenticated the peer's key; the pre-shared
// key of libp2p's private networks is not used because it covers only
// stream transports (TCP, WebSocket), not QUIC. Transports ("tcp", "quic")
// and security ("noise", "tls") are named in the configuration.
//
// Records are validated on every node (directory.Verifier: malformed,
// unsigned or not signed by a trusted VM manager key, or stored under
// another key: refused) and among conflicting values the highest valid
// version wins, the same on every node.
package dht

// Package remote runs a hal.NIC in another process — a SmartNIC's or DPU's
// own cores, or another process on the host — and drives it from the host
// over securechan: the NIC side serves the NIC it opened (Server, Serve;
// examples/nicd is the process), and the host opens it as a driver like any
// other (Open returns a hal.NIC).
//
//	nic side:  soft, _ := softnic.New(…)
//	           remote.Serve(ctx, soft, ln, remote.ServerConfig{PrivateKey: nicKey, HostKeys: hostPubs})
//	host side: nic, _ := remote.Open(ctx, remote.Config{Address: "unix:/run/nicd.sock",
//	               PrivateKey: hostKey, ServerKey: nicPub, OnReconnect: reconcile})
//
// The package registers itself in the agent's driver registry as "remote"
// (agent/driver), with driver_options address, key and server_key (key
// files, relative to the configuration file): an agent configuration with
// driver: remote opens it, and the agent reconciles its switch after each
// reconnect.
//
// Everything of the hal crosses the channel: Validate, batched Apply with a
// result per operation (ApplyAtomic when the served NIC has it), Dump,
// Activate and ActiveGeneration, the exception path and Inject, rule and
// port counters and Stats, sealed-key registration (hal.SealedAddresses,
// carried as securechan's own MsgKeyRegister/MsgKeyRevoke messages) and
// SetTunnelEndpoint (hal.TunnelTerminator). Address information travels
// too, in securechan's own messages: mapping updates host → NIC
// (Client.SendAddresses, handled by ServerConfig.Addresses, acknowledged
// one by one) and learned addresses NIC → host (Server.PublishLearned,
// Config.OnLearned); nothing in nicpath feeds or consumes them yet. The
// served NIC's own address learning (hal.AddressLearner: the source
// addresses its vports use, gratuitous ARPs and unsolicited neighbour
// advertisements) travels as a message of its own, NIC → host, while a
// session is up; the NIC Open returns implements hal.AddressLearner when
// the served NIC does, and buffers Config.LearnedQueue of them for
// ReadLearned (beyond that they are dropped and counted). What the NIC
// learns while no host is connected waits in the NIC's own bounded queue.
// Capabilities and Ports are the
// served NIC's, as of the last hello (Driver reads "remote"; Device names
// the served driver and device). The NIC Open returns has each optional
// interface exactly when the served NIC has it, since callers find them by
// type assertion.
//
// # Keys
//
// Both ends hold a static Curve25519 key and pin the other's: the server a
// list of host keys (ServerConfig.HostKeys), the host the one NIC-side key
// (Config.ServerKey). Keys live in small text files (keys.go):
//
//	# comment
//	private-key <64 hex digits>          the node's own key; file mode 0600
//	public-key  <64 hex digits> [name]   a public key: one's own, or a pinned peer's
//
// nicd keygen writes a pair; LoadPrivateKey refuses a private key file that
// others may read, LoadPublicKeys a peer file that holds a private key.
//
// # The protocol
//
// The channel is securechan's (see its doc): a three-message handshake
// with fresh ephemeral keys that proves both static keys, then sealed
// frames, each with a per-direction counter in its authenticated header,
// 2-byte length prefixed on the stream (unix socket, TCP, vsock), up to
// 64 KiB. securechan.Conn carries only securechan's address messages, so
// this package drives a securechan.Session itself (channel.go): the
// plaintexts of the data frames, concatenated, are an ordered byte stream
// of RPC messages, each
//
//	length (4, big endian) | type (1) | request id (4) | body
//
// An RPC message may span frames and a frame may carry many messages.
// Bodies are compact binary (codec.go): fixed-width big-endian integers,
// unsigned varints for counts, lengths and IDs, addresses in 1, 5 or 17
// bytes, flow keys and masks as the difference from the message's previous
// key or mask (a bitmap of the fields that differ, then those fields), a
// rule's ID, priority, cookie, scope and generation likewise (a flags
// byte: ID the previous + 1, the others unchanged; protocol version 2), a
// delete of the next ID as one byte, and an action list as a one-byte
// reference when it is the previous rule's list. An exact-match add with a
// VXLAN encapsulation takes about 9 bytes in a batch of such rules. Decoders refuse trailing bytes and counts the
// input cannot hold; FuzzDecode covers every message type.
//
// The host's first message is a hello: the protocol versions it speaks
// (ProtocolVersion), a client identity, the exceptions it can buffer, its
// keepalive period. The server answers with its instance identity (random
// per server process), the served NIC's capabilities, ports, optional
// interfaces and sealing key — or refuses the version: a host offering
// only versions older than ServerConfig.MinVersion gets a *VersionError,
// and so does the server's log, so that no end can be talked into a
// downgrade (the hello travels inside the authenticated channel, where an
// attacker cannot rewrite it).
//
// Apply and ApplyAtomic start with hal.CheckApply on the host, so that a
// batch the NIC would refuse whole (too few results, more operations than
// the served NIC's MaxBatch, a closed driver, a done context) never crosses
// the channel. Calls carry a request id that their replies echo; the server runs calls
// in the order they arrive, one at a time, and answers pings and exception
// credits on the side so that a long Apply does not starve them. An Apply
// is one request: a batch travels in segments (2048 operations first,
// each next twice as large up to 16384) that the NIC side decodes and
// applies while the host still encodes and seals the next ones, and the
// server gives the served NIC at most ServerConfig.ApplyChunk operations per
// call (16384), sending each chunk's results back as soon as they are
// known. Replies of Dump come as chunks of rule
// infos, then a final reply.
//
// Exceptions flow NIC → host under credit: the host grants as many as its
// queue holds (Config.ExceptionQueue), returns credit as ReadExceptions
// consumes them, and the server sends only while it has credit. What it
// cannot send it drops and counts as hal.ReasonQueueFull (in Stats' drops,
// in the in-port's PortCounters.Drops, and in ServerStats): a slow host
// costs exceptions, never the NIC's datapath and never memory on either
// side.
//
// # Refusals
//
// A frame that fails authentication (tampered, or sealed with another
// key), repeats a counter (replayed), skips one (reordered, or one
// dropped), carries another version byte (a downgrade on the wire) or
// holds a malformed message is refused with securechan's sentinel; on a
// stream the channel cannot be trusted after that, so the refusing end
// closes it. The server first answers every call it had read whole before
// the refused frame, then tells the host (sealed) which frame it refused
// and why, then closes: the host fails the calls still pending with a
// *RefusedError (errors.Is ErrRefused and the securechan sentinel), and
// nothing they carried was applied. A refusal by the host of a frame from
// the NIC side fails the pending calls with ErrUnknownOutcome wrapping its
// *RefusedError, since the NIC side may have applied them. A handshake
// with an unpinned key, a replayed handshake or a rewritten one fails with
// a *HandshakeError (ErrHandshake). Every refusal is logged and counted
// (ServerStats.Refused by securechan.DropReason).
//
// # Across a cut
//
// What is guaranteed:
//
//   - The NIC keeps forwarding on its rules while the channel is down, and
//     when the host goes away for good: a session that ends changes nothing
//     on the NIC, and Close on the host closes the driver, not the NIC.
//   - The driver reconnects by itself, with backoff (Config.ReconnectMin,
//     ReconnectMax), and reports each reconnect (Config.OnReconnect) with
//     whether the NIC side is a new server instance (Reconnect.Restarted).
//     The caller reconciles then: the NIC side may have kept its rules (a
//     server restart on the same NIC) or lost them (a fresh NIC), and a
//     vswitch compares the NIC's Dump with what it wants by cookie
//     (vswitch.Switch.Reconcile) and adds, repairs and removes only what
//     differs.
//   - A call made while the channel is down is not sent: it fails with a
//     *hal.OpError wrapping ErrNotConnected, and nothing of it is applied.
//   - Of an Apply cut in the middle, the results that came back are exact;
//     the others wrap ErrUnknownOutcome. The NIC side applies no more of a
//     batch once it sees its session gone (the chunk in the NIC's hands at
//     that moment may land).
//   - A Dump after the reconnect shows the NIC's real rules. Rule IDs make
//     a retry safe: an add that had landed fails with hal.ErrExists, a
//     delete with hal.ErrNotFound.
//
// What is not:
//
//   - The outcome of calls whose answer was lost (ErrUnknownOutcome): the
//     driver does not replay them; the caller reconciles.
//   - Exceptions in flight or queued on the NIC side when the channel goes
//     down are lost (the NIC side counts those it drops); the host sees
//     the next packets of those flows again.
//   - A batch is all or nothing across a cut only through ApplyAtomic on a
//     NIC that has it: the whole batch is one call on the NIC side.
//   - One host session is active at a time: a newer authenticated session
//     replaces the older one (a host that reconnects before the server saw
//     the cut), after the call the older one was running has finished.
//
// # Figures
//
//	go test -run '^$' -bench 'Apply$|Exceptions|FirstPacket' ./drivers/remote
//
// BenchmarkApply reports apply_ops_ratio (remote.apply_ops_ratio: rule
// operations per second through remote(softnic) over a unix socket,
// batches of 64K exact-match rules, divided by softnic directly in the same
// run; target ≥ 0.5), and beside it apply_cpu_ratio, the same ratio in
// operations per CPU second of the whole process (the channel runs on
// several threads, so on a loaded machine the wall-clock ratio moves with
// the CPU share it gets). BenchmarkExceptions reports exceptions/s delivered
// to the host (remote.exceptions_per_s). BenchmarkFirstPacket reports what
// the channel adds to a first packet's round trip (miss, exception to the
// host, Inject out of the uplink) at the median and the 99th percentile
// (remote.first_packet_p50_us, p99_us).
package remote

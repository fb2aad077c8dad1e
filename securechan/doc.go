// Package securechan is the cryptography between the host and the NIC: an
// authenticated, encrypted channel that carries address information (mapping
// updates, learned addresses, key registrations, acknowledgements), and
// sealed addresses, with which a VM hides its destination from the host so
// that only the NIC sees it.
//
// Every primitive comes from golang.org/x/crypto (nacl/box, nacl/secretbox,
// curve25519) and the standard library (SHA-256, HKDF); this package only
// composes them. It imports nothing else of nicpath.
//
// # The channel
//
// Both ends hold a static Curve25519 key and pin the peer's public key
// (Config.PeerKeys). Each session runs a three-message handshake with fresh
// ephemeral keys, so a stolen static key does not open past sessions:
//
//	Init (initiator → responder), 188 bytes:
//	  0  version=1 | 1  type=1 | 2  flags=initiator | 3  epoch=0
//	  4  E_i (32)                     initiator ephemeral public key
//	  36 nonce (24)
//	  60 box[e_i → S_r]( S_i (32) | timestamp (8) | nonce (24) |
//	                     box[s_i → S_r]( SHA-256("…init" | header | E_i | S_i | S_r | timestamp) ) )
//
//	Resp (responder → initiator), 108 bytes:
//	  0  version=1 | 1  type=2 | 2  flags=0 | 3  epoch=0
//	  4  E_r (32)
//	  36 nonce (24) | box[s_r → S_i]( SHA-256("…resp" | Init | header | E_r) )
//
//	Confirm: the initiator's first sealed frame (control "confirm").
//
// The initiator's identity travels encrypted to the responder's static key;
// the inner boxes under the static-static key prove possession of each
// static key, and their labels say which role made them, so neither message
// can be reflected. The traffic keys are HKDF-SHA256 over
// DH(e_i,e_r) | DH(e_i,S_r) | DH(s_i,E_r), salted with the transcript
// (Init | Resp): one key per direction plus a chaining key for rekeys. The
// responder refuses an Init whose timestamp is not newer than the last one
// it accepted from that peer (Config keeps them), and any authenticated
// frame from the initiator confirms the keys.
//
// Sealed frames (data and control) are
//
//	0 version | 1 type (3 data, 4 control) | 2 flags | 3 epoch | 4..11 counter | secretbox(plaintext)
//
// with the nonce = the 12 header bytes followed by 12 zero bytes: the header
// is authenticated through the nonce (rewriting the version, the role flag,
// the epoch or the counter fails authentication), and the per-direction
// counter makes nonces unique per key. A receiver refuses frames carrying
// its own role flag (ErrReflection), unknown versions (ErrVersion), counters
// already seen (ErrReplay) and, on streams, counters out of order
// (ErrReorder); on datagram transports a ReplayWindow-frame window accepts
// reordering. A refused frame never changes the session: the replay window
// moves only after authentication succeeded.
//
// Rekeying: after Config.RekeyAfterMessages frames or RekeyAfterTime the
// initiator sends a new ephemeral key under the current keys (RekeyInit), the
// responder answers with one of its own (RekeyResp), and both derive the next
// epoch from their DH and the chaining key. The initiator switches at once;
// the responder switches when it first receives a frame of the new epoch.
// The previous receive key is dropped at that point on streams and after
// Config.RekeyGrace on datagrams. A responder that is due asks the initiator
// (RekeyReq). Data frames stop at twice the message limit or three times the
// age (ErrKeyExhausted); Conn waits for the rekey there instead of failing.
// A clean close is a control frame; a stream that ends without one is
// reported as ErrTruncated, not io.EOF.
//
// Framing: on a stream (TCP, unix socket, net.Pipe) each frame is preceded by
// its length (2 bytes, big endian); lengths over Config.MaxFrame are refused
// before reading (ErrOversized). On a datagram transport (UDP, unixgram) a
// datagram is one frame, the handshake and rekey messages are retransmitted,
// and refused datagrams are counted (Conn.Drops) and skipped, since anyone
// can send one.
//
// Session is the I/O-free state machine; Conn drives it over a Transport.
// Conn.Send batches encoded messages into one sealed frame (up to MaxFrame:
// about 490 IPv4 mappings in the default 16 KiB) and writes through a buffer;
// Conn.Flush pushes. Someone must be calling Conn.Recv on both ends: rekey
// answers arrive there.
//
// # Address messages
//
// A Message is versioned (its first byte is MsgVersion; other values are
// refused with ErrVersion) and carries a sequence number that Acks echo.
// Types: MsgMappingAdd, MsgMappingRemove, MsgAddressLearned, MsgAck,
// MsgKeyRegister, MsgKeyRevoke; see message.go for the byte layout. A frame's
// plaintext is a concatenation of messages.
//
// # Sealed addresses
//
// A VM hides its destination from the host by sealing it to the NIC's
// public key (EtherType 0x88B5, IEEE local experimental):
//
//	offset size field
//	0      6    Ethernet destination: SealedDstMAC (fixed, carries no information)
//	6      6    Ethernet source: the VM's MAC
//	12     2    EtherType 0x88B5
//	14     1    SealVersion (1)
//	15     1    key id (which registered VM key sealed it; rotation)
//	16     1    flags (0)
//	17     1    reserved (0)
//	18     24   nonce: 16 random bytes per Sealer | 8-byte counter
//	42     80   secretbox(clear block, 64 bytes) under box.Precompute(VM key, NIC key)
//	122    …    payload: the VM's IPv4/IPv6 packet, destination address zeroed
//
//	clear block (64 bytes):
//	0  version (= header) | 1  key id (= header) | 2  family (4|6) | 3  flags (0)
//	4  payload EtherType (0x0800|0x86DD)
//	6  destination MAC
//	12 source MAC (= Ethernet source)
//	18 reserved (0)
//	20 destination IP (16; IPv4 in 20..23, rest 0)
//	36 reserved (0), to 64
//
// The block repeats the header's version, key id and source MAC, which
// authenticates them. The payload's destination address is all zero and its
// checksums (IPv4 header; TCP, UDP, ICMPv6 pseudo-header) are those of the
// packet with a zero destination, so nothing in the clear depends on the
// destination (Sealer.SealFrame does this; OpenFrame restores the address and
// fixes the checksums incrementally). Only the destination MAC and IP are
// sealed; ports and payload are not. A frame needs no replay protection of
// its own: only the VM can inject on its vport, and a replayed frame would be
// a frame the VM could send anyway.
//
// The NIC side: a KeyTable holds the NIC's private key and, per vport, up to
// two VM keys with their shared key precomputed. OpenFrame(table, vport,
// frame, out) opens a frame with one secretbox.Open, checks it and writes
// the ordinary Ethernet frame (destination MAC, source MAC, payload
// EtherType, payload with its destination restored) into out, without
// allocating and without locks. Its errors are bare sentinels
// (ErrNotSealed, ErrTruncated, ErrVersion, ErrMalformed, ErrUnknownKey,
// ErrTampered, ErrShortBuffer) that ReasonOf maps to a DropReason for
// per-reason counters.
//
// Keys are registered by the host over the channel: the host sends
// MsgKeyRegister{Vport, KeyID, Key} and the NIC applies it with
// KeyTable.HandleMessage, which returns the Ack to send back (hal's
// SealedAddresses.RegisterSealKey and RevokeSealKey map onto Register and
// Revoke). Registering a new key id makes it the newest; the previous key
// keeps working for the rotation grace period (WithRotationGrace, default
// DefaultRotationGrace), then is refused (ErrUnknownKey); at most two keys
// per vport are live. MsgKeyRevoke ends a key at once.
//
// # Contract for NICs and the vswitch
//
// A NIC that reports the crypto capability (hal.Capabilities.Crypto) owns
// the KeyTable and its private key; neither ever leaves the NIC. On its fast
// path it gives every 0x88B5 frame from a vport to OpenFrame and routes the
// result like any other packet. The clear result never goes to the host:
//
//   - if OpenFrame fails, the NIC drops and counts by ReasonOf(err); if it
//     sends anything to the host, it is the original, still-sealed frame with
//     reason hal.ReasonSealed, never the contents of out;
//   - if the opened packet has no flow (a miss, an action the NIC cannot do,
//     TTL, MTU …), the NIC must not put it on the exception path as it would
//     an ordinary miss: it drops and counts it, or hands the host only the
//     still-sealed frame (the host cannot open it; the VM retries once the
//     flow exists). Learned-address reports carry the frame's source only;
//   - the buffer passed as out holds the clear frame: reuse it only for the
//     fast path, and do not hand it to code that can reach the host.
//
// Routing an opened frame without a first packet in clear: the host pushes
// the sealed routes its policy walk decided for every destination a VM may
// seal (hal.SealedAddresses.SetSealedRoutes; vswitch's sealroute.go) and
// the NIC looks the opened destination up there; see DESIGN.md. The VM's
// side is the subpackage sealclient (and examples/nicseal).
//
// A NIC without the crypto capability makes the vswitch fail closed: it
// drops the frames for which IsSealedFrame is true (0x88B5, also behind VLAN
// tags) and counts them. The host has no KeyTable, never
// calls OpenFrame and never holds the NIC's private key, so it cannot
// decrypt; there is no software fallback for sealed frames.
//
// Tests that check for leaks can use the sealtest subpackage: a Recorder
// captures what a transport carries and FindLeak looks for every encoding of
// the sealed destination.
//
// # Figures
//
//	go test -run '^$' -bench 'SealedOpen|ChannelUnix' ./securechan
//
// BenchmarkSealedOpen reports open_vs_secretbox (sealed.open_vs_secretbox:
// OpenFrame divided by secretbox.Open of the same sealed block, same run,
// fastest of interleaved chunks; target ≤ 1.1, 0 allocations).
// BenchmarkChannelUnix reports msgs_per_s (securechan.msgs_per_s: IPv4
// mapping messages over a unix socket, batched about 490 per sealed frame
// with buffered writes; target ≥ 500k/s).
package securechan

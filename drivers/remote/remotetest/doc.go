// Package remotetest starts the NIC side of drivers/remote for tests: a
// remote.Server serving any hal.NIC (a softnic, usually) on a unix socket,
// with fresh key pairs each pinning the other, and the host side opened to
// it; and the files of a NIC side's configuration (nicd's): key files
// (KeyFiles) and the configuration itself (WriteNICConfig,
// SoftnicSection), and a namespace of veth pairs for the drivers that
// attach to interfaces (VethNS). Everything it starts is stopped by the test's cleanup.
//
// The tests of package remote itself cannot import it (it imports remote);
// they keep their own helpers.
//
// Contracts:
//   - Serve, Open and Start register their stop with t.Cleanup, so that the
//     host side closes before its server stops and the server stops before
//     the NIC it serves closes (cleanups run last-registered first).
//   - Dir is short enough for a unix socket path (108 bytes), which
//     t.TempDir may not be.
//   - StartServer alone registers nothing: for callers that stop servers
//     themselves, outside a test's goroutine.
package remotetest

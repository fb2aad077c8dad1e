// Package nsexec runs a function inside a network namespace, so that the
// sockets and links it opens belong to that namespace.
//
// The calling goroutine's OS thread is never switched: Do runs fn on a
// fresh, locked thread, and a thread that cannot be switched back stays
// locked so that it dies with its goroutine rather than run other code in
// the wrong namespace.
package nsexec

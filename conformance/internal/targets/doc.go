// Package targets opens nicpath's drivers as conformance targets: a NIC and
// a harness to its ports' far side. The runner binary and the conformance
// package's own tests use it; package conformance itself never imports a
// driver.
package targets

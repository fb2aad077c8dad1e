// Package targets opens the reference NIC, softnic, as a conformance target
// with an in-memory harness on its ports. The runner binary and the
// conformance package's own tests use it; package conformance itself never
// imports a driver.
package targets

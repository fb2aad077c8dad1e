// Command demo is nicpath's first-run story, what `make demo` runs: two
// hosts, each with VMs of two tenants whose customer addresses overlap, real
// traffic (ping, UDP, TCP), flows moving from the host's slow path to the
// NIC, the explain output, and proof that the tenants are isolated.
//
// It tells the story in process: software NICs joined by an in-memory wire,
// VMs as the far sides of their ports, each host's vswitch handling its
// NIC's exception path.
//
// It exits 0 only when every check of the story held, so it doubles as a
// smoke test (TestInProcessStory runs it).
//
// The policy is the embedded default, a copy of
// examples/policies/two-tenants.yaml.
package main

//go:generate cp ../policies/two-tenants.yaml default-policy.yaml

// Package policy is nicpath's desired state: tenants, VNETs, CA→PA
// mappings, routing domains, ACLs, gateway rules and shadow mappings for
// migrating VMs; the checks that make a state trustworthy; the difference
// between two states; and the reference evaluator that every datapath is
// tested against.
//
// policy imports nothing else from nicpath: it knows no NIC, no flow table
// and no wire format.
//
// # Building a state
//
// A [State] comes from a YAML document ([Parse], [LoadFile], [LoadReader];
// the format is in FORMAT.md next to this file: one document per file) or
// from the Go API ([NewBuilder], the Add methods, [Builder.Build]). Files
// in the usual block style are decoded as they are read, without holding
// the file or a yaml.Node tree of it, so that a million mappings load in
// seconds and a few hundred bytes of heap each; other YAML goes through
// yaml.v3 whole (FORMAT.md says which and why). Both run the same checks:
// overlapping subnets in a routing domain, duplicate CAs, VNI collisions,
// mappings outside their VNET's subnets, unknown references, invalid or
// non-canonical prefixes, next-hop addresses that loop or reach no VM,
// shadows and activations of unknown VMs or generations, and more. Every
// problem is a [*LoadError] naming file, line, column and field, collected
// in an [ErrorList]; when there is any, no State is returned at all.
//
// A State is immutable and safe for concurrent use. [State.Activate]
// returns a new State with another generation live for one VM; everything
// else is shared. [Diff] lists what differs between two States, keyed the
// way derived flows are found (mappings by VNI and CA, routes by tenant and
// prefix, ACLs by tenant and id, …), so that a vswitch reprograms only
// what changed.
//
// # Mappings
//
// The CA→PA mappings are compiled into an open-addressing table without
// pointers, keyed by (VNI, CA), holding the host (PA) and MAC: 48 bytes per
// mapping at its load factor. [State.Lookup] reads it without allocating.
//
// # The evaluator
//
// [State.Evaluate] answers what must happen to one packet entering one host
// — from a local VM's vport ([FromVM]) or from the uplink after
// decapsulation ([FromTunnel], [FromUplink] for VXLAN) — as a [Verdict]:
// deliver to a local VM, encapsulate toward a PA with a VNI in the VNET's
// encapsulation ([VNET.Encap]), send to a gateway, hand to the host,
// or drop with a [Reason]; with the header rewrites to make, the routes and
// ACL layers it went through, and a trace for "explain". It is a plain
// interpreter of the policy, written to be obviously right rather than
// fast; datapaths are compared with it, never derived from it.
//
// The evaluator is stateless. Stateful ACLs are expressed through
// [EvalOptions.Established] and the Stateful flag of each [ACLDecision]:
// see [ACL] for the semantics and [ConnTable] for the reference tracker.
//
// Subpackage policytest generates random valid policies (tenants with
// overlapping customer addresses on several hosts) and packets, for
// property and differential tests, and a realistic policy with its traffic
// at the slow path's benchmark scale. Subpackage match holds the lookup
// structures a datapath classifies with (a longest-prefix-match route
// trie, an ACL classifier), held to this package's linear definitions.
package policy

// Package policy is nicpath's desired state: tenants, VNETs, CA→PA mappings,
// routing domains, ACLs, gateway rules and shadow mappings for migrating
// VMs, the checks that make a state trustworthy, the difference between two
// states, and the reference evaluator that every datapath is tested against.
//
// policy imports nothing else from nicpath.
//
// See FORMAT.md in this directory for the YAML document format.
package policy

// Package migrate is the VM manager's side of nicpath: it publishes
// tenants, VNETs and VMs (and so their CA→PA mappings) to the store every
// host follows, and live-migrates VMs the way shadow policies are meant to
// be used:
//
//  1. write the shadow mapping for the VM's new location (one record, a new
//     generation), before the VM moves;
//  2. wait until every host reports it installed, inactive (store.Status);
//  3. write one activation record: every host switches the VM's generation
//     in one step (the vswitch's ActivateShadow through Update);
//  4. wait until every host reports the activation, then make the new
//     location the VM's own and remove the shadow and the activation in one
//     change: the old host's rules for the VM go away.
//
// The VM itself moves between steps 2 and 3 (Options.BeforeActivate
// is where a hypervisor would pause it on the old host and resume it on the
// new one). A host that misses the activation record (partitioned, or
// restarting) catches up from the store when it comes back: the record, or
// the final state, is there. Migrate waits for such a host at most
// ActivateTimeout and names it in Migration.Lagging rather than block the
// others.
package migrate

// Package driver is the registry of the NIC drivers an agent opens by name:
// the driver a configuration names (driver: softnic) is looked up here and
// its Opener is given the ports to open, numbered the agent's way.
//
// The agent registers the drivers of this module (softnic, xdp, tcflower).
// Another driver plugs in without a change to the agent: its package, or
// the program that links it, calls Register from an init function, and a
// configuration may name it from then on, with the driver_options it
// declares:
//
//	func init() {
//		driver.Register("acme", openAcme, "serial")
//	}
//
// The registry imports hal only, so that a driver package, which may not
// depend on the agent (it imports the vswitch, the policy and the store),
// can register itself; agent.RegisterDriver is the same registry.
package driver

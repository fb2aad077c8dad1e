// Command agent is the integration guide for NIC vendors: how a vendor's
// agent imports nicpath's hal and vswitch with a driver of its own. The
// driver here is acme (package examples/agent/acme), a fictional SmartNIC
// without a NAT stage; the agent puts nicpath's vswitch on it and shows a flow
// the NIC takes and one it cannot, which stays in the host with its reason.
//
//	go run ./examples/agent                      # the story, on host-a of examples/policies/two-tenants.yaml
//	go run ./examples/agent -control /tmp/a.sock # the full example daemon on the acme NIC; then
//	go run ./examples/vswitchctl -s /tmp/a.sock caps
//
// # Integrating your NIC
//
// 1. Implement hal.NIC in your driver package, and nothing more: Capabilities,
// Ports, Validate, Apply, Dump, Activate/ActiveGeneration, ReadExceptions,
// Inject, the counters and Close (acme/acme.go is a complete, short one).
// Your driver imports hal (and hal/wire if it touches packets); it never
// imports vswitch. Add `var _ hal.NIC = (*NIC)(nil)`.
//
// 2. Report only what the device you opened verifiably does. The vswitch
// decides from Capabilities and Validate what to offload: a capability you
// claim but do not have loses packets; one you do not claim only costs a
// host-path flow. Refuse what you cannot do with a *hal.UnsupportedError
// naming the match field or action (it wraps hal.ErrNotSupported): that text
// is what `vswitchctl explain` shows operators. Implement hal.AtomicApplier
// only if a batch really is all or nothing, and hal.SealedAddresses only with
// the crypto on the device.
//
// 3. Hold the driver to the conformance suite before anything else: a test
// that calls conformance.Run with a Target whose Open returns a fresh NIC
// and a Harness to the far side of its ports (acme/acme_test.go). It checks
// every advertised capability with traffic and every missing one for a
// proper refusal; it found two bugs in acme while this guide was written
// (an AtomicBatch claim without AtomicApplier, and the wrong error after
// Close). Operators run the same suite with conformance/cmd/nicconform.
//
// 4. Put the vswitch on it:
//
//	sw, err := vswitch.New(vswitch.Config{
//		NIC:    nic,                  // your hal.NIC
//		Host:   "host-a",             // this host in the policy
//		State:  st,                   // a *policy.State: policy.LoadFile, or built with policy.NewBuilder
//		Ports:  map[string]hal.PortID{"blue-web-1": 1, …}, // the port of every local VM
//		Uplink: uplinkID,
//	})
//	go sw.Run(ctx)                    // the exception path: first packets → unified flows → your Apply
//	…
//	sw.Update(ctx, newState)          // policy changes, applied atomically
//	sw.Flows(); sw.Explain(desc)      // what is where, and why
//
// New reconciles your table with what the switch wants (rules of an earlier
// run, found by their owner cookie, are removed or repaired; other owners'
// rules are left alone), so an agent restart neither loses nor duplicates
// rules.
//
// 5. Or take the whole agent: agent.NewWithNIC (package agent, the library
// examples/vswitchd runs) runs the switch on your NIC with vswitchd's
// control socket (vswitchctl show, flows, explain, stats, activate,
// capture), Prometheus metrics, policy or store following and
// exception-path captures; see serve in main.go. To have configurations
// open your NIC by name instead, register your driver
// (agent.RegisterDriver, or driver.Register from your driver's package) and
// run agent.New, or agent.Main for vswitchd's command line.
package main

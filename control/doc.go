// Package control is the protocol between an agent (vswitchd) and its
// control CLI: JSON over a unix socket, one request and one response per
// line, in the spirit of ovs-appctl's unixctl. The agent serves it (package
// agent); the CLI (examples/vswitchctl), a vendor's tools and tests call it
// with a Client. It imports nothing of nicpath's, so a client carries none
// of the agent's dependencies.
//
// A Request names a command and its arguments; the Response carries either
// an error in words or the command's result as JSON, whose shape is one of
// the types below, by command:
//
//	show        Show
//	caps        Caps
//	flows       []Flow          args: "host" or "nic" to filter
//	explain     Explanation     args: vm src dst [proto sport dport] | rule-id
//	stats       Stats
//	activate    Activated       args: vm
//	capture     CaptureStatus   args: "start" file | "stop"
//	reload      Reloaded        (checks and applies the policy file now)
//	learned     Learned         (addresses the NIC saw the vports use, announcements, spoofed-source drops)
package control

package hal

import "strconv"

// Reason says why a packet left the fast path: why it went to the host on the
// exception path, or why it was dropped.
type Reason uint8

const (
	ReasonNone        Reason = iota
	ReasonMiss               // no live rule matched
	ReasonAction             // a rule's ToHost action asked for the host
	ReasonUnsupported        // the NIC cannot process this kind of packet (unknown encapsulation, IP options, …)
	ReasonMalformed          // truncated or inconsistent headers
	ReasonTTL                // TTL or hop limit ran out
	ReasonFragment           // an IP fragment the NIC cannot key on
	ReasonMTU                // too large after encapsulation for the egress port
	ReasonSealed             // a sealed-address frame the NIC cannot open (no crypto, no key, bad seal)
	ReasonPolicy             // dropped because a rule or the policy says so
	ReasonNoPort             // the rule's output port is gone
	ReasonQueueFull          // the exception queue or a port ring was full
	// ReasonNotLocal: a tunnelled frame on an uplink whose outer destination
	// (MAC, or IP address) is not this NIC's tunnel endpoint; dropped.
	ReasonNotLocal
	NumReasons // number of reasons; for arrays indexed by Reason
)

var reasonNames = [...]string{"none", "miss", "action", "unsupported", "malformed", "ttl", "fragment",
	"mtu", "sealed", "policy", "no_port", "queue_full", "not_local"}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "reason(" + strconv.Itoa(int(r)) + ")"
}

// ParseReason is the inverse of Reason.String.
func ParseReason(s string) (Reason, bool) {
	for i, n := range reasonNames {
		if n == s {
			return Reason(i), true
		}
	}
	return 0, false
}

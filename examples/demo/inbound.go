package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nicpath/nicpath/control"
)

// inboundSize is what the inbound connection of the story sends each way.
const inboundSize = 1 << 20

// inboundStory: a VM on host-a opens a TCP connection to a VM on host-b
// that host-b's stateful inbound ACL lets in (tenant red's ssh-in, port
// 22), and one to a port the ACLs keep out (deny-in, 5432, where red-app-1
// listens too, so that silence is the ACL and not a closed port). host-b
// sees the connection's first packet as a tunnelled miss from its uplink,
// walks the ACLs, and then carries the connection on its NIC both ways:
// the decapsulation toward red-app-1 and the encapsulation of its replies.
// On tc-flower this is the case the driver's tunnelled misses make
// possible (a tunnelled frame no rule takes would otherwise continue into
// the kernel's stack and never reach the vswitch).
func (n *nsStory) inboundStory(ctl func(string, ...string) (string, error), traffic func(string, ...string) (string, error),
	check func(bool, string, error, string, ...any)) {
	s := n.s
	s.title("Inbound TCP through a stateful ACL: red-app-2 (host-a) opens a connection to red-app-1 (host-b, driver %s)", n.drivers.of("host-b"))
	out, err := traffic("red-app-2", "bulk", "-n", "1", "-w", "5s", "-s", fmt.Sprint(inboundSize), "10.0.0.10:22")
	s.say("%s", indent(out, "  "))
	check(strings.Contains(out, "red-app-1 got bulk") && strings.Contains(out, "back intact"), out, err,
		"red-app-2 → 10.0.0.10:22: host-b let the connection in (ACL ssh-in, stateful) and %d KB came back intact both ways", inboundSize>>10)

	// The connection's flows on host-b: inbound, tunnelled from host-a
	// with tenant red's VNI, from the client's port to 22; the replies
	// from 22 back to that port.
	client := ""
	if i := strings.LastIndex(out, ", from "); i >= 0 {
		if _, port, ok := strings.Cut(strings.TrimSuffix(strings.TrimSpace(out[i+len(", from "):]), ")"), ":"); ok {
			client = port
		}
	}
	var in, reply *control.Flow
	for _, f := range n.flowsOf(ctl, "host-b") {
		switch {
		case client == "":
		case strings.Contains(f.Match, "tun=vxlan,vni=2001,") && strings.HasSuffix(f.Match, ",ip_src=10.0.0.11/32,ip_dst=10.0.0.10/32,proto=6,l4_src="+client+",l4_dst=22"):
			in = &f
		case strings.Contains(f.Match, "tun=none,") && strings.HasSuffix(f.Match, ",ip_src=10.0.0.10/32,ip_dst=10.0.0.11/32,proto=6,l4_src=22,l4_dst="+client):
			reply = &f
		}
	}
	for _, f := range []struct {
		name string
		f    *control.Flow
	}{{"in (host-a → red-app-1, decapsulated)", in}, {"reply (red-app-1 → host-a, encapsulated)", reply}} {
		if f.f != nil {
			s.say("  host-b's flow %s:\n    rule=%d, where=%s, packets=%d, bytes=%d, %s actions=%s", f.name, f.f.Rule, f.f.Location, f.f.Packets, f.f.Bytes, f.f.Match, strings.Join(f.f.Actions, ","))
		}
	}
	s.check(in != nil && reply != nil && in.Location == "nic" && reply.Location == "nic",
		"host-b took the connection's first packet (a tunnelled miss) through its ACLs, then put the connection on its NIC both ways (where=nic)")
	s.check(in != nil && reply != nil && in.Bytes >= inboundSize && reply.Bytes >= inboundSize,
		"host-b's NIC counted the exchange on both of the connection's flows (at least %d bytes each way)", inboundSize)
	if in != nil {
		out, _ := ctl("host-b", "explain", fmt.Sprint(in.Rule))
		s.say("$ vswitchctl -s host-b explain %d\n%s", in.Rule, indent(out, "  "))
		check(strings.Contains(out, "ssh-in") && strings.Contains(out, "Handled: NIC"), out, nil,
			"host-b's explain of the inbound flow names the ACL that let it in (ssh-in) and says the NIC handles it")
	}

	out, err = traffic("red-app-2", "tcp", "-n", "1", "-w", "2s", "-m", "inbound to 5432", "10.0.0.10:5432")
	s.say("%s", indent(out, "  "))
	check(err != nil && !strings.Contains(out, "got") && !strings.Contains(n.readFile("red-app-1.recv"), "inbound to 5432"), out, nil,
		"red-app-2 → 10.0.0.10:5432: ACL deny-in drops the handshake on host-b (no answer; red-app-1, which listens there, received nothing)")
	var deny *control.Flow
	for _, f := range n.flowsOf(ctl, "host-b") {
		if strings.Contains(f.Match, "tun=vxlan,vni=2001,") && strings.HasSuffix(f.Match, ",l4_dst=5432") {
			deny = &f
		}
	}
	if deny != nil {
		s.say("  host-b's flow for it: rule=%d, where=%s, packets=%d, %s actions=%s", deny.Rule, deny.Location, deny.Packets, deny.Match, strings.Join(deny.Actions, ","))
	}
	s.check(deny != nil && deny.Location == "nic" && len(deny.Actions) > 0 && strings.HasPrefix(deny.Actions[len(deny.Actions)-1], "drop"),
		"the denied handshake's flow is a drop on host-b's NIC: its retransmissions never reach the host")
}

// flowsOf is host's flows, as vswitchctl -json flows lists them.
func (n *nsStory) flowsOf(ctl func(string, ...string) (string, error), host string) []control.Flow {
	var fs []control.Flow
	raw, err := ctl(host, "-json", "flows")
	if err != nil {
		n.s.say("vswitchctl -json flows on %s: %v", host, err)
		return nil
	}
	if err := json.Unmarshal([]byte(raw), &fs); err != nil {
		n.s.say("vswitchctl -json flows on %s: %v", host, err)
	}
	return fs
}

package vswitch

import (
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
)

// preinstallReverse installs the reply direction of a connection that f's
// stateful allow just opened, so that the reply is offloaded with the
// request instead of taking the slow path. The reply's key is predicted:
// addresses and ports swapped, the in-port where the reply will come from,
// and the MACs the peer will use (the sender's as the receiver saw it; the
// router's when the packet crosses VNETs). A wrong guess costs only one
// slow-path walk: the tracked connection still allows the real reply.
func (s *Switch) preinstallReverse(f *flow, v *verdict) {
	rk, ok := s.reverseKey(&f.key, v)
	if !ok {
		return
	}
	if s.flows.get(&rk) != nil {
		return
	}
	s.newFlow(&rk, 64, f.created, false)
}

func (s *Switch) reverseKey(k *hal.FlowKey, v *verdict) (hal.FlowKey, bool) {
	c := s.cur
	r := hal.FlowKey{EthType: k.EthType, Proto: k.Proto}
	r.IPSrc, r.IPDst = k.IPDst, k.IPSrc
	if v.rw.Src.IsValid() {
		r.IPDst = v.rw.Src.As16()
	}
	if hasPorts(k.Proto) {
		r.L4Src, r.L4Dst = k.L4Dst, k.L4Src
	} else {
		r.L4Src, r.L4Dst = k.L4Src, k.L4Dst
		if k.Proto == policy.ProtoICMP || k.Proto == policy.ProtoICMPv6 {
			return r, false // echo replies differ in type; let them walk
		}
	}
	deliveredSrc := k.EthSrc
	if !v.rw.SrcMAC.IsZero() {
		deliveredSrc = hal.MAC(v.rw.SrcMAC)
	}
	switch {
	case v.action == policy.Deliver:
		// The local receiver answers from its own MAC to the MAC it saw.
		r.InPort = v.port
		r.EthSrc = hal.MAC(v.rw.DstMAC)
		r.EthDst = deliveredSrc
	case v.action == policy.Encap && !v.decap:
		src := c.byPort[k.InPort]
		if src == nil {
			return r, false
		}
		// The reply comes back encapsulated from the peer's host with the
		// sender's VNI, in the sender's VNET's encapsulation; that host
		// rewrites the destination MAC to the sender's and, across VNETs,
		// the source to the router's.
		r.InPort = s.cfg.Uplink
		r.TunKind, r.VNI = src.vnet.encap, src.vnet.vni
		r.TunSrc, r.TunDst = v.pa.As16(), c.pa.As16()
		r.EthSrc = hal.MAC(v.rw.DstMAC)
		if v.routed {
			r.EthSrc = c.routerMAC
		}
		r.EthDst = k.EthSrc
	default:
		return r, false
	}
	return r, true
}

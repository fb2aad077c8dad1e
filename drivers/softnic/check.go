package softnic

import "github.com/nicpath/nicpath/hal"

// quickValid is a fast, allocation-free pre-check for hal.CheckRule: when it
// returns true, hal.CheckRule(caps, r) would return nil. It exists because
// hal.CheckRule formats a field name for every action even when the rule is
// fine, which alone would hold rule programming far below 10M ops/s. When it
// returns false (it may be stricter than hal), validate asks hal.CheckRule,
// which stays the authority on what is refused and with which error.
// TestQuickValidAgreesWithHal holds the two together. fc, when not nil,
// remembers the last mask whose fields passed, for the next rule.
func quickValid(caps *hal.Capabilities, r *hal.Rule, fc *fieldsChecked) bool {
	if r.ID == 0 || len(r.Actions) == 0 {
		return false
	}
	m := &r.Match
	k, mk := &m.Key, &m.Mask
	isIP := k.EthType == hal.EtherTypeIPv4 || k.EthType == hal.EtherTypeIPv6
	ipExact := mk.EthType == 0xffff && isIP
	if (mk.IPSrc != [16]byte{} || mk.IPDst != [16]byte{} || mk.Proto != 0) && !ipExact {
		return false
	}
	if (mk.L4Src != 0 || mk.L4Dst != 0) && mk.Proto != 0xff {
		return false
	}
	tunnelled := mk.TunKind == 0xff && k.TunKind != hal.EncapNone
	if (mk.VNI != 0 || mk.TunSrc != [16]byte{} || mk.TunDst != [16]byte{}) && !tunnelled {
		return false
	}
	if k.VNI > 0xffffff {
		return false
	}
	if v6 := k.EthType == hal.EtherTypeIPv6; fc == nil || !fc.ok || fc.v6 != v6 || fc.mask != *mk {
		if m.Fields()&^caps.MatchFields != 0 || m.PartialFields()&^caps.MaskedFields != 0 {
			return false
		}
		if fc != nil {
			*fc = fieldsChecked{mask: *mk, v6: v6, ok: true}
		}
	}
	if (r.Scope != 0 || r.Generation != 0) && !caps.Generations {
		return false
	}
	const (
		stageDecap = iota
		stageRewrite
		stageEncap
		stageEnd
	)
	stage := stageDecap
	for i := range r.Actions {
		a := &r.Actions[i]
		if stage == stageEnd || !caps.Actions.Has(a.Kind) {
			return false
		}
		switch a.Kind {
		case hal.ActionDecap:
			if i != 0 || !tunnelled || !caps.Decaps.Has(k.TunKind) {
				return false
			}
			stage = stageRewrite
		case hal.ActionSetEthSrc, hal.ActionSetEthDst, hal.ActionPopVLAN:
			if stage > stageRewrite {
				return false
			}
			stage = stageRewrite
		case hal.ActionPushVLAN:
			if stage > stageRewrite || a.VLAN > 0x0fff {
				return false
			}
			stage = stageRewrite
		case hal.ActionDecTTL:
			if stage > stageRewrite || !ipExact {
				return false
			}
			stage = stageRewrite
		case hal.ActionSetIPSrc, hal.ActionSetIPDst:
			if stage > stageRewrite || !ipExact || !a.Addr.IsValid() || a.Addr.Zone() != "" ||
				a.Addr.Is4() != (k.EthType == hal.EtherTypeIPv4) {
				return false
			}
			stage = stageRewrite
		case hal.ActionSetL4Src, hal.ActionSetL4Dst:
			if stage > stageRewrite || mk.Proto != 0xff || (k.Proto != hal.ProtoTCP && k.Proto != hal.ProtoUDP) {
				return false
			}
			stage = stageRewrite
		case hal.ActionEncap:
			e := &a.Encap
			if stage >= stageEncap || !caps.Encaps.Has(e.Kind) {
				return false
			}
			switch e.Kind {
			case hal.EncapVXLAN, hal.EncapGeneve, hal.EncapNVGRE:
			default:
				return false
			}
			if e.VNI > 0xffffff || !e.Src.IsValid() || !e.Dst.IsValid() || e.Src.Is4() != e.Dst.Is4() ||
				e.Src.Zone() != "" || e.Dst.Zone() != "" || e.Src.Is4In6() || e.Dst.Is4In6() {
				return false
			}
			if len(e.GeneveOptions) > 0 && (e.Kind != hal.EncapGeneve || len(e.GeneveOptions)%4 != 0 || len(e.GeneveOptions) > 252) {
				return false
			}
			if e.FlowID != 0 && e.Kind != hal.EncapNVGRE {
				return false
			}
			stage = stageEncap
		case hal.ActionCount:
		case hal.ActionOutput:
			if a.OutPort == 0 {
				return false
			}
			stage = stageEnd
		case hal.ActionDrop, hal.ActionToHost:
			if a.Reason >= hal.NumReasons {
				return false
			}
			stage = stageEnd
		default:
			return false
		}
	}
	return stage == stageEnd
}

// fieldsChecked remembers a mask whose fields quickValid found within one
// set of capabilities, with the one thing of the key that check reads
// (whether it is IPv6). The rules of a batch mostly share a mask, and
// comparing it costs less than hal's Fields and PartialFields.
type fieldsChecked struct {
	mask hal.FlowKey
	v6   bool
	ok   bool // mask and v6 passed
}

package tcflower

// Kernel uapi values (linux/rtnetlink.h, pkt_cls.h, pkt_sched.h, tc_act/*.h),
// spelled out here so that the encoder builds and its tests run on any OS.
const (
	rtmNewQdisc  = 0x24
	rtmDelQdisc  = 0x25
	rtmNewFilter = 0x2c
	rtmDelFilter = 0x2d
	rtmGetFilter = 0x2e
	rtmGetLink   = 0x12
	rtmNewLink   = 0x10
	rtmDelLink   = 0x11

	tcaKind         = 1
	tcaOptions      = 2
	tcaChain        = 11
	tcaIngressBlock = 13

	tcmIfindexMagicBlock = 0xffffffff
	tcHClsact            = 0xfffffff1
	tcHIngressHandle     = 0xffff0000
	ethPAll              = 0x0003

	// flower attributes
	flowerIndev        = 2
	flowerAct          = 3
	flowerEthDst       = 4
	flowerEthDstMask   = 5
	flowerEthSrc       = 6
	flowerEthSrcMask   = 7
	flowerEthType      = 8
	flowerIPProto      = 9
	flowerIPv4Src      = 10
	flowerIPv4SrcMask  = 11
	flowerIPv4Dst      = 12
	flowerIPv4DstMask  = 13
	flowerIPv6Src      = 14
	flowerIPv6SrcMask  = 15
	flowerIPv6Dst      = 16
	flowerIPv6DstMask  = 17
	flowerTCPSrc       = 18
	flowerTCPDst       = 19
	flowerUDPSrc       = 20
	flowerUDPDst       = 21
	flowerFlags        = 22
	flowerVLANID       = 23
	flowerVLANEthType  = 25
	flowerEncKeyID     = 26
	flowerEncIPv4Src   = 27
	flowerEncIPv4SrcM  = 28
	flowerEncIPv4Dst   = 29
	flowerEncIPv4DstM  = 30
	flowerEncIPv6Src   = 31
	flowerEncIPv6SrcM  = 32
	flowerEncIPv6Dst   = 33
	flowerEncIPv6DstM  = 34
	flowerTCPSrcMask   = 35
	flowerTCPDstMask   = 36
	flowerUDPSrcMask   = 37
	flowerUDPDstMask   = 38
	flowerICMPv4Code   = 49
	flowerICMPv4CodeM  = 50
	flowerICMPv4Type   = 51
	flowerICMPv4TypeM  = 52
	flowerICMPv6Code   = 53
	flowerICMPv6CodeM  = 54
	flowerICMPv6Type   = 55
	flowerICMPv6TypeM  = 56
	flowerKeyFlags     = 47
	flowerIPTTL        = 75
	flowerIPTTLMask    = 76
	flowerKeyFlagsMask = 48
	flowerInHWCount    = 86

	// TCA_FLOWER_KEY_FLAGS bits (big endian on the wire)
	flowerFlagIsFragment  = 1
	flowerFlagFragIsFirst = 2
	clsFlagsSkipHW        = 1
	clsFlagsSkipSW        = 2
	clsFlagsInHW          = 4
	clsFlagsNotInHW       = 8
	clsFlagsVerboseLog    = 16

	// actions
	actKind    = 1
	actOptions = 2
	actIndex   = 3
	actStats   = 4
	actCookie  = 6

	tcActUnspec    = -1
	tcActOK        = 0
	tcActShot      = 2
	tcActPipe      = 3
	tcActStolen    = 4
	tcActGotoChain = 2 << 28

	gactParms = 2

	mirredParms      = 2
	tcaEgressRedir   = 1
	tcaIngressRedir  = 3
	pedItParmsEx     = 4
	pedItKeysEx      = 5
	pedItKeyEx       = 6
	pedItKeyExHType  = 1
	pedItKeyExCmd    = 2
	pedItHTypeEth    = 1
	pedItHTypeIP4    = 2
	pedItHTypeIP6    = 3
	pedItCmdSet      = 0
	pedItCmdAdd      = 1
	csumParms        = 1
	csumFlagIPv4Hdr  = 1
	csumFlagICMP     = 2
	csumFlagTCP      = 8
	csumFlagUDP      = 16
	tunKeyParms      = 2
	tunKeyIPv4Src    = 3
	tunKeyIPv4Dst    = 4
	tunKeyIPv6Src    = 5
	tunKeyIPv6Dst    = 6
	tunKeyKeyID      = 7
	tunKeyDstPort    = 9
	tunKeyNoCsum     = 10
	tunKeyEncOpts    = 11
	tunKeyTTL        = 13
	tunKeyActSet     = 1
	tunKeyActRelease = 2
	tunKeyOptsGeneve = 1
	natParms         = 1 // TCA_NAT_PARMS
	natFlagEgress    = 1 // TCA_NAT_FLAG_EGRESS: rewrite the source
	vlanParms        = 2
	vlanPushID       = 3
	vlanPushProto    = 4
	vlanPushPrio     = 6
	vlanActPop       = 1
	vlanActPush      = 2

	statsBasic   = 1
	statsBasicHW = 7

	iflaAddress  = 1
	iflaIfname   = 3
	iflaMTU      = 4
	iflaStats64  = 23
	iflaLinkinfo = 18

	iflaInfoKind   = 1 // IFLA_INFO_*
	iflaInfoData   = 2
	vethInfoPeer   = 1
	iflaVXLANPort  = 15
	iflaGenevePort = 5
	iffUp          = 1

	// Geneve option attributes (TCA_TUNNEL_KEY_ENC_OPT_GENEVE_*).
	geneveOptClass = 1
	geneveOptType  = 2
	geneveOptData  = 3
)

package vswitch

import (
	"errors"
	"fmt"
	"hash/maphash"
	"sort"
	"strings"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
)

// MTU handling: a packet too big for its egress port once the flow's
// encapsulation is added is never dropped silently.
//
// Frames reach this file two ways: the NIC hands a packet of an offloaded
// flow to the host with hal.ReasonMTU (the frame as it arrived), which the
// batch loop treats like any other packet of the flow; or a packet the host
// executes itself (a first packet, a flow kept in the host) turns out too
// big. Either way execute calls overMTU after the flow's rewrites and
// before its encapsulation, and a packet that does not fit is
//
//   - split into fragments, when it is IPv4 without DF (RFC 791 §3.2), each
//     sent through the flow's actions (encapsulated) on the host path;
//   - otherwise answered: an ICMP "fragmentation needed" (IPv4 with DF, RFC
//     1191) or ICMPv6 "packet too big" (RFC 4443) announcing the egress MTU
//     minus the encapsulation's overhead goes back to the sender, rate
//     limited per sender; the packet is dropped and counted;
//   - or, when the RFCs forbid an answer (it is an ICMP error itself, its
//     source is not unicast, …), dropped and counted with that reason.
//
// Stats.MTU and Stats.Drops["mtu"] count all of it; ExplainFrame says which
// of the three a frame gets.

// Rate limits of the ICMP answers.
//
// Linux exempts fragmentation-needed and packet-too-big from its ICMP rate
// limits (icmpv4_mask_allow, icmpv6_xrlim_allow: limiting them breaks path
// MTU discovery). Here the answers are built in the host for every
// oversized packet of a flow the NIC runs, which a VM can send at line
// rate, so they are limited, generously: a sender needs one answer per
// destination (its stack caches the path MTU per destination) and retries
// what was not answered. The global bucket is Linux's icmp_msgs_per_sec and
// icmp_msgs_burst.
const (
	icmpSenderRate  = 20   // answers per second to one sender
	icmpSenderBurst = 20   // answers one sender may get at once
	icmpGlobalRate  = 1000 // answers per second from the switch
	icmpGlobalBurst = 50
	// icmpSenders is how many senders' buckets are kept (4-way set
	// associative, least recently used replaced): 1024 × 40 bytes. A sender
	// whose bucket was replaced starts full again; the global bucket still
	// bounds the total.
	icmpSenders = 1024
	icmpWays    = 4
)

// mtuRefresh is how old the ports' MTUs may be when a packet looks too big
// (or the NIC says it is): they are read again before the packet is
// answered with them.
const mtuRefresh = time.Second

// mtuState is the switch's MTU handling; it lives in Switch.mtu and is
// guarded by the switch's lock.
type mtuState struct {
	mtus   []int // L3 MTU by port ID; 0 unknown
	readAt int64 // when mtus was read; 0 never
	lim    icmpLimiter
	ipID   uint16   // identification of the IPv4 answers
	answer []byte   // scratch for the answer being built
	frags  [][]byte // scratch for the fragments of one packet
	c      mtuCounters
}

// noAnswer is why an oversized packet was dropped without an answer.
type noAnswer uint8

const (
	noAnswerICMPError    noAnswer = iota // an ICMP error: never answered with one (RFC 1122 §3.2.2)
	noAnswerNotUnicast                   // source not unicast, or an IPv4 broadcast/multicast destination
	noAnswerNoSource                     // no unicast address to answer from (IPv6 multicast destination)
	noAnswerNotIP                        // not IP: nothing to answer with
	noAnswerBelowMinimum                 // the egress leaves less than the IP minimum MTU (68, 1280)
	noAnswerNoRoute                      // a remote sender the policy gives no way back to
	noAnswerMalformed                    // headers the answer or the fragmenter could not use
	numNoAnswer
)

var noAnswerNames = [...]string{"icmp_error", "not_unicast", "no_source", "not_ip", "below_minimum_mtu", "no_route_back", "malformed"}

func (r noAnswer) String() string { return noAnswerNames[r] }

// detail says the reason in words, for Explain.
func (r noAnswer) detail() string {
	switch r {
	case noAnswerICMPError:
		return "it is an ICMP error itself, which is never answered with one (RFC 1122 3.2.2)"
	case noAnswerNotUnicast:
		return "its source is not unicast, or it went to a broadcast or multicast address (RFC 1122 3.2.2)"
	case noAnswerNoSource:
		return "its destination is multicast and gives the answer no source address"
	case noAnswerNotIP:
		return "it is not IP: there is no ICMP to answer with"
	case noAnswerBelowMinimum:
		return "the egress cannot carry the IP minimum MTU (68 bytes IPv4, 1280 IPv6) after encapsulation"
	case noAnswerNoRoute:
		return "the policy gives the answer no way back to the sender"
	}
	return "its headers are inconsistent"
}

type mtuCounters struct {
	tooBig       uint64 // packets over their egress MTU
	fragNeeded   uint64 // ICMP fragmentation-needed sent
	packetTooBig uint64 // ICMPv6 packet-too-big sent
	suppressed   uint64 // answers the rate limit held back
	fragmented   uint64 // packets split
	fragments    uint64 // fragments sent
	unanswered   [numNoAnswer]uint64
}

// MTUStats count the packets too big for their egress port after the
// flow's encapsulation and what became of them. Every one of them is either
// fragmented or counted in Stats.Drops["mtu"]: FragNeeded + PacketTooBig +
// Suppressed + the sum of Unanswered.
type MTUStats struct {
	TooBig       uint64 // packets over their egress MTU
	FragNeeded   uint64 // answered with ICMP fragmentation needed (IPv4 with DF)
	PacketTooBig uint64 // answered with ICMPv6 packet too big
	Suppressed   uint64 // not answered: the sender's or the switch's rate limit
	Fragmented   uint64 // IPv4 packets without DF split on the host path
	Fragments    uint64 // fragments they made
	// Unanswered counts the packets dropped without an answer, by reason.
	Unanswered map[string]uint64
}

func (m *mtuState) stats() MTUStats {
	c := &m.c
	st := MTUStats{TooBig: c.tooBig, FragNeeded: c.fragNeeded, PacketTooBig: c.packetTooBig, Suppressed: c.suppressed,
		Fragmented: c.fragmented, Fragments: c.fragments, Unanswered: map[string]uint64{}}
	for i, v := range c.unanswered {
		if v != 0 {
			st.Unanswered[noAnswer(i).String()] = v
		}
	}
	return st
}

// String prints the counters on one line; empty when nothing was too big.
func (m MTUStats) String() string {
	if m.TooBig == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "mtu: too big %d, icmp frag-needed %d, icmpv6 too-big %d, suppressed %d, fragmented %d (%d fragments)",
		m.TooBig, m.FragNeeded, m.PacketTooBig, m.Suppressed, m.Fragmented, m.Fragments)
	keys := make([]string, 0, len(m.Unanswered))
	for k := range m.Unanswered {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, ", unanswered %s %d", k, m.Unanswered[k])
	}
	return b.String()
}

// readMTUs reads the ports' MTUs from the NIC.
func (s *Switch) readMTUs(now int64) {
	m := &s.mtu
	m.mtus = m.mtus[:0]
	for _, p := range s.nic.Ports() {
		for int(p.ID) >= len(m.mtus) {
			m.mtus = append(m.mtus, 0)
		}
		m.mtus[p.ID] = p.MTU
	}
	m.readAt = now
}

// portMTU is port p's MTU as last read; 0 when unknown.
func (s *Switch) portMTU(p hal.PortID, now int64) int {
	m := &s.mtu
	if m.readAt == 0 {
		s.readMTUs(now)
	}
	if int(p) < len(m.mtus) {
		return m.mtus[p]
	}
	return 0
}

// nicSaysTooBig is the batch loop's hook for hal.ReasonMTU: the NIC found
// a packet of one of its rules too big. The packet then takes the host
// path like any other (execute answers or fragments it); the ports' MTUs
// are read again if they are old, in case one changed.
func (s *Switch) nicSaysTooBig(now int64) {
	if m := &s.mtu; m.readAt != 0 && now-m.readAt > int64(mtuRefresh) {
		s.readMTUs(now)
	}
}

// egress is where a flow with actions a sends its packets, and the
// overhead its encapsulation adds to an IP packet behind l2 bytes of
// Ethernet header and tags: the outer IP, UDP (or GRE) and tunnel headers,
// and the inner Ethernet header, which the tunnel carries.
func (s *Switch) egress(a *actSet, l2 int) (port hal.PortID, overhead int) {
	k := &a.key
	switch k.action {
	case policy.Deliver:
		return k.port, 0
	case policy.Encap, policy.ToGateway:
		if a.tmpl == nil {
			return 0, 0
		}
		return s.cfg.Uplink, a.tmpl.Len() - wire.EthHeaderLen + l2
	}
	return 0, 0
}

// l2Len is the length of a parsed frame's Ethernet header and tags, and
// ipLen that of its IP packet (for a frame that is not IP, what follows
// the header and tags).
func l2Len(l *wire.Layout) int {
	if l.L3 >= 0 {
		return l.L3 - l.L2
	}
	return wire.EthHeaderLen + wire.VLANTagLen*l.VLANs
}

// overMTU is execute's check, after the flow's rewrites and before its
// encapsulation: it reports whether the packet buf[start:end] (laid out as
// l; orig is the same frame as it arrived, before the rewrites) is too big
// for its egress, and if so has handled it: fragmented and sent, or
// answered, or dropped with its reason.
func (s *Switch) overMTU(inPort hal.PortID, orig, buf []byte, start, end int, l *wire.Layout, f *flow, a *actSet, now int64) bool {
	l2 := l2Len(l)
	port, overhead := s.egress(a, l2)
	mtu := s.portMTU(port, now)
	size := end - start - l2
	if mtu <= 0 || size <= mtu-overhead {
		return false
	}
	if now-s.mtu.readAt > int64(mtuRefresh) {
		// The MTUs may be old: read them again before acting on them.
		s.readMTUs(now)
		if mtu = s.portMTU(port, now); mtu <= 0 || size <= mtu-overhead {
			return false
		}
	}
	limit := mtu - overhead
	m := &s.mtu
	m.c.tooBig++
	fr := buf[start:end]
	if l.EthType == hal.EtherTypeIPv4 && l.L3 >= 0 && fr[l.L3+6]&0x40 == 0 {
		s.fragmentOut(fr, l, limit, port, f, a)
		return true
	}
	s.drop(DropMTU)
	if l.L3 < 0 || l.EthType != hal.EtherTypeIPv4 && l.EthType != hal.EtherTypeIPv6 {
		m.c.unanswered[noAnswerNotIP]++
		return true
	}
	v6 := l.EthType == hal.EtherTypeIPv6
	announce := limit
	if v6 {
		// Announce no less than the IPv6 minimum (RFC 8201 §4: a smaller
		// value is raised to 1280 by the sender anyway). A packet that is
		// no bigger cannot be helped by an answer.
		announce = max(limit, wire.MinIPv6MTU)
		if size <= wire.MinIPv6MTU {
			m.c.unanswered[noAnswerBelowMinimum]++
			return true
		}
	} else if limit < wire.MinIPv4MTU {
		m.c.unanswered[noAnswerBelowMinimum]++
		return true
	}
	s.answerTooBig(inPort, orig, fr, l, f, a, announce, now)
	return true
}

// fragmentOut splits the IPv4 packet fr (rewritten, not yet encapsulated)
// into fragments of at most limit bytes and sends each through the rest of
// the flow's actions: encapsulated toward the uplink, or out of the vport.
func (s *Switch) fragmentOut(fr []byte, l *wire.Layout, limit int, port hal.PortID, f *flow, a *actSet) {
	m := &s.mtu
	if limit < wire.MinIPv4MTU {
		s.drop(DropMTU)
		m.c.unanswered[noAnswerBelowMinimum]++
		return
	}
	hr := 0
	if a.tmpl != nil && a.key.action != policy.Deliver {
		hr = a.tmpl.Len()
	}
	m.frags = m.frags[:0]
	n, err := wire.FragmentIPv4(fr, l, limit, func(n int) []byte {
		b := s.alloc(hr + n)
		m.frags = append(m.frags, b)
		return b[hr:]
	})
	if err != nil {
		s.drop(DropMTU)
		if errors.Is(err, wire.ErrFragmentMTU) {
			m.c.unanswered[noAnswerBelowMinimum]++
		} else {
			m.c.unanswered[noAnswerMalformed]++
		}
		return
	}
	m.c.fragmented++
	m.c.fragments += uint64(n)
	hash := wire.FlowHash(&f.key)
	for _, b := range m.frags {
		if hr == 0 {
			s.queueInject(port, b)
			continue
		}
		ns, err := a.tmpl.Push(b, hr, len(b), hash)
		if err != nil {
			s.drop(DropNoEncap)
			continue
		}
		s.queueInject(port, b[ns:])
	}
	clear(m.frags)
}

// answerTooBig answers an oversized packet with an ICMP error announcing
// mtu, within the rate limits.
//
// The answer's source address: the policy gives a subnet no gateway
// address (its routing domain has a router MAC, not an address), so the
// answer comes from the packet's original destination, the address the
// sender was talking to. The sender's stack matches an ICMP error to its
// socket by the packet quoted in it, not by the error's source (Linux takes
// fragmentation-needed and packet-too-big from any source), so this is
// always accepted, and it needs no address the VM does not already know.
//
// A local sender (inPort a vport) gets the answer on its vport, built from
// the packet as it sent it. A remote sender (the packet came decapsulated
// from the uplink toward a local VM whose vport is smaller) gets it the way
// the local VM would answer: addressed from the packet as the VM sees it
// (after the flow's rewrites, from the VM's MAC and address), quoting the
// packet as it arrived, and sent through the policy as a packet from the
// VM's vport (so it is routed and encapsulated back like the VM's own
// traffic, and the VM's ACLs apply to it).
func (s *Switch) answerTooBig(inPort hal.PortID, orig, fr []byte, l *wire.Layout, f *flow, a *actSet, mtu int, now int64) {
	m := &s.mtu
	remote := inPort == s.cfg.Uplink
	if remote && a.key.action != policy.Deliver {
		m.c.unanswered[noAnswerNoRoute]++
		return
	}
	m.ipID++
	tb := wire.TooBig{MTU: mtu, Quoted: orig, ID: m.ipID}
	from := orig
	if remote {
		from = fr
	} else {
		tb.MaxLen = s.portMTU(inPort, now)
	}
	ans, err := wire.AppendTooBig(m.answer[:0], from, l, &tb)
	if cap(ans) > cap(m.answer) {
		m.answer = ans[:0]
	}
	if err != nil {
		m.c.unanswered[noAnswerOf(err)]++
		return
	}
	if !m.lim.allow(limiterKey(&f.key), now) {
		m.c.suppressed++
		return
	}
	if l.EthType == hal.EtherTypeIPv4 {
		m.c.fragNeeded++
	} else {
		m.c.packetTooBig++
	}
	if !remote {
		b := s.alloc(len(ans))
		copy(b, ans)
		s.queueInject(inPort, b)
		return
	}
	s.answerFromVM(a.key.port, ans, now)
}

// answerFromVM sends ans as a packet from the local VM on vport port: the
// policy's walk for it decides where it goes, and execute runs the
// verdict's actions on it without a cached flow (an answer is not a flow of
// its own, nor does it open connections).
func (s *Switch) answerFromVM(port hal.PortID, ans []byte, now int64) {
	var k hal.FlowKey
	var l wire.Layout
	if err := wire.Parse(ans, port, &k, &l); err != nil {
		s.mtu.c.unanswered[noAnswerMalformed]++
		return
	}
	var v verdict
	s.cur.classify(&k, s.cfg.Uplink, wire.DefaultTTL, s.ct, nil, &v)
	switch v.action {
	case policy.Deliver, policy.Encap, policy.ToGateway:
	default:
		s.mtu.c.unanswered[noAnswerNoRoute]++
		return
	}
	a := s.intern(actKeyOf(&v))
	hot := flowHot{lastUsed: now}
	f := flow{h: &hot, key: k, acts: a, created: now}
	// execute's own MTU check sees an ICMP error: if it does not fit, it is
	// fragmented (an IPv4 answer has no DF) or dropped (an ICMPv6 error is
	// never answered), so this does not recurse.
	s.execute(port, ans, &l, &f, now)
	s.release(a)
}

func noAnswerOf(err error) noAnswer {
	switch {
	case errors.Is(err, wire.ErrICMPError):
		return noAnswerICMPError
	case errors.Is(err, wire.ErrNotUnicast):
		return noAnswerNotUnicast
	case errors.Is(err, wire.ErrNoICMPSource):
		return noAnswerNoSource
	case errors.Is(err, wire.ErrNoHeader):
		return noAnswerNotIP
	case errors.Is(err, wire.ErrAnswerTooSmall):
		return noAnswerBelowMinimum
	}
	return noAnswerMalformed
}

// senderKey names a sender for the rate limit: its port, the VNI it came
// with (a remote sender) and its address.
type senderKey struct {
	port hal.PortID
	vni  uint32
	ip   [16]byte
}

func limiterKey(k *hal.FlowKey) senderKey {
	return senderKey{port: k.InPort, vni: k.VNI, ip: k.IPSrc}
}

// tokenBucket holds credit in nanoseconds, as Linux's inet_peer_xrlim_allow
// does: time adds to it up to burst intervals, an answer takes one interval.
type tokenBucket struct {
	last   int64
	credit int64
}

func (b *tokenBucket) refill(now, interval, burst int64) int64 {
	c := b.credit + max(now-b.last, 0)
	b.last = max(now, b.last)
	b.credit = min(c, burst*interval)
	return b.credit
}

type senderBucket struct {
	key  senderKey
	used bool
	tokenBucket
}

// icmpLimiter is a token bucket per sender, in a table of fixed size, and
// one for the whole switch.
type icmpLimiter struct {
	seed   maphash.Seed
	sets   [][icmpWays]senderBucket // nil until the first answer
	global tokenBucket
	ready  bool
}

const (
	senderInterval = int64(time.Second) / icmpSenderRate
	globalInterval = int64(time.Second) / icmpGlobalRate
)

// allow reports whether an answer to sender k may go out now, and takes a
// token from its bucket and from the global one if so.
func (lim *icmpLimiter) allow(k senderKey, now int64) bool {
	if !lim.ready {
		lim.ready = true
		lim.seed = maphash.MakeSeed()
		lim.sets = make([][icmpWays]senderBucket, icmpSenders/icmpWays)
		lim.global = tokenBucket{last: now, credit: icmpGlobalBurst * globalInterval}
	}
	set := &lim.sets[maphash.Comparable(lim.seed, k)%uint64(len(lim.sets))]
	var b *senderBucket
	for i := range set {
		if set[i].used && set[i].key == k {
			b = &set[i]
			break
		}
	}
	if b == nil {
		// A new sender: a free way, else the least recently answered one.
		b = &set[0]
		for i := range set {
			if !set[i].used {
				b = &set[i]
				break
			}
			if set[i].last < b.last {
				b = &set[i]
			}
		}
		*b = senderBucket{key: k, used: true, tokenBucket: tokenBucket{last: now, credit: icmpSenderBurst * senderInterval}}
	}
	if b.refill(now, senderInterval, icmpSenderBurst) < senderInterval ||
		lim.global.refill(now, globalInterval, icmpGlobalBurst) < globalInterval {
		return false
	}
	b.credit -= senderInterval
	lim.global.credit -= globalInterval
	return true
}

// explainMTU adds to e what the switch does with frame (parsed into l) if
// it is too big for its egress after the flow's encapsulation.
func (s *Switch) explainMTU(e *Explanation, k *hal.FlowKey, frame []byte, l *wire.Layout) {
	if l.End > len(frame) {
		return
	}
	var a *actSet
	if f := s.flows.get(k); f != nil {
		a = f.current()
	} else {
		var v verdict
		s.cur.classify(k, s.cfg.Uplink, wire.DefaultTTL, s.ct, nil, &v)
		a = s.buildActions(actKeyOf(&v))
	}
	l2 := l2Len(l)
	port, overhead := s.egress(a, l2)
	mtu := s.portMTU(port, s.now())
	size := l.End - l.L2 - l2
	if mtu <= 0 || size <= mtu-overhead {
		return
	}
	limit := mtu - overhead
	what := fmt.Sprintf("%d-byte packet over %d (port %d's MTU %d minus %d bytes of encapsulation)", size, limit, port, mtu, overhead)
	if overhead == 0 {
		what = fmt.Sprintf("%d-byte packet over port %d's MTU %d", size, port, mtu)
	}
	var do string
	v4 := l.EthType == hal.EtherTypeIPv4 && l.L3 >= 0
	switch {
	case v4 && frame[l.L3+6]&0x40 == 0 && limit >= wire.MinIPv4MTU:
		do = fmt.Sprintf("split into fragments of at most %d bytes on the host path, each encapsulated as the flow says (RFC 791)", limit)
	case l.L3 < 0 || !v4 && l.EthType != hal.EtherTypeIPv6:
		do = "dropped without an answer: " + noAnswerNotIP.detail()
	case v4 && limit < wire.MinIPv4MTU, !v4 && size <= wire.MinIPv6MTU:
		do = "dropped without an answer: " + noAnswerBelowMinimum.detail()
	default:
		mtuAnnounced, kind := limit, "ICMP fragmentation needed"
		if !v4 {
			mtuAnnounced, kind = max(limit, wire.MinIPv6MTU), "ICMPv6 packet too big"
		}
		tb := wire.TooBig{MTU: mtuAnnounced}
		if _, err := wire.AppendTooBig(nil, frame, l, &tb); err != nil {
			do = "dropped without an answer: " + noAnswerOf(err).detail()
		} else {
			do = fmt.Sprintf("dropped and answered with %s, MTU %d, from the packet's destination %s (rate-limited per sender)",
				kind, mtuAnnounced, k.Dst())
		}
	}
	step := "MTU: " + what + ": " + do
	e.Trace = append(e.Trace, step)
	if e.Detail != "" {
		e.Detail += "; "
	}
	e.Detail += "this frame: " + do
}

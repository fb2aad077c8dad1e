package vswitch

import (
	"context"
	"fmt"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
)

// execute runs a flow's current actions on one packet in the host and
// queues the result for injection. The frame is copied into the batch
// arena with headroom so that encapsulation is written in place.
func (s *Switch) execute(inPort hal.PortID, frame []byte, l *wire.Layout, f *flow, now int64) {
	f.pkts++
	f.bts += uint64(len(frame))
	f.h.lastUsed = now
	touchConns(f, now)
	a := f.current()
	k := &a.key
	switch k.action {
	case policy.Drop:
		s.stats.policyDrops[k.reason]++
		s.countSpoofed(f, 1)
		return
	case policy.ToHost:
		s.stats.toHost[k.reason]++
		if s.cfg.HostHandler != nil {
			s.cfg.HostHandler(inPort, k.reason, frame)
		}
		return
	}
	buf := s.alloc(headroom + len(frame))
	copy(buf[headroom:], frame)
	start, end := headroom, headroom+len(frame)
	lay := &s.lay
	*lay = *l
	if lay.End > 0 && lay.End < len(frame) {
		end = headroom + lay.End // drop Ethernet padding
	}
	if k.decap {
		in, err := wire.Decap(buf[start:end], lay)
		if err != nil {
			s.drop(DropMalformed)
			return
		}
		start += in
		end = headroom + lay.End
		if err := wire.Parse(buf[start:end], 0, &s.ikey, lay); err != nil {
			s.drop(DropMalformed)
			return
		}
	}
	fr := buf[start:end]
	rw := &k.rw
	if !rw.SrcMAC.IsZero() {
		wire.SetEthSrc(fr, lay, hal.MAC(rw.SrcMAC))
	}
	if rw.Src.IsValid() {
		if err := wire.SetIPSrc(fr, lay, rw.Src.As16()); err != nil {
			s.drop(DropMalformed)
			return
		}
	}
	if rw.Dst.IsValid() {
		if err := wire.SetIPDst(fr, lay, rw.Dst.As16()); err != nil {
			s.drop(DropMalformed)
			return
		}
	}
	if rw.DecTTL {
		expired, err := wire.DecTTL(fr, lay)
		if err != nil {
			s.drop(DropMalformed)
			return
		}
		if expired {
			s.drop(DropTTL)
			return
		}
	}
	if !rw.DstMAC.IsZero() {
		wire.SetEthDst(fr, lay, hal.MAC(rw.DstMAC))
	}
	if s.overMTU(inPort, frame[start-headroom:end-headroom], buf, start, end, lay, f, a, now) {
		return // too big for the egress: fragmented, answered or counted (mtu.go)
	}
	port := k.port
	if k.action == policy.Encap || k.action == policy.ToGateway {
		if a.tmpl == nil {
			s.drop(DropNoEncap)
			return
		}
		ns, err := a.tmpl.Push(buf, start, end, wire.FlowHash(&f.key))
		if err != nil {
			s.drop(DropNoEncap)
			return
		}
		start = ns
		port = s.cfg.Uplink
	}
	s.queueInject(port, buf[start:end])
}

func touchConns(f *flow, now int64) {
	x := f.x
	if x == nil {
		return
	}
	for _, c := range x.opened {
		c.lastSeen = max(c.lastSeen, now)
	}
	for _, c := range x.uses {
		c.lastSeen = max(c.lastSeen, now)
	}
}

// alloc hands out n bytes of the batch arena. Frames queued for injection
// point into it until the batch is injected; a full arena is replaced, not
// grown, so earlier frames stay valid.
func (s *Switch) alloc(n int) []byte {
	if cap(s.arena)-len(s.arena) < n {
		s.arena = make([]byte, 0, max(n, 256<<10))
	}
	b := s.arena[len(s.arena) : len(s.arena)+n]
	s.arena = s.arena[:len(s.arena)+n]
	return b
}

func (s *Switch) queueInject(port hal.PortID, frame []byte) {
	for i := range s.injects {
		if s.injects[i].port == port {
			s.injects[i].frames = append(s.injects[i].frames, frame)
			return
		}
	}
	s.injects = append(s.injects, portFrames{port: port, frames: [][]byte{frame}})
}

// flushInjects reinjects every executed packet of the batch, one Inject per
// port. A failed Inject is counted: the frames are lost, as on a full ring.
func (s *Switch) flushInjects(ctx context.Context) error {
	var first error
	for i := range s.injects {
		pf := &s.injects[i]
		if len(pf.frames) == 0 {
			continue
		}
		if err := s.nic.Inject(ctx, pf.port, pf.frames); err != nil {
			s.stats.drops[DropInject] += uint64(len(pf.frames))
			if first == nil {
				first = fmt.Errorf("vswitch: inject on port %d: %w", pf.port, err)
			}
		} else {
			s.stats.injected += uint64(len(pf.frames))
		}
		clear(pf.frames)
		pf.frames = pf.frames[:0]
	}
	s.arena = s.arena[:0]
	return first
}

package vswitch

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/nicpath/nicpath/hal"
)

// Learned addresses. A NIC that implements hal.AddressLearner reports the
// source addresses its vports use and the addresses they announce
// (gratuitous ARP, unsolicited neighbour advertisements: what a VM sends
// once it runs somewhere new). Run reads them and the switch keeps, per
// local VM, what was learned and whether the policy gives the VM that MAC
// and address; it forwards nothing by them: the policy decides, and a
// packet from an address the VM does not own is dropped by the walk
// (policy.ReasonSpoofedSource) and counted in Stats.Spoofed. The
// announcements are kept too, the first one of each VM since it became
// local marked as such, so that an operator sees a migrated VM arrive.

const (
	// maxLearned bounds the learned-address table; reports of new
	// addresses beyond it are counted (LearnedOverflow) and not kept.
	maxLearned = 4096
	// maxAnnouncements is how many recent announcements are kept.
	maxAnnouncements = 64
)

// LearnedAddress is an address the NIC saw a local VM's port use.
type LearnedAddress struct {
	VM   string // the VM whose port it is ("" for a port no VM of the policy has)
	Port hal.PortID
	MAC  hal.MAC
	Addr netip.Addr
	// Owned is true when the policy gives the VM this MAC and address;
	// false for a spoofed source (whose packets the switch drops).
	Owned bool
	// Reports counts the NIC's reports of it, Announced those that were
	// announcements.
	Reports, Announced uint64
	First, Last        time.Time
}

// Announcement is a VM's announcement of an address (a gratuitous ARP or
// an unsolicited neighbour advertisement) as the NIC reported it.
type Announcement struct {
	VM    string
	Port  hal.PortID
	MAC   hal.MAC
	Addr  netip.Addr
	At    time.Time
	Owned bool // the policy gives the VM this MAC and address
	// Local says whether the VM runs on this host in the policy now (a
	// migrating VM may announce itself before its move is activated).
	Local bool
	// First marks the VM's first announcement on this host since it became
	// local here (or since the switch started): a migrated VM arriving.
	First bool
}

type learnedKey struct {
	port hal.PortID
	mac  hal.MAC
	addr netip.Addr
}

type learnState struct {
	addrs map[learnedKey]*LearnedAddress
	anns  []Announcement // ring, oldest first once full
	next  int
	// announced holds the VMs that announced since they became local.
	announced map[string]bool
}

// HandleLearned takes addresses the NIC learned (what Run does with those
// it reads from a hal.AddressLearner; tests call it directly).
func (s *Switch) HandleLearned(as []hal.LearnedAddress) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := &s.learn
	if l.addrs == nil {
		l.addrs = map[learnedKey]*LearnedAddress{}
		l.announced = map[string]bool{}
	}
	l.forgetGone(s.cur)
	now := s.cfg.Clock()
	for i := range as {
		a := &as[i]
		s.stats.learned++
		vm := s.cur.byPort[a.Port]
		owned := vm != nil && vm.mac == a.MAC && vm.owns(a.Addr)
		if !owned {
			s.stats.learnedNotOwned++
		}
		name := ""
		if vm != nil {
			name = vm.name
		}
		k := learnedKey{a.Port, a.MAC, a.Addr}
		e := l.addrs[k]
		if e == nil {
			if len(l.addrs) >= maxLearned {
				s.stats.learnedOverflow++
			} else {
				e = &LearnedAddress{Port: a.Port, MAC: a.MAC, Addr: a.Addr, First: now}
				l.addrs[k] = e
			}
		}
		if e != nil {
			e.VM, e.Owned, e.Last = name, owned, now
			e.Reports++
			if a.Kind == hal.LearnAnnounced {
				e.Announced++
			}
		}
		if a.Kind != hal.LearnAnnounced {
			continue
		}
		s.stats.announcements++
		an := Announcement{VM: name, Port: a.Port, MAC: a.MAC, Addr: a.Addr, At: now, Owned: owned, Local: vm != nil && vm.local}
		if vm != nil && vm.local && !l.announced[name] {
			an.First = true
			l.announced[name] = true
		}
		if len(l.anns) < maxAnnouncements {
			l.anns = append(l.anns, an)
		} else {
			l.anns[l.next] = an
			l.next = (l.next + 1) % maxAnnouncements
		}
		if an.First {
			s.log.Info("a VM announced itself on this host", "vm", name, "port", a.Port, "mac", a.MAC, "addr", a.Addr)
		} else if !owned {
			s.log.Warn("an announcement of an address the policy does not give the port's VM", "vm", name, "port", a.Port, "mac", a.MAC, "addr", a.Addr)
		}
	}
}

// forgetGone forgets that a VM announced itself once it no longer runs
// here, so that its next arrival is a first announcement again.
func (l *learnState) forgetGone(c *compiled) {
	for name := range l.announced {
		if vm := c.vms[name]; vm == nil || !vm.local {
			delete(l.announced, name)
		}
	}
}

// Learned returns the learned addresses (by VM, port and address) and
// the recent announcements (oldest first).
func (s *Switch) Learned() ([]LearnedAddress, []Announcement) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := &s.learn
	if l.announced != nil {
		l.forgetGone(s.cur)
	}
	addrs := make([]LearnedAddress, 0, len(l.addrs))
	for _, e := range l.addrs {
		addrs = append(addrs, *e)
	}
	sort.Slice(addrs, func(i, j int) bool {
		a, b := &addrs[i], &addrs[j]
		if a.Port != b.Port {
			return a.Port < b.Port
		}
		return a.Addr.Less(b.Addr)
	})
	anns := make([]Announcement, 0, len(l.anns))
	anns = append(anns, l.anns[l.next:]...)
	anns = append(anns, l.anns[:l.next]...)
	return addrs, anns
}

// readLearned feeds HandleLearned from the NIC until ctx is done.
func (s *Switch) readLearned(ctx context.Context, l hal.AddressLearner) {
	batch := make([]hal.LearnedAddress, 64)
	for {
		n, err := l.ReadLearned(ctx, batch)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, hal.ErrClosed) || errors.Is(err, hal.ErrNotSupported) {
				return
			}
			s.log.Warn("reading learned addresses", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		s.HandleLearned(batch[:n])
	}
}

// vmName is the name of the VM with interned id.
func (s *Switch) vmName(id uint32) string {
	for n, v := range s.vmIDs.ids {
		if v == id {
			return n
		}
	}
	return fmt.Sprintf("vm#%d", id)
}

// spoofNote says, for explain, what anti-spoofing has done about a VM's
// spoofed packets so far and what the NIC reported of the source.
func (s *Switch) spoofNote(k *hal.FlowKey, v *verdict) string {
	name := v.srcName
	if name == "" {
		name = s.vmName(v.srcVM)
	}
	note := fmt.Sprintf("anti-spoofing: VM %s may send only from its own MAC and addresses; %d of its packets were dropped for a spoofed source so far (host and NIC)",
		name, s.stats.spoofed[v.srcVM])
	if e := s.learn.addrs[learnedKey{k.InPort, k.EthSrc, k.Src()}]; e != nil {
		note += fmt.Sprintf("; the NIC reported this source on port %d %d times since %s", e.Port, e.Reports, e.First.UTC().Format(time.RFC3339))
	}
	return note
}

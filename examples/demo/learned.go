package main

import (
	"encoding/binary"
	"path/filepath"
	"strings"
	"time"

	"github.com/nicpath/nicpath/internal/afpacket"
	"github.com/nicpath/nicpath/internal/nsexec"
)

// learnedStep shows what host-a's NIC learned of blue-web-1, on every
// driver: its address from the ping's first packets, then the gratuitous
// ARP it sends (what a VM sends once it runs somewhere new) as an
// announcement, reported by the NIC's exception path to vswitchd.
func (n *nsStory) learnedStep(ctl func(string, ...string) (string, error)) {
	s, st := n.s, n.st
	web1, _ := st.VM("blue-web-1")
	s.title("host-a's NIC learns: blue-web-1's address from its traffic, its gratuitous ARP as an announcement")
	if len(web1.CAs) == 0 || !web1.CAs[0].Is4() {
		s.check(false, "blue-web-1 has an IPv4 address to announce")
		return
	}
	ca := web1.CAs[0]
	err := nsexec.Do(filepath.Join("/run/netns", n.vmNS("blue-web-1")), func() error {
		sock, err := afpacket.Open("eth0", afpacket.Options{})
		if err != nil {
			return err
		}
		defer sock.Close()
		return sock.Send(gratuitousARP(web1.MAC, ca.As4()))
	})
	if err != nil {
		s.check(false, "blue-web-1 sends a gratuitous ARP for %s: %v", ca, err)
		return
	}
	s.say("blue-web-1 sent a gratuitous ARP for %s on its eth0", ca)
	want := "blue-web-1 announced " + ca.String()
	var out string
	for deadline := time.Now().Add(n.wait(15 * time.Second)); ; {
		out, err = ctl("host-a", "learned")
		if err == nil && strings.Contains(out, want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.say("$ vswitchctl learned\n%s", indent(out, "  "))
	s.check(err == nil && strings.Contains(out, "blue-web-1") && strings.Contains(out, ca.String()) && strings.Contains(out, "owned"),
		"host-a's NIC (%s) reported blue-web-1's address %s, owned by its policy", n.drivers.of("host-a"), ca)
	s.check(err == nil && strings.Contains(out, want), "host-a's NIC reported blue-web-1's gratuitous ARP as an announcement of %s", ca)
}

// gratuitousARP is an ARP request from mac whose sender and target
// address are both addr.
func gratuitousARP(mac [6]byte, addr [4]byte) []byte {
	f := make([]byte, 14+28)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], mac[:])
	binary.BigEndian.PutUint16(f[12:], 0x0806)
	p := f[14:]
	binary.BigEndian.PutUint16(p[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(p[2:], 0x0800) // IPv4
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:], 1) // request
	copy(p[8:14], mac[:])
	copy(p[14:18], addr[:])
	copy(p[24:28], addr[:])
	return f
}

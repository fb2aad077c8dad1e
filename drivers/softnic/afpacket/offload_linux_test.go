//go:build linux

package afpacket

import (
	"testing"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
)

var (
	macVMA = hal.MustMAC("02:00:00:0a:00:01")
	macVMB = hal.MustMAC("02:00:00:0a:00:02")
)

// bulkBytes is the size of each bulk TCP transfer: enough for the
// congestion window to open fully, so that the VMs send 64 KB TSO frames
// for most of it.
const bulkBytes = 32 << 20

// Two VMs, each a namespace whose veth keeps the kernel's default offloads
// (checksum offload, TSO, GSO: nothing switched off), behind one softnic
// with a rule per direction. Their TCP and UDP traffic, over IPv4 and
// IPv6, arrives with complete checksums (the VMs' kernels count no
// checksum errors, and the bytes verify), datagrams sent with UDP_SEGMENT
// arrive one by one, and a bulk TCP transfer each way, sent as TSO frames
// of up to 64 KB, arrives whole.
func TestOffloadsBetweenTwoVMs(t *testing.T) {
	l := newLab(t, "o2")
	host, a, b := l.ns("host"), l.ns("vma"), l.ns("vmb")
	l.veth(host, "vm1", a, "eth0", macVMA)
	l.veth(host, "vm2", b, "eth0", macVMB)
	for _, c := range []struct {
		ns, v4, v6, peer4, peer6 string
		peerMAC                  hal.MAC
	}{
		{a, "198.18.5.1/24", "2001:db8:5::1/64", "198.18.5.2", "2001:db8:5::2", macVMB},
		{b, "198.18.5.2/24", "2001:db8:5::2/64", "198.18.5.1", "2001:db8:5::1", macVMA},
	} {
		ip(t, "-n", c.ns, "addr", "add", c.v4, "dev", "eth0")
		ip(t, "-n", c.ns, "addr", "add", c.v6, "dev", "eth0", "nodad")
		ip(t, "-n", c.ns, "neigh", "replace", c.peer4, "lladdr", c.peerMAC.String(), "dev", "eth0", "nud", "permanent")
		ip(t, "-n", c.ns, "neigh", "replace", c.peer6, "lladdr", c.peerMAC.String(), "dev", "eth0", "nud", "permanent")
	}
	nic, err := softnic.New(softnic.Config{Ports: []softnic.PortConfig{
		{Name: "vm1", Kind: hal.PortVPort, MAC: hal.MustMAC("02:00:00:00:00:01")},
		{Name: "vm2", Kind: hal.PortVPort, MAC: hal.MustMAC("02:00:00:00:00:02")},
	}, RingSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer nic.Close()
	var from1, from2 hal.Match
	from1.InPort(1)
	from2.InPort(2)
	apply(t, nic,
		hal.Rule{ID: 1, Match: from1, Actions: []hal.Action{hal.Output(2)}},
		hal.Rule{ID: 2, Match: from2, Actions: []hal.Action{hal.Output(1)}})
	bs := bind(t, host, nic, "vm1", "vm2")

	capA := startCapture(t, a, "eth0", 4000, 6001, 6003, 5201)
	capB := startCapture(t, b, "eth0", 4000, 6002, 6004, 5201)
	ua4, ub4 := udpConn(t, a, "198.18.5.1:6001"), udpConn(t, b, "198.18.5.2:6002")
	ua6, ub6 := udpConn(t, a, "[2001:db8:5::1]:6003"), udpConn(t, b, "[2001:db8:5::2]:6004")
	udpExchange(t, ua4, ub4)
	udpExchange(t, ub4, ua4)
	udpExchange(t, ua6, ub6)
	udpExchange(t, ub6, ua6)

	d := bulkTCP(t, b, "198.18.5.2:5201", a, bulkBytes)
	t.Logf("TCP/IPv4 VM A -> VM B through softnic: %d MiB in %v: %.2f Gbit/s", bulkBytes>>20, d, gbps(bulkBytes, d))
	d = bulkTCP(t, a, "[2001:db8:5::1]:5201", b, bulkBytes)
	t.Logf("TCP/IPv6 VM B -> VM A through softnic: %d MiB in %v: %.2f Gbit/s", bulkBytes>>20, d, gbps(bulkBytes, d))

	for _, c := range []struct {
		name string
		c    *capture
	}{{"VM A", capA}, {"VM B", capB}} {
		tcp, udp := c.c.checkFrames(t, c.name)
		t.Logf("%s: %d TCP and %d UDP frames checked", c.name, tcp, udp)
		if tcp == 0 || udp < 16 {
			t.Errorf("%s: %d TCP and %d UDP frames captured: too few to say anything", c.name, tcp, udp)
		}
	}
	noCsumErrors(t, a, b)
	var gso, csum uint64
	for _, b := range bs {
		s := b.Stats()
		t.Logf("binding %s: %+v", b.Interface(), s)
		gso += s.RxGSO
		csum += s.RxCsum
		if s.RxDropped != 0 || s.TxErrors != 0 {
			t.Errorf("binding %s dropped frames: %+v", b.Interface(), s)
		}
	}
	if gso == 0 || csum == 0 {
		t.Errorf("the bindings cut %d GSO frames and completed %d checksums: the test did not exercise the offloads", gso, csum)
	}
	st, err := nic.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Drops[hal.ReasonMalformed] != 0 {
		t.Errorf("the NIC dropped %d frames as malformed", st.Drops[hal.ReasonMalformed])
	}
}

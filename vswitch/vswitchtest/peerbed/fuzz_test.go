package peerbed

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal/wire"
)

const snmpSample = `Ip: Forwarding DefaultTTL InReceives
Ip: 2 64 3651
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn InCsumErrors
Tcp: 1 200 120000 -1 3
Udp: InDatagrams InErrors InCsumErrors
Udp: 27 4 4
`

func TestParseSNMP(t *testing.T) {
	c, err := parseSNMP([]byte(snmpSample))
	if err != nil {
		t.Fatal(err)
	}
	want := Counters{"IpForwarding": 2, "IpDefaultTTL": 64, "IpInReceives": 3651, "TcpRtoAlgorithm": 1, "TcpRtoMin": 200,
		"TcpRtoMax": 120000, "TcpInCsumErrors": 3, "UdpInDatagrams": 27, "UdpInErrors": 4, "UdpInCsumErrors": 4}
	if len(c) != len(want) {
		t.Errorf("got %v, want %v", c, want)
	}
	for k, v := range want {
		if c[k] != v {
			t.Errorf("%s = %d, want %d", k, c[k], v)
		}
	}
	if _, ok := c["TcpMaxConn"]; ok {
		t.Error("the signed MaxConn (-1) was read as a counter")
	}
	for _, bad := range []string{"Tcp: A B\nUdp: 1 2\n", "Tcp: A B\nTcp: 1\n", "Tcp: A\n", "Tcp: A\nTcp: x\n", "Tcp A\nTcp 1\n"} {
		if _, err := parseSNMP([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	d := Counters{"TcpInCsumErrors": 5}.Sub(Counters{"TcpInCsumErrors": 3})
	if d["TcpInCsumErrors"] != 2 {
		t.Errorf("Sub: %v", d)
	}
}

// FuzzParseSNMP: the parser never panics, and every counter it returns was
// a number under its name in a header and values pair of the input.
func FuzzParseSNMP(f *testing.F) {
	f.Add([]byte(snmpSample))
	f.Add([]byte("Tcp: A\n"))
	f.Add([]byte("Tcp: A B\nTcp: 1 -2\n\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseSNMP(data)
		if err != nil {
			return
		}
		lines := strings.Split(string(data), "\n")
		for k, v := range c {
			named := false
			for _, l := range lines {
				p, rest, ok := strings.Cut(l, ":")
				if ok && p != "" && strings.HasPrefix(k, p) && slices.Contains(strings.Fields(rest), k[len(p):]) {
					named = true
				}
			}
			if !named {
				t.Fatalf("counter %q is named by no header of the input", k)
			}
			if !bytes.Contains(data, []byte(strconv.FormatUint(v, 10))) {
				t.Fatalf("counter %q = %d: no such number in the input", k, v)
			}
		}
	})
}

func TestEchoReply(t *testing.T) {
	req := echoRequest(0x1234, 7, 100)
	if wire.Checksum(req, 0) != 0 {
		t.Fatal("the request's checksum is wrong")
	}
	reply := ipv4ICMP(append([]byte(nil), req...))
	reply[20] = icmpEchoReply
	fixICMP(reply[20:])
	id, seq, payload, ok := parseEchoReply(reply)
	if !ok || id != 0x1234 || seq != 7 || !bytes.Equal(payload, req[8:]) {
		t.Fatalf("parseEchoReply = %x %d %v %v", id, seq, payload, ok)
	}
	reply[30] ^= 1 // the payload damaged: the checksum no longer holds
	if _, _, _, ok := parseEchoReply(reply); ok {
		t.Fatal("a reply with a bad checksum was taken")
	}
	if _, _, _, ok := parseEchoReply(ipv4ICMP(req)); ok {
		t.Fatal("an echo request was taken for a reply")
	}
}

// ipv4ICMP wraps an ICMP message in a 20-byte IPv4 header.
func ipv4ICMP(m []byte) []byte {
	p := make([]byte, 20, 20+len(m))
	p[0], p[9] = 0x45, 1
	binary.BigEndian.PutUint16(p[2:], uint16(20+len(m)))
	return append(p, m...)
}

func fixICMP(m []byte) {
	m[2], m[3] = 0, 0
	binary.BigEndian.PutUint16(m[2:], wire.Checksum(m, 0))
}

// FuzzParseEchoReply: the reader never panics, and what it takes is an
// IPv4 ICMP echo reply whose checksum holds and whose payload lies within
// the packet.
func FuzzParseEchoReply(f *testing.F) {
	r := ipv4ICMP(echoRequest(1, 1, 16))
	r[20] = icmpEchoReply
	fixICMP(r[20:])
	f.Add(r)
	f.Add(ipv4ICMP(echoRequest(2, 3, 8)))
	f.Add([]byte{0x45})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		_, _, payload, ok := parseEchoReply(pkt)
		if !ok {
			return
		}
		ihl := int(pkt[0]&0x0f) * 4
		m := pkt[ihl:]
		if pkt[9] != 1 || m[0] != icmpEchoReply || len(payload) > len(m)-8 || wire.Checksum(m[:8+len(payload)], 0) != 0 {
			t.Fatalf("took %x", pkt)
		}
	})
}

// FuzzCheckPayload: a payload that fill wrote passes with its sequence
// number, and any change to its bytes after the sequence number fails.
func FuzzCheckPayload(f *testing.F) {
	f.Add(uint64(0), 8, 0)
	f.Add(uint64(7), 1422, 100)
	f.Add(uint64(1<<40), 64, 63)
	f.Fuzz(func(t *testing.T, seq uint64, size, flip int) {
		if size < 8 || size > 9000 {
			return
		}
		p := make([]byte, size)
		fill(p, seq)
		if got, ok := checkPayload(p); !ok || got != seq {
			t.Fatalf("fill(%d) read back as %d, %v", seq, got, ok)
		}
		if flip < 8 || flip >= size {
			return
		}
		p[flip] ^= 0x5a
		if got, ok := checkPayload(p); ok && got == seq {
			t.Fatalf("a damaged byte at %d passed", flip)
		}
	})
}

// FuzzStreamAt: the transfer's bytes at an offset are the same whatever
// the pieces they are read in.
func FuzzStreamAt(f *testing.F) {
	f.Add(int64(0), 100, 7)
	f.Add(int64(tcpBlock-5), 20, 3)
	f.Add(int64(3*tcpBlock+2), 9, 1)
	f.Fuzz(func(t *testing.T, off int64, n, cut int) {
		if off < 0 || off > 1<<40 || n <= 0 || n > 3*tcpBlock || cut < 0 || cut > n {
			return
		}
		whole := make([]byte, n)
		streamAt(off, whole)
		parts := make([]byte, n)
		streamAt(off, parts[:cut])
		streamAt(off+int64(cut), parts[cut:])
		if !bytes.Equal(whole, parts) {
			t.Fatalf("streamAt(%d, %d) differs when cut at %d", off, n, cut)
		}
		// Each block starts with its index.
		for i := range n {
			if o := off + int64(i); o%tcpBlock == 0 && i+8 <= n {
				if binary.BigEndian.Uint64(whole[i:]) != uint64(o/tcpBlock) {
					t.Fatalf("block %d does not start with its index", o/tcpBlock)
				}
			}
		}
	})
}

const procStatSample = "4242 (peer bed) (x)) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 131 0 0 20 0 9 0 12345 1000000 500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"

func TestParseProcCPU(t *testing.T) {
	d, err := parseProcCPU([]byte(procStatSample))
	if err != nil {
		t.Fatal(err)
	}
	if want := 3810 * time.Millisecond; d != want {
		t.Fatalf("got %v, want %v (utime 250 + stime 131 ticks)", d, want)
	}
	for _, bad := range []string{"", "4242 peer S 1", "4242 (x) S 1 2 3", "4242 (x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 -5 131 0",
		"4242 (x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 99999999999999999999 131 0"} {
		if _, err := parseProcCPU([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func FuzzParseProcCPU(f *testing.F) {
	f.Add([]byte(procStatSample))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := parseProcCPU(data)
		if err == nil && d < 0 {
			t.Fatalf("negative CPU time %v", d)
		}
	})
}

const machineStatSample = "cpu  6184741 7 2138807 3985226 6858 3 99706 56733 11 0\ncpu0 3092370 0 1069403 1992613 3429 0 49853 28366 0 0\n"

func TestParseMachineBusy(t *testing.T) {
	d, err := parseMachineBusy([]byte(machineStatSample))
	if err != nil {
		t.Fatal(err)
	}
	// user + nice + system + irq + softirq + steal; not idle, iowait, guest.
	if want := time.Duration(6184741+7+2138807+3+99706+56733) * 10 * time.Millisecond; d != want {
		t.Fatalf("got %v, want %v", d, want)
	}
	for _, bad := range []string{"", "cpu0 1 2 3 4 5 6 7 8\n", "cpu 1 2 3 4 5 6 7\n", "cpu 1 2 3 4 5 6 -7 8\n",
		"cpu 1 2 3 4 5 6 7 99999999999999999999\n", "cpu 4611686018427387 4611686018427387 0 0 0 0 0 0\n"} {
		if _, err := parseMachineBusy([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func FuzzParseMachineBusy(f *testing.F) {
	f.Add([]byte(machineStatSample))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := parseMachineBusy(data)
		if err == nil && d < 0 {
			t.Fatalf("negative CPU time %v", d)
		}
	})
}

package peerbed

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// Counters are a kernel's SNMP counters, named as nstat names them: the
// protocol and the field run together ("TcpInCsumErrors",
// "UdpInCsumErrors", "IpInReceives").
type Counters map[string]uint64

// CsumErrors are the counters in which a VM's kernel shows checksum
// trouble: segments and datagrams it dropped because their checksum was
// wrong.
var CsumErrors = []string{"TcpInCsumErrors", "UdpInCsumErrors"}

// parseSNMP reads /proc/net/snmp: pairs of lines, a header ("Tcp: RtoAlgorithm
// RtoMin …") and its values ("Tcp: 1 200 …"). A pair whose lines disagree
// (another protocol, another number of fields) is an error; a value that
// is not a number is one too, except the signed ones (Tcp MaxConn is -1),
// which are left out.
func parseSNMP(data []byte) (Counters, error) {
	c := Counters{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		head := sc.Text()
		if strings.TrimSpace(head) == "" {
			continue
		}
		if !sc.Scan() {
			return nil, fmt.Errorf("snmp: %q has no line of values", head)
		}
		vals := sc.Text()
		hp, hf, ok1 := strings.Cut(head, ":")
		vp, vf, ok2 := strings.Cut(vals, ":")
		if !ok1 || !ok2 || hp != vp || hp == "" {
			return nil, fmt.Errorf("snmp: header %q and values %q do not pair", head, vals)
		}
		names, nums := strings.Fields(hf), strings.Fields(vf)
		if len(names) != len(nums) {
			return nil, fmt.Errorf("snmp: %s: %d names, %d values", hp, len(names), len(nums))
		}
		for i, n := range names {
			v, err := strconv.ParseUint(nums[i], 10, 64)
			if err != nil {
				if _, serr := strconv.ParseInt(nums[i], 10, 64); serr == nil {
					continue
				}
				return nil, fmt.Errorf("snmp: %s %s: %q is not a number", hp, n, nums[i])
			}
			c[hp+n] = v
		}
	}
	return c, sc.Err()
}

// Sub returns c - before, for every counter of c.
func (c Counters) Sub(before Counters) Counters {
	d := Counters{}
	for k, v := range c {
		d[k] = v - before[k]
	}
	return d
}

// Summary is a line of the counters a failed check wants to see: checksum
// errors, receive errors and what arrived.
func (c Counters) Summary() string {
	keys := []string{"TcpInCsumErrors", "UdpInCsumErrors", "TcpInErrs", "UdpInErrors", "UdpRcvbufErrors",
		"IpInReceives", "IpInHdrErrors", "IpInDiscards", "IpReasmFails", "TcpInSegs", "TcpRetransSegs", "UdpInDatagrams",
		"IcmpInEchoReps", "IcmpInEchos", "IcmpInCsumErrors"}
	var parts []string
	for _, k := range keys {
		if v, ok := c[k]; ok {
			parts = append(parts, fmt.Sprintf("%s=%d", k, v))
		}
	}
	return strings.Join(parts, " ")
}

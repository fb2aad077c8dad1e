package policytest

import (
	"bufio"
	"io"
	"strconv"

	"github.com/nicpath/nicpath/policy"
)

// LargeHosts is the number of hosts of a WriteLarge document: h0 to h63.
const LargeHosts = 64

// LargeTenantMappings is how many mappings each tenant of a WriteLarge
// document holds (its VNET is 10.0.0.0/8; every tenant uses the same
// addresses).
const LargeTenantMappings = 1 << 20

// WriteLarge writes a policy document with n VMs of one CA each, so n
// CA→PA mappings, as a tool writing a policy file would: block style, one
// field a line, about 113 bytes a mapping. Its hosts are h0 to h63 (PA
// 198.18.1.1 to 198.18.1.64); tenant t<k> has one VNET "v" (VNI 100+k,
// 10.0.0.0/8) with mappings k·2^20 to (k+1)·2^20-1; VM i of a tenant is
// t<k>-<i>, CA 10.x.y.z from i, on host h<i mod 64>. A different change
// moves every thousandth VM to another host, as a small edit of a large
// policy would (0 moves none).
func WriteLarge(w io.Writer, n, change int) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	bw.WriteString("hosts:\n")
	var buf []byte
	for h := range LargeHosts {
		buf = append(buf[:0], "  - name: h"...)
		buf = strconv.AppendInt(buf, int64(h), 10)
		buf = append(buf, "\n    pa: 198.18.1."...)
		buf = strconv.AppendInt(buf, int64(h+1), 10)
		buf = append(buf, '\n')
		bw.Write(buf)
	}
	bw.WriteString("tenants:\n")
	for t := 0; t*LargeTenantMappings < n; t++ {
		ts := strconv.Itoa(t)
		bw.WriteString("  - name: t" + ts + "\n    vnets:\n      - name: v\n        vni: " + strconv.Itoa(100+t) +
			"\n        subnets: [10.0.0.0/8]\n        vms:\n")
		for i := 0; i < LargeTenantMappings && t*LargeTenantMappings+i < n; i++ {
			host := i % LargeHosts
			if i%1000 == 0 {
				host = (host + change) % LargeHosts
			}
			buf = append(buf[:0], "          - name: t"...)
			buf = append(buf, ts...)
			buf = append(buf, '-')
			buf = strconv.AppendInt(buf, int64(i), 10)
			buf = append(buf, "\n            mac: "...)
			buf = append(buf, policy.MAC{2, byte(t), 0, byte(i >> 16), byte(i >> 8), byte(i)}.String()...)
			buf = append(buf, "\n            ca: 10."...)
			buf = strconv.AppendInt(buf, int64(byte(i>>16)), 10)
			buf = append(buf, '.')
			buf = strconv.AppendInt(buf, int64(byte(i>>8)), 10)
			buf = append(buf, '.')
			buf = strconv.AppendInt(buf, int64(byte(i)), 10)
			buf = append(buf, "\n            host: h"...)
			buf = strconv.AppendInt(buf, int64(host), 10)
			buf = append(buf, '\n')
			if _, err := bw.Write(buf); err != nil {
				return err
			}
		}
	}
	return bw.Flush()
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/nicpath/nicpath/store"
)

// storedLease is the record package tether/lease keeps for each lease
// (its Lease type, read without importing the DHCP library into this
// module).
type storedLease struct {
	Subnet   string    `json:"subnet"`
	Addr     string    `json:"addr"`
	MAC      string    `json:"mac"`
	Port     string    `json:"port"`
	Hostname string    `json:"hostname"`
	Granted  time.Time `json:"granted"`
	Expiry   time.Time `json:"expiry"`
}

// printLeases lists the leases stored under the spec's prefix.
func printLeases(ctx context.Context, opened store.Store, spec string, w io.Writer) error {
	s, ok := opened.(*store.KVStore)
	if !ok {
		return fmt.Errorf("%s keeps no leases (not a key-value store)", spec)
	}
	prefix := store.DefaultPrefix
	if u, err := url.Parse(spec); err == nil && u.Path != "" && u.Path != "/" {
		prefix = u.Path
	}
	kvs, rev, err := s.KV().Get(ctx, prefix+"leases/")
	if err != nil {
		return err
	}
	now := time.Now()
	fmt.Fprintf(w, "# leases in %s at revision %d\n", spec, rev)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SUBNET\tADDRESS\tMAC\tPORT\tHOSTNAME\tEXPIRES")
	for _, kv := range kvs {
		var l storedLease
		if err := json.Unmarshal(kv.Value, &l); err != nil {
			return fmt.Errorf("%s: %w", kv.Key, err)
		}
		exp := "in " + l.Expiry.Sub(now).Round(time.Second).String()
		if !now.Before(l.Expiry) {
			exp = "expired"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", l.Subnet, l.Addr, l.MAC, l.Port, l.Hostname, exp)
	}
	return tw.Flush()
}

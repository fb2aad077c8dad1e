package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/nicpath/nicpath/control"
	"github.com/nicpath/nicpath/tether"
	"github.com/nicpath/nicpath/tether/lease"
)

// callTether runs the commands a tetherd answers.
func callTether(ctx context.Context, c *control.Client, req control.Request, w io.Writer) error {
	if req.Cmd == "leases" {
		var ls []lease.Lease
		if err := c.Call(ctx, req.Cmd, req.Args, &ls); err != nil {
			return err
		}
		printLeases(w, ls, time.Now())
		return nil
	}
	var s tether.Status
	if err := c.Call(ctx, req.Cmd, req.Args, &s); err != nil {
		return err
	}
	printTether(w, s, time.Now())
	return nil
}

func ago(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return now.Sub(t).Round(time.Millisecond).String() + " ago"
}

func printTether(w io.Writer, s tether.Status, now time.Time) {
	switch s.Role {
	case "anchor":
		fmt.Fprintf(w, "anchor: %d relocated addresses in the policy\n", s.Pool)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TETHER\tVNI\tSTATE\tENDPOINT\tLAST SEEN\tREBINDS\tHANDSHAKES\tRX FRAMES\tTX FRAMES\tTOO BIG")
		for _, p := range s.Peers {
			state := "down"
			if p.Established {
				state = "up"
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\n", p.Name, p.VNI, state, p.Endpoint, ago(p.LastSeen, now),
				p.Rebinds, p.Handshakes, p.RxFrames, p.TxFrames, p.TooBig)
		}
		tw.Flush()
	case "tether":
		t := s.Tether
		state := "down"
		if t.Established {
			state = "up"
		}
		rtt := "no probe answered yet"
		if t.RTT > 0 {
			rtt = "probe rtt " + t.RTT.Round(time.Microsecond).String()
		}
		fmt.Fprintf(w, "tether of %s: %s to anchor %s from %s, last answer %s, %s, %d handshakes\n", s.Subnet, state, t.Anchor,
			t.Local, ago(t.LastSeen, now), rtt, t.Handshakes)
		fmt.Fprintf(w, "nodes' MTU %d; frames to the anchor %d, from it %d\n", s.MTU, t.TxFrames, t.RxFrames)
	}
	first := true
	for _, k := range []string{"to_tunnel", "from_tunnel", "local", "dhcp", "arp", "too_big", "spoofed", "no_lease", "dropped", "junk"} {
		if v := s.Counter[k]; v > 0 {
			if first {
				fmt.Fprint(w, "counters:")
				first = false
			}
			fmt.Fprintf(w, " %s=%d", k, v)
		}
	}
	if !first {
		fmt.Fprintln(w)
	}
}

func printLeases(w io.Writer, ls []lease.Lease, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SUBNET\tADDRESS\tMAC\tPORT\tHOSTNAME\tEXPIRES")
	for _, l := range ls {
		exp := "in " + l.Expiry.Sub(now).Round(time.Second).String()
		if l.Expired(now) {
			exp = "expired"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", l.Subnet, l.Addr, l.MAC, l.Port, l.Hostname, exp)
	}
	tw.Flush()
}

// Command vswitchctl controls a running vswitchd over its control socket,
// in the spirit of ovs-appctl and ovs-ofctl.
//
// Usage:
//
//	vswitchctl [-s socket] [-json] <command> [args]
//
//	show                         the host, the driver, the policy and the ports with their counters
//	caps                         what the NIC can do
//	flows [--host|--nic]         the unified flows: match, actions, where each lives, packets, bytes, age
//	explain <rule-id>            why a flow is where it is
//	explain <vm> <src> <dst> [icmp|tcp|udp|<proto> [sport dport]]
//	                             trace a packet a local VM sends through the policy layers
//	explain uplink <vni> <outer-src> <src> <dst> [proto [sport dport]]
//	                             trace a packet arriving from another host
//	stats                        the switch's counters: exceptions, drops and fallbacks by reason
//	activate <vm>                make a migrating VM's shadow location live
//	capture start <file>         write the exception path to a pcapng file
//	capture stop
//	reload                       check the policy file now and apply it if it changed
//	seal                         the NIC's sealing public key, the VM keys registered, the sealed routes
//	learned                      the addresses the NIC saw each VM's port use (owned or spoofed),
//	                             the recent announcements (gratuitous ARP, unsolicited NA), a
//	                             migrated VM's first one marked, and the spoofed-source drops
//	tether                       (tetherd) the relocated subnet's tunnel: each tether's endpoint as the NAT shows it
//	leases                       (tetherd) the leases the tether's broker handed to the remote nodes
//	gateway                      (a gateway host) the gateway, its counters and translated connections
//
// reload exits 1 with the daemon's error (file:line: field: problem) for
// as long as the policy file is one the daemon refused, whether reload or
// the daemon's watcher found it; show says so too, with where and when.
//
// The socket defaults to $NICPATH_CONTROL, else /run/nicpath/vswitchd.sock.
// Wrong arguments print this usage and exit 2; a command the daemon refuses
// exits 1 with its reason.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nicpath/nicpath/control"
)

const usage = `usage: vswitchctl [-s socket] [-json] <command> [args]

commands:
  show                           host, driver, policy and ports with counters
  caps                           what the NIC can do
  flows [--host|--nic]           unified flows: match, actions, where, packets, bytes, age
  explain <rule-id>              why a flow is where it is
  explain <vm> <src> <dst> [icmp|tcp|udp|<proto> [sport dport]]
                                 trace a packet a local VM sends
  explain uplink <vni> <outer-src> <src> <dst> [proto [sport dport]]
                                 trace a packet arriving from another host
  stats                          counters: exceptions, drops, fallbacks by reason
  activate <vm>                  make a migrating VM's shadow location live
  capture start <file>           write the exception path to a pcapng file
  capture stop                   finish the capture
  reload                         check the policy file now, apply it if it changed
  seal                           the NIC's sealing public key, VM keys, sealed routes
  learned                        addresses the NIC saw the VMs' ports use, announcements
                                 (a migrated VM's first marked), spoofed-source drops
  tether                         (tetherd) the relocated subnet's tunnel and endpoints
  leases                         (tetherd) the remote nodes' leases
  gateway                        (a gateway host) the gateway, counters, translated connections

The socket defaults to $NICPATH_CONTROL, else /run/nicpath/vswitchd.sock.
`

// DefaultSocket is where vswitchd listens unless told otherwise.
const DefaultSocket = "/run/nicpath/vswitchd.sock"

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks arguments that do not form a command.
var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vswitchctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	sock := fs.String("s", "", "control socket")
	asJSON := fs.Bool("json", false, "print the daemon's answer as JSON")
	if err := fs.Parse(args); err != nil {
		fmt.Fprintf(stderr, "vswitchctl: %v\n\n%s", err, usage)
		return 2
	}
	path := *sock
	if path == "" {
		path = os.Getenv("NICPATH_CONTROL")
	}
	if path == "" {
		path = DefaultSocket
	}
	req, err := parse(fs.Args())
	if err != nil {
		if err != errUsage {
			fmt.Fprintf(stderr, "vswitchctl: %v\n\n", err)
		}
		fmt.Fprint(stderr, usage)
		return 2
	}
	c := &control.Client{Path: path}
	if *asJSON {
		var raw json.RawMessage
		if err := c.Call(ctx, req.Cmd, req.Args, &raw); err != nil {
			fmt.Fprintln(stderr, "vswitchctl:", err)
			return 1
		}
		stdout.Write(append(raw, '\n'))
		return 0
	}
	if err := call(ctx, c, req, stdout); err != nil {
		fmt.Fprintln(stderr, "vswitchctl:", err)
		return 1
	}
	return 0
}

// parse checks the command line's shape; the daemon checks the values.
func parse(a []string) (control.Request, error) {
	if len(a) == 0 {
		return control.Request{}, errUsage
	}
	cmd, rest := a[0], a[1:]
	req := control.Request{Cmd: cmd, Args: rest}
	switch cmd {
	case "show", "caps", "stats", "reload", "seal", "learned", "tether", "leases", "gateway":
		if len(rest) != 0 {
			return req, fmt.Errorf("%s takes no arguments", cmd)
		}
	case "flows":
		switch {
		case len(rest) == 0:
		case len(rest) == 1 && rest[0] == "--host":
			req.Args = []string{"host"}
		case len(rest) == 1 && rest[0] == "--nic":
			req.Args = []string{"nic"}
		default:
			return req, errors.New("flows takes --host or --nic")
		}
	case "explain":
		n := len(rest)
		switch {
		case n == 1:
		case n >= 1 && rest[0] == "uplink" && (n == 5 || n == 6 || n == 8):
		case n >= 1 && rest[0] != "uplink" && (n == 3 || n == 4 || n == 6):
		default:
			return req, errors.New("explain takes a rule ID, or a VM (or uplink with vni and outer source), source, destination and optionally protocol and ports")
		}
	case "activate":
		if len(rest) != 1 {
			return req, errors.New("activate takes one VM name")
		}
	case "capture":
		switch {
		case len(rest) == 2 && rest[0] == "start":
			// The daemon writes the file: give it a path that does not
			// depend on its working directory.
			abs, err := filepath.Abs(rest[1])
			if err != nil {
				return req, err
			}
			req.Args = []string{"start", abs}
		case len(rest) == 1 && rest[0] == "stop":
		default:
			return req, errors.New("capture start <file> | capture stop")
		}
	default:
		return req, fmt.Errorf("unknown command %q", cmd)
	}
	return req, nil
}

func call(ctx context.Context, c *control.Client, req control.Request, w io.Writer) error {
	switch req.Cmd {
	case "show":
		var s control.Show
		if err := c.Call(ctx, req.Cmd, req.Args, &s); err != nil {
			return err
		}
		printShow(w, s)
	case "caps":
		var s control.Caps
		if err := c.Call(ctx, req.Cmd, req.Args, &s); err != nil {
			return err
		}
		fmt.Fprintln(w, strings.TrimRight(s.Text, "\n"))
	case "flows":
		var fs []control.Flow
		if err := c.Call(ctx, req.Cmd, req.Args, &fs); err != nil {
			return err
		}
		printFlows(w, fs)
	case "explain":
		var e control.Explanation
		if err := c.Call(ctx, req.Cmd, req.Args, &e); err != nil {
			return err
		}
		fmt.Fprint(w, e.Text)
	case "stats":
		var s control.Stats
		if err := c.Call(ctx, req.Cmd, req.Args, &s); err != nil {
			return err
		}
		printStats(w, s)
	case "seal":
		var s control.Seal
		if err := c.Call(ctx, req.Cmd, req.Args, &s); err != nil {
			return err
		}
		printSeal(w, s)
	case "activate":
		var a control.Activated
		if err := c.Call(ctx, req.Cmd, req.Args, &a); err != nil {
			return err
		}
		fmt.Fprintf(w, "activated the shadow location of %s\n", a.VM)
	case "capture":
		var s control.CaptureStatus
		if err := c.Call(ctx, req.Cmd, req.Args, &s); err != nil {
			return err
		}
		if s.Active {
			fmt.Fprintf(w, "capturing the exception path to %s\n", s.File)
		} else {
			fmt.Fprintf(w, "capture stopped: %d packets in %s\n", s.Packets, s.File)
		}
	case "learned":
		var l control.Learned
		if err := c.Call(ctx, req.Cmd, req.Args, &l); err != nil {
			return err
		}
		printLearned(w, l)
	case "tether", "leases":
		return callTether(ctx, c, req, w)
	case "gateway":
		var g control.GatewayStatus
		if err := c.Call(ctx, req.Cmd, req.Args, &g); err != nil {
			return err
		}
		fmt.Fprint(w, g.Text)
	case "reload":
		var r control.Reloaded
		if err := c.Call(ctx, req.Cmd, req.Args, &r); err != nil {
			return err
		}
		if r.Changed {
			fmt.Fprintln(w, "policy applied")
		} else {
			fmt.Fprintln(w, "policy unchanged")
		}
	}
	return nil
}

func printShow(w io.Writer, s control.Show) {
	fmt.Fprintf(w, "host %s (PA %s), driver %s on %s, rules in %s, up %s\n", s.Host, s.PA, s.Driver, s.Device, s.Location, s.Uptime)
	if st := s.Store; st != nil {
		fmt.Fprintf(w, "store %s, revision %d applied %s, %d resyncs\n", st.Spec, st.Revision, s.PolicyLoad.Format(time.RFC3339), st.Resyncs)
		if st.Stale {
			fmt.Fprintf(w, "STALE: the store is unreachable since %s; forwarding on revision %d\n", st.StaleSince.Format(time.RFC3339), st.Revision)
		}
		if st.Error != "" {
			fmt.Fprintf(w, "last store problem: %s\n", st.Error)
		}
	} else {
		fmt.Fprintf(w, "policy %s, loaded %s\n", s.PolicyFile, s.PolicyLoad.Format(time.RFC3339))
	}
	if r := s.PolicyRejected; r != nil {
		where := r.File
		if r.Line > 0 {
			where += ":" + strconv.Itoa(r.Line)
		}
		if r.Field != "" {
			where += ": " + r.Field
		}
		more := ""
		if r.Problems > 1 {
			more = fmt.Sprintf(" (and %d more problems)", r.Problems-1)
		}
		fmt.Fprintf(w, "POLICY REJECTED at %s: %s: %s%s\n", r.At.Format(time.RFC3339), where, r.Msg, more)
		fmt.Fprintf(w, "the switch runs the policy loaded %s; fix the file and reload\n", s.PolicyLoad.Format(time.RFC3339))
	}
	if s.Capture != "" {
		fmt.Fprintf(w, "capturing the exception path to %s\n", s.Capture)
	}
	if s.SealPublicKey != "" {
		fmt.Fprintf(w, "sealed addresses: NIC public key %s\n", s.SealPublicKey)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tNAME\tKIND\tINTERFACE\tMAC\tMTU\tRX PKTS\tTX PKTS\tDROPS\tTO HOST")
	for _, p := range s.Ports {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\n", p.ID, p.Name, p.Kind, p.Interface, p.MAC, p.MTU,
			p.RxPackets, p.TxPackets, p.Drops, p.Exceptions)
	}
	tw.Flush()
}

// printFlows prints one flow a line, as ovs-ofctl dump-flows does.
func printFlows(w io.Writer, fs []control.Flow) {
	if len(fs) == 0 {
		fmt.Fprintln(w, "no flows")
		return
	}
	for _, f := range fs {
		where := f.Location
		if f.Location == "host" {
			where += "(" + f.Why + ")"
		}
		fmt.Fprintf(w, "rule=%d, where=%s, packets=%d, bytes=%d, age=%s, idle=%s, %s actions=%s\n",
			f.Rule, where, f.Packets, f.Bytes, roundDur(f.Age), roundDur(f.Idle), f.Match, strings.Join(f.Actions, ","))
		if f.Detail != "" {
			fmt.Fprintf(w, "    why: %s\n", f.Detail)
		}
	}
}

func roundDur(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Microsecond)
}

func printStats(w io.Writer, s control.Stats) {
	fmt.Fprintf(w, "flows: %d on the NIC, %d in the host\n", s.FlowsNIC, s.FlowsHost)
	fmt.Fprintf(w, "policy: %d updates applied, %d files rejected\n", s.Updates, s.Rejected)
	if len(s.NICDrops) > 0 {
		fmt.Fprintf(w, "NIC drops: %s\n", kv(s.NICDrops))
	}
	fmt.Fprint(w, s.Text)
	if !strings.HasSuffix(s.Text, "\n") && s.Text != "" {
		fmt.Fprintln(w)
	}
}

func kv(m map[string]uint64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

func printSeal(w io.Writer, s control.Seal) {
	if !s.Crypto {
		fmt.Fprintln(w, "the NIC does not open sealed frames: they are dropped and counted (fail closed)")
		return
	}
	fmt.Fprintf(w, "NIC public key %s\n", s.PublicKey)
	if s.File != "" {
		fmt.Fprintf(w, "published in %s\n", s.File)
	}
	for _, p := range s.Ports {
		ids := make([]string, len(p.KeyIDs))
		for i, id := range p.KeyIDs {
			ids[i] = strconv.Itoa(int(id))
		}
		fmt.Fprintf(w, "vm %s (port %d): key ids %s\n", p.VM, p.Port, strings.Join(ids, ", "))
	}
	fmt.Fprintf(w, "sealed routes %d (refused pushes %d)\n", s.Routes, s.Refused)
	if s.Error != "" {
		fmt.Fprintf(w, "last problem: %s\n", s.Error)
	}
}

func printLearned(w io.Writer, l control.Learned) {
	if !l.Supported {
		fmt.Fprintln(w, "the NIC does not report learned addresses (its driver has no address learning)")
	}
	if len(l.Spoofed) > 0 {
		fmt.Fprintf(w, "spoofed-source drops: %s\n", kv(l.Spoofed))
	}
	if len(l.Addresses) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "PORT\tVM\tMAC\tADDRESS\tPOLICY\tREPORTS\tANNOUNCED\tFIRST\tLAST")
		for _, a := range l.Addresses {
			pol := "owned"
			if !a.Owned {
				pol = "NOT OWNED (spoofed)"
			}
			vm := a.VM
			if vm == "" {
				vm = "-"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", a.Port, vm, a.MAC, a.Addr, pol, a.Reports, a.Announced,
				a.First.UTC().Format(time.RFC3339), a.Last.UTC().Format(time.RFC3339))
		}
		tw.Flush()
	} else if l.Supported {
		fmt.Fprintln(w, "no learned addresses")
	}
	for _, a := range l.Announcements {
		var notes []string
		if a.First {
			notes = append(notes, "first on this host: arrived")
		}
		if !a.Local {
			notes = append(notes, "not local in the policy")
		}
		if !a.Owned {
			notes = append(notes, "not the VM's address")
		}
		vm := a.VM
		if vm == "" {
			vm = "port " + strconv.Itoa(int(a.Port))
		}
		line := fmt.Sprintf("announcement %s %s announced %s (%s) on port %d", a.At.UTC().Format(time.RFC3339), vm, a.Addr, a.MAC, a.Port)
		if len(notes) > 0 {
			line += " [" + strings.Join(notes, "; ") + "]"
		}
		fmt.Fprintln(w, line)
	}
}

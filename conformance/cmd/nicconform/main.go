// Command nicconform runs nicpath's conformance suite against a NIC driver
// on the interfaces a user names, and writes a report: JUnit XML for CI,
// JSON, and a Markdown page with the capability matrix and every case's
// outcome. Progress goes to stderr, one line per case.
//
//	nicconform -driver softnic -out report
//	nicconform -driver xdp -ports veth0,veth1 -uplink veth2 -out report
//	nicconform -driver tcflower -ports p1,p2 -uplink up -tunnels vxlan=vx0 -out report
//	nicconform -driver xdp -ports veth0,veth1 -uplink veth2 -differential
//
// For softnic the ports are in memory and named by -ports and -uplink. For
// the device drivers they are Linux interfaces in the current namespace (or
// -netns); the harness sends and receives on each one's far side: its veth
// peer, or the interface named in -peers (the one cabled to it). The suite
// sends only frames addressed within 198.18.0.0/15 and 2001:db8::/32 to and
// from those far sides.
//
// The device drivers are opened with a table of -max-rules rules and a
// bound of -max-batch operations per Apply, where the driver takes them,
// so that the full-table and too-large cases can fill and exceed them.
//
// Every case is reported as pass, fail, skip (naming the capability the
// NIC does not advertise that the case needs, and quoting what the NIC
// says of it in its capabilities' notes) or documented (a difference
// from softnic the driver documents, with the capability and the reason);
// a documented case that passes, or a documented name that matches no case,
// fails the run. The reports carry the environment: the kernel release,
// the driver, each interface's driver, version and firmware as ethtool -i
// shows them, and nicpath's version from the binary's build information.
//
// Exit status: 0 when every case passed, was skipped or is documented, 1
// when a case failed, 2 when the driver could not be opened or the command
// line is wrong.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/nicpath/nicpath/conformance"
	"github.com/nicpath/nicpath/conformance/internal/devices"
	"github.com/nicpath/nicpath/conformance/internal/targets"
	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// config is the command line.
type config struct {
	driver       string
	ports        devices.Ports
	mode         string // xdp
	placement    string // tcflower
	out          string
	formats      []string
	run          string
	differential bool
	list         bool
	timeout      time.Duration
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func parse(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("nicconform", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	var ports, uplinks, peers, tunnels, formats, run string
	fs.StringVar(&c.driver, "driver", "", "driver to open: "+strings.Join(driverNames(), ", "))
	fs.StringVar(&ports, "ports", "", "the NIC's vports, comma separated (softnic: names; default vm1,vm2)")
	fs.StringVar(&uplinks, "uplink", "", "the NIC's uplink(s), comma separated (softnic default: uplink)")
	fs.StringVar(&peers, "peers", "", "far side of each port, vports then uplinks (default: each interface's veth peer)")
	fs.StringVar(&c.ports.NetNS, "netns", "", "path of the network namespace the interfaces are in (default: the current one)")
	fs.StringVar(&tunnels, "tunnels", "", "tcflower: flow-based tunnel devices, e.g. vxlan=vx0,geneve=gnv0")
	fs.IntVar(&c.ports.MaxRules, "max-rules", 512, "table size to open the NIC with, where the driver takes one (small enough for the full-table case)")
	fs.IntVar(&c.ports.MaxBatch, "max-batch", 256, "operations per Apply to open the NIC with, where the driver takes a bound (small enough for the too-large case)")
	fs.StringVar(&c.mode, "mode", "auto", "xdp: attach mode: auto, driver or generic")
	fs.StringVar(&c.placement, "placement", "any", "tcflower: where rules may live: any, software or hardware")
	fs.StringVar(&c.out, "out", ".", "directory the reports are written to")
	fs.StringVar(&formats, "format", "junit,json,md", "report formats: junit, json, md")
	fs.StringVar(&run, "run", "", "run only the cases that match, as go test -run does (e.g. match/vlan, ^encap$/geneve)")
	fs.BoolVar(&c.differential, "differential", false, "compare the driver with softnic on the same rules and frames instead of running the suite")
	fs.BoolVar(&c.list, "list", false, "list the cases and exit")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Minute, "bound on the whole run")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.list {
		return &c, nil
	}
	if c.driver == "" {
		return nil, errors.New("-driver is required")
	}
	c.ports.VPorts, c.ports.Uplinks, c.ports.Peers = splitList(ports), splitList(uplinks), splitList(peers)
	if tunnels != "" {
		c.ports.Tunnels = map[hal.EncapKind]string{}
		for _, kv := range splitList(tunnels) {
			k, v, ok := strings.Cut(kv, "=")
			kind, known := map[string]hal.EncapKind{"vxlan": hal.EncapVXLAN, "geneve": hal.EncapGeneve, "nvgre": hal.EncapNVGRE}[k]
			if !ok || !known || v == "" {
				return nil, fmt.Errorf("-tunnels: %q is not kind=device with kind vxlan, geneve or nvgre", kv)
			}
			c.ports.Tunnels[kind] = v
		}
	}
	for _, f := range splitList(formats) {
		if f != "junit" && f != "json" && f != "md" {
			return nil, fmt.Errorf("-format: unknown format %q (junit, json, md)", f)
		}
		c.formats = append(c.formats, f)
	}
	if err := conformance.CheckRunPattern(run); err != nil {
		return nil, fmt.Errorf("-run: %w", err)
	}
	c.run = run
	return &c, nil
}

// softnicTarget opens softnic in memory with the named ports.
func softnicTarget(p devices.Ports) (conformance.Target, error) {
	vports, uplinks := p.VPorts, p.Uplinks
	if len(vports) == 0 && len(uplinks) == 0 {
		vports, uplinks = []string{"vm1", "vm2"}, []string{"uplink"}
	}
	if len(vports)+len(uplinks) < 2 {
		return conformance.Target{}, errors.New("softnic: the suite needs at least two ports")
	}
	tg := targets.Softnic(func(c *softnic.Config) {
		c.Ports = nil
		for i, n := range vports {
			c.Ports = append(c.Ports, softnic.PortConfig{Name: n, Kind: hal.PortVPort, MAC: hal.MAC{0x02, 0, 0, 0, 1, byte(i)}})
		}
		for i, n := range uplinks {
			c.Ports = append(c.Ports, softnic.PortConfig{Name: n, Kind: hal.PortUplink, MAC: hal.MAC{0x02, 0, 0, 0, 2, byte(i)}, MTU: 1600})
		}
		if p.MaxRules > 0 {
			c.MaxRules = p.MaxRules
		}
		if p.MaxBatch > 0 {
			c.MaxBatch = p.MaxBatch
		}
	})
	tg.Name = fmt.Sprintf("softnic (in memory: %s)", strings.Join(append(append([]string(nil), vports...), uplinks...), ","))
	return tg, nil
}

// opener opens a driver as a target; err says why it is unavailable.
type opener func(c *config) (conformance.Target, error)

var drivers = map[string]opener{
	"softnic": func(c *config) (conformance.Target, error) { return softnicTarget(c.ports) },
}

func driverNames() []string {
	return []string{"softnic", "xdp", "tcflower"}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c, err := parse(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "nicconform:", err)
		}
		return 2
	}
	if c.list {
		for _, cs := range conformance.Cases() {
			fmt.Fprintf(stdout, "%-12s %s\n", cs[0], cs[1])
		}
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	var rep *conformance.Report
	open, ok := drivers[c.driver]
	var tg conformance.Target
	if !ok {
		err = fmt.Errorf("driver %q is not available in this build (available: %s)", c.driver, strings.Join(available(), ", "))
	} else {
		tg, err = open(c)
	}
	opts := conformance.Options{Run: c.run, Progress: stderr}
	switch {
	case err != nil:
		// Still write the reports, so that CI shows why nothing ran.
		rep = &conformance.Report{Target: c.driver, Mode: conformance.ModeSuite, Started: time.Now().UTC(), Error: err.Error(),
			Environment: conformance.HostEnvironment(),
			Cases:       []conformance.CaseResult{{Name: "open", Status: conformance.StatusFail, Reason: err.Error()}}}
		rep.Summary = conformance.Summary{Total: 1, Fail: 1}
		fmt.Fprintln(stderr, "nicconform:", err)
	case c.differential:
		ref, _ := softnicTarget(devices.Ports{MaxRules: c.ports.MaxRules, MaxBatch: c.ports.MaxBatch})
		fmt.Fprintf(stderr, "nicconform: differential: %s against %s\n", tg.Name, ref.Name)
		rep = conformance.Differential(ctx, ref, tg, opts)
	default:
		fmt.Fprintf(stderr, "nicconform: running the suite against %s\n", tg.Name)
		rep = conformance.RunSuite(ctx, tg, opts)
	}
	files, werr := write(c, rep)
	for _, f := range files {
		fmt.Fprintln(stderr, "nicconform: wrote", f)
	}
	if werr != nil {
		fmt.Fprintln(stderr, "nicconform:", werr)
		return 2
	}
	summary(stdout, rep)
	switch {
	case rep.Error != "":
		return 2
	case rep.Failed():
		return 1
	}
	return 0
}

// summary prints the counts, the environment, the capabilities whose
// absence skipped cases and the documented differences with their
// outcome.
func summary(w io.Writer, rep *conformance.Report) {
	s := rep.Summary
	fmt.Fprintf(w, "%s: %d cases: %d pass, %d fail, %d skip, %d documented\n", rep.Target, s.Total, s.Pass, s.Fail, s.Skip, s.Documented)
	if e := rep.Environment; e != nil {
		fmt.Fprintf(w, "environment: %s\n", e)
	}
	var order []string
	missing := map[string]int{}
	for _, c := range rep.Cases {
		if c.Status != conformance.StatusSkip || c.Missing == "" || strings.HasPrefix(c.Reason, "every subcase skipped") {
			continue
		}
		if missing[c.Missing] == 0 {
			order = append(order, c.Missing)
		}
		missing[c.Missing]++
	}
	for _, m := range order {
		fmt.Fprintf(w, "skipped, needs %s: %d\n", m, missing[m])
	}
	for _, d := range rep.Documented {
		st := "not run"
		if c, ok := rep.Case(d.Case); ok {
			st = string(c.Status)
		}
		fmt.Fprintf(w, "documented %s (%s): %s: %s\n", d.Case, d.Capability, st, d.Reason)
	}
}

func available() []string {
	var out []string
	for _, n := range driverNames() {
		if _, ok := drivers[n]; ok {
			out = append(out, n)
		}
	}
	return out
}

// write writes the report in every asked format.
func write(c *config, rep *conformance.Report) ([]string, error) {
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		return nil, err
	}
	writers := map[string]struct {
		file  string
		write func(io.Writer, *conformance.Report) error
	}{
		"junit": {"conformance.junit.xml", conformance.WriteJUnit},
		"json":  {"conformance.json", conformance.WriteJSON},
		"md":    {"conformance.md", conformance.WriteMarkdown},
	}
	var files []string
	for _, f := range c.formats {
		w := writers[f]
		path := filepath.Join(c.out, w.file)
		fh, err := os.Create(path)
		if err != nil {
			return files, err
		}
		err = w.write(fh, rep)
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return files, fmt.Errorf("%s: %w", path, err)
		}
		files = append(files, path)
	}
	return files, nil
}

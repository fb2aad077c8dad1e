package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/store"
	_ "github.com/nicpath/nicpath/store/etcd" // registers etcd:// with store.Open
	"github.com/nicpath/nicpath/store/migrate"
)

const usage = `usage:
  nicstore serve -listen HOST:PORT [-peer HOST:PORT] -data DIR [-unsafe-no-fsync]
  nicstore [-store SPEC] publish POLICY.yaml
  nicstore [-store SPEC] show
  nicstore [-store SPEC] status
  nicstore [-store SPEC] migrate [-timeout 30s] VM HOST
  nicstore [-store SPEC] leases`

// errUsage is a command line that cannot be run (exit code 2).
var errUsage = errors.New(usage)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := dispatch(ctx, args, stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, err)
		return 2
	default:
		fmt.Fprintln(stderr, "nicstore:", err)
		return 1
	}
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("nicstore", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	def := os.Getenv("NICPATH_STORE")
	if def == "" {
		def = "etcd://127.0.0.1:2379/nicpath/"
	}
	spec := fs.String("store", def, "the store: etcd://HOST:PORT[,HOST:PORT…]/PREFIX/")
	if err := fs.Parse(args); err != nil || fs.NArg() == 0 {
		return errUsage
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	if cmd == "serve" {
		return serve(ctx, rest, stdout)
	}
	switch {
	case cmd == "publish" && len(rest) == 1, cmd == "show" && len(rest) == 0, cmd == "status" && len(rest) == 0, cmd == "migrate",
		cmd == "leases" && len(rest) == 0:
	default:
		return errUsage
	}
	var st *policy.State
	if cmd == "publish" {
		// A file that does not load is reported before the store is
		// touched.
		var err error
		if st, err = policy.LoadFile(rest[0]); err != nil {
			return err
		}
	}
	opened, err := store.Open(*spec, 0)
	if err != nil {
		return err
	}
	defer opened.Close()
	s, ok := opened.(migrate.Store)
	if !ok {
		return fmt.Errorf("%s cannot be written", *spec)
	}
	switch cmd {
	case "publish":
		rev, err := migrate.New(s, nil).Publish(ctx, st)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "published %s to %s at revision %d: %d hosts, %d VMs, %d mappings\n",
			rest[0], *spec, rev, len(st.Hosts()), len(st.VMs()), st.MappingCount())
		return nil
	case "show":
		snap, err := s.Load(ctx)
		if err != nil {
			return err
		}
		doc, err := policy.Marshal(snap.State)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "# %s at revision %d\n%s", *spec, snap.Revision, doc)
		return nil
	case "status":
		return printStatus(ctx, s, stdout)
	case "leases":
		return printLeases(ctx, opened, *spec, stdout)
	case "migrate":
		mf := flag.NewFlagSet("migrate", flag.ContinueOnError)
		mf.SetOutput(io.Discard)
		timeout := mf.Duration("timeout", 30*time.Second, "how long to wait for every host at each step")
		if err := mf.Parse(rest); err != nil || mf.NArg() != 2 {
			return errUsage
		}
		log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
		m, err := migrate.New(s, log).Migrate(ctx, mf.Arg(0), mf.Arg(1),
			migrate.Options{InstallTimeout: *timeout, ActivateTimeout: *timeout})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "migrated %s from %s to %s (generation %d): shadow installed everywhere in %s, activation reported in %s, revisions %d/%d/%d\n",
			m.VM, m.From, m.To, m.Generation, m.Install.Round(time.Microsecond), m.Activate.Round(time.Microsecond),
			m.ShadowRev, m.ActivationRev, m.FinishRev)
		if len(m.Lagging) > 0 {
			fmt.Fprintf(stdout, "hosts that had not reported the activation (they catch up from the store): %s\n", strings.Join(m.Lagging, ", "))
		}
		return nil
	}
	return errUsage
}

func printStatus(ctx context.Context, s migrate.Store, w io.Writer) error {
	snap, err := s.Load(ctx)
	if err != nil {
		return err
	}
	sts, _, err := s.Statuses(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "store at revision %d\n", snap.Revision)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tREVISION\tSTATE\tSHADOWS\tREPORTED\tERROR")
	var hosts []string
	for _, h := range snap.State.Hosts() {
		hosts = append(hosts, h.Name)
	}
	for h := range sts {
		if _, ok := snap.State.Host(h); !ok {
			hosts = append(hosts, h)
		}
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		st, ok := sts[h]
		if !ok {
			fmt.Fprintf(tw, "%s\t-\tnever reported\t\t\t\n", h)
			continue
		}
		// A host's revision is the store's revision when it last applied
		// a state; the store's own revision also counts status reports,
		// so the two are not compared.
		state := "following"
		if st.Stale {
			state = "STALE since " + st.StaleSince.Format(time.RFC3339)
		}
		var shadows []string
		for vm, gen := range st.Installed {
			shadows = append(shadows, fmt.Sprintf("%s:%d(active %d)", vm, gen, st.Active[vm]))
		}
		sort.Strings(shadows)
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", h, st.Revision, state, strings.Join(shadows, " "),
			st.Time.Format(time.RFC3339Nano), st.Error)
	}
	return tw.Flush()
}

// serve runs a one-member etcd server until ctx is done. It prints "ready"
// and the client address once clients can connect: with port 0 in -listen
// (and in -peer, which then defaults to port 0 as well) the kernel picks the
// port when etcd binds, and the ready line names it, with no window in which
// another process could take a port picked before.
func serve(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	listen := fs.String("listen", "127.0.0.1:2379", "client address")
	peer := fs.String("peer", "", "peer address (default: the client host, port 2380)")
	data := fs.String("data", "", "data directory")
	noFsync := fs.Bool("unsafe-no-fsync", false, "do not wait for the disk on writes (demos on a laptop; never production)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 || *data == "" {
		return errUsage
	}
	if *peer == "" {
		host, port := *listen, "2380"
		if i := strings.LastIndex(host, ":"); i >= 0 {
			if host[i+1:] == "0" {
				port = "0"
			}
			host = host[:i]
		}
		*peer = host + ":" + port
	}
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = "nicstore", *data
	cu, err := url.Parse("http://" + *listen)
	if err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	pu, err := url.Parse("http://" + *peer)
	if err != nil {
		return fmt.Errorf("-peer: %w", err)
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.UnsafeNoFsync = *noFsync
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		return errors.New("etcd: not ready within 60s")
	case <-ctx.Done():
		return nil
	}
	addr := *listen
	if len(e.Clients) > 0 && strings.HasSuffix(addr, ":0") {
		addr = e.Clients[0].Addr().String() // the port the kernel picked
	}
	fmt.Fprintf(stdout, "ready: etcd://%s/ (data in %s)\n", addr, *data)
	select {
	case <-ctx.Done():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("etcd: %w", err)
	}
}

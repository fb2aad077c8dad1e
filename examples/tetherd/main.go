// Command tetherd runs one end of a relocated subnet's tunnel: the anchor
// in the data center or the tether at the remote site (package tether does
// the work; this is its command line).
//
// Usage:
//
//	tetherd -role anchor -config relocated.yaml -policy policy.yaml -host anchor -key anchor.key [-control anchor.sock]
//	tetherd -role tether -config relocated.yaml -policy policy.yaml -subnet branch -key tether.key -leases leases.json [-control tether.sock]
//	tetherd -check -config relocated.yaml -policy policy.yaml
//	tetherd keygen PRIVATE PUBLIC [name]
//
// The policy names each relocated subnet (its relocated entries: tenant,
// VNET, prefix, pool, anchor host, tether name, key and timers) and gives
// the anchor the subnet's pool as mappings; the configuration holds what
// only the two ends know, by the subnet's name: the anchor's public
// endpoint and key, the tether's ports, path MTU and lease time (see
// tether.Config). A policy or configuration with any problem is refused
// with its file, line and field, and nothing starts. Key files are drivers/remote's format
// (keygen writes a pair). The tether keeps its leases in the -leases file
// (tether/lease.FileKV), so that a restart hands every node its address
// again. vswitchctl -s SOCKET tether | leases shows the tunnel and the
// leases.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nicpath/nicpath/drivers/remote"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/tether"
	"github.com/nicpath/nicpath/tether/lease"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stderr))
}

func run(ctx context.Context, args []string, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "keygen" {
		if len(args) < 3 || len(args) > 4 {
			fmt.Fprintln(stderr, "usage: tetherd keygen PRIVATE PUBLIC [name]")
			return 2
		}
		name := ""
		if len(args) == 4 {
			name = args[3]
		}
		pub, err := remote.GenerateKeyFiles(rand.Reader, args[1], args[2], name)
		if err != nil {
			fmt.Fprintln(stderr, "tetherd:", err)
			return 1
		}
		fmt.Fprintln(stderr, pub)
		return 0
	}
	fs := flag.NewFlagSet("tetherd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	role := fs.String("role", "", "anchor or tether")
	cfgPath := fs.String("config", "", "the relocated subnets' configuration")
	polPath := fs.String("policy", "", "the policy file")
	host := fs.String("host", "", "anchor: its host name in the policy")
	subnet := fs.String("subnet", "", "tether: the relocated subnet it serves")
	keyPath := fs.String("key", "", "this end's private key file")
	leases := fs.String("leases", "", "tether: the file its leases are kept in")
	ctl := fs.String("control", "", "control socket (vswitchctl -s)")
	check := fs.Bool("check", false, "check the configuration against the policy and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	fail := func(err error) int { fmt.Fprintln(stderr, "tetherd:", err); return 1 }
	cfg, err := tether.LoadConfig(*cfgPath)
	if err != nil {
		return fail(err)
	}
	st, err := policy.LoadFile(*polPath)
	if err != nil {
		return fail(err)
	}
	if err := cfg.CheckPolicy(st); err != nil {
		return fail(err)
	}
	if *check {
		fmt.Fprintf(stderr, "%s: %d relocated subnets, consistent with %s\n", *cfgPath, len(cfg.Subnets), *polPath)
		return 0
	}
	key, err := remote.LoadPrivateKey(*keyPath)
	if err != nil {
		return fail(err)
	}
	var h tether.ControlHandler
	var wait func()
	switch *role {
	case "anchor":
		n, err := tether.StartAnchorNode(ctx, tether.AnchorNodeOptions{Config: cfg, Host: *host, State: st, Key: key, Logger: log})
		if err != nil {
			return fail(err)
		}
		h.Status, wait = n.Status, n.Wait
		go watchPolicy(ctx, *polPath, cfg, n, log)
	case "tether":
		r, ok := cfg.Find(*subnet)
		if !ok {
			return fail(fmt.Errorf("no relocated subnet %q in %s", *subnet, *cfgPath))
		}
		vn, _ := st.VNET(r.Tenant, r.VNET)
		kv, err := lease.OpenFile(*leases)
		if err != nil {
			return fail(err)
		}
		n, err := tether.StartTetherNode(ctx, tether.TetherNodeOptions{Config: cfg, Subnet: *subnet, VNI: vn.VNI, Key: key, KV: kv, Logger: log})
		if err != nil {
			return fail(err)
		}
		h.Status, wait = n.Status, n.Wait
		h.Leases = func(context.Context) ([]lease.Lease, error) { return n.Broker.Leases(), nil }
	default:
		fmt.Fprintln(stderr, "tetherd: -role anchor or -role tether")
		return 2
	}
	if *ctl != "" {
		go func() {
			if err := tether.ServeControl(ctx, *ctl, h); err != nil {
				log.Error("control socket", "err", err)
			}
		}()
	}
	wait()
	return 0
}

// watchPolicy applies the policy file's changes to the anchor, as vswitchd
// does to its switch: a file that does not load, or that the configuration
// does not hold against, is logged and the running policy kept.
func watchPolicy(ctx context.Context, path string, cfg *tether.Config, n *tether.AnchorNode, log *slog.Logger) {
	last, _ := os.Stat(path)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fi, err := os.Stat(path)
		if err != nil || (last != nil && fi.ModTime().Equal(last.ModTime()) && fi.Size() == last.Size()) {
			continue
		}
		last = fi
		st, err := policy.LoadFile(path)
		if err == nil {
			err = n.SetState(cfg, st)
		}
		if err != nil {
			log.Error("policy change refused; the running policy stays", "err", err)
			continue
		}
		log.Info("policy applied", "file", path)
	}
}

// Command nicd is the NIC side of a SmartNIC or DPU deployment: it opens a
// NIC through a driver (softnic, xdp or tcflower) and serves it to the
// host's vswitch over the secure channel (drivers/remote), on a unix
// socket, TCP and vsock. The host opens it with the remote driver.
//
// Usage:
//
//	nicd keygen -key nic.key -pub nic.pub [-name dpu0]
//	nicd serve -config nicd.yaml [-check]
//
// keygen writes a fresh Curve25519 key pair: the private key file (mode
// 0600; never overwritten) and the public key file the host pins. The
// host makes its own pair the same way and gives nicd its public file.
//
// The configuration is drivers/remote/nicside's (see its package doc).
//
// nicd serves until SIGINT or SIGTERM. A host that goes away changes
// nothing on the NIC: it keeps forwarding on its rules until a host
// reconnects and reconciles.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/nicpath/nicpath/drivers/remote"
	"github.com/nicpath/nicpath/drivers/remote/nicside"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "nicd:", err)
		os.Exit(1)
	}
}

// run is nicd with its arguments; ready, when set, is called with the
// addresses served once every listener is up (tests).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, ready func([]string)) error {
	if len(args) == 0 {
		return errors.New("usage: nicd keygen -key FILE -pub FILE [-name NAME] | nicd serve -config FILE [-check]")
	}
	switch args[0] {
	case "keygen":
		return keygen(args[1:], stdout)
	case "serve":
		fs := flag.NewFlagSet("nicd serve", flag.ContinueOnError)
		fs.SetOutput(stderr)
		cfgPath := fs.String("config", "", "configuration file (YAML)")
		check := fs.Bool("check", false, "check the configuration and the keys, then exit")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *cfgPath == "" {
			return errors.New("serve: -config is required")
		}
		cfg, err := nicside.LoadConfig(*cfgPath)
		if err != nil {
			return err
		}
		if *check {
			fmt.Fprintf(stdout, "%s: ok (driver %s, %d host keys, listen %v)\n", *cfgPath, cfg.Driver, cfg.HostKeys(), cfg.Listen)
			return nil
		}
		log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.Level()}))
		return nicside.Serve(ctx, cfg, log, ready)
	}
	return fmt.Errorf("unknown command %q: want keygen or serve", args[0])
}

func keygen(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("nicd keygen", flag.ContinueOnError)
	key := fs.String("key", "", "private key file to write (mode 0600)")
	pub := fs.String("pub", "", "public key file to write, for the peer to pin")
	name := fs.String("name", "", "a name for the key, written beside it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *key == "" || *pub == "" {
		return errors.New("keygen: -key and -pub are required")
	}
	k, err := remote.GenerateKeyFiles(nil, *key, *pub, *name)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	fmt.Fprintf(stdout, "public key %s\nwrote %s (private, 0600) and %s (give it to the peer to pin)\n", k, *key, *pub)
	return nil
}

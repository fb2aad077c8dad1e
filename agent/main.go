package agent

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// Main is vswitchd's command line: it parses args, runs the daemon until ctx
// is done and returns the exit code. A program that registers more stores
// (store/etcd/cmd/vswitchd imports the etcd store) calls it from its main.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return MainWith(ctx, args, stdout, stderr, MainOptions{})
}

// MainOptions extend Main for a program built with more than this module
// (directory/dht/cmd/vswitchd: the DHT directory).
type MainOptions struct {
	// Flags adds the program's own flags.
	Flags func(fs *flag.FlagSet)
	// Prepare is called with the loaded configuration before the daemon
	// starts (not with -check): it may set cfg.Directory. Its cleanup,
	// if any, runs once the daemon stopped.
	Prepare func(ctx context.Context, cfg *Config) (cleanup func(), err error)
	// Started, when set, is given the running agent (tests).
	Started func(*Agent)
}

// MainWith is Main with opts.
func MainWith(ctx context.Context, args []string, stdout, stderr io.Writer, opts MainOptions) int {
	fs := flag.NewFlagSet("vswitchd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (YAML)")
	check := fs.Bool("check", false, "check the configuration and the policy, then exit")
	format := fs.String("log-format", "text", "log format: text or json")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: vswitchd -config FILE [-check] [-log-format text|json]")
		fs.PrintDefaults()
	}
	if opts.Flags != nil {
		opts.Flags(fs)
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cfgPath == "" || fs.NArg() > 0 || (*format != "text" && *format != "json") {
		fs.Usage()
		return 2
	}
	cfg, err := LoadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "vswitchd: configuration rejected:")
		fmt.Fprintln(stderr, err)
		return 1
	}
	if cfg.Gateway != nil {
		return gatewayMain(ctx, cfg, *check, *format, stdout, stderr)
	}
	if *check {
		if err := CheckPolicy(cfg); err != nil {
			fmt.Fprintln(stderr, "vswitchd: policy rejected:")
			fmt.Fprintln(stderr, err)
			return 1
		}
		if cfg.Store != "" {
			fmt.Fprintf(stdout, "%s is valid and the state in %s runs on %s\n", cfg.File, cfg.Store, cfg.Host)
		} else {
			fmt.Fprintf(stdout, "%s and %s are valid\n", cfg.File, cfg.Policy)
		}
		return 0
	}
	hopts := &slog.HandlerOptions{Level: cfg.LogLevel}
	var h slog.Handler = slog.NewTextHandler(stderr, hopts)
	if *format == "json" {
		h = slog.NewJSONHandler(stderr, hopts)
	}
	log := slog.New(h)
	cfg.Logger = log
	if opts.Prepare != nil {
		cleanup, err := opts.Prepare(ctx, cfg)
		if err != nil {
			fmt.Fprintln(stderr, "vswitchd:", err)
			return 1
		}
		if cleanup != nil {
			defer cleanup()
		}
	}
	d, err := New(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "vswitchd:", err)
		return 1
	}
	if opts.Started != nil {
		opts.Started(d)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if _, err := d.Reload(ctx); err != nil {
					log.Warn("reload on SIGHUP", "err", err)
				}
			}
		}
	}()
	return runAndClose(ctx, d.Run, d.Close, stderr)
}

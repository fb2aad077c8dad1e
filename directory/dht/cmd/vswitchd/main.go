// Command vswitchd is examples/vswitchd built with the DHT directory: the
// same daemon, configuration and control socket, and in addition
//
//	vswitchd -config vswitchd.yaml -dht dht.yaml
//
// runs this host's DHT node from dht.yaml (see Config) and resolves every
// other host's VM on demand through it (agent.Directory): the switch runs
// on the policy and this host's VMs, a destination's mapping is looked up
// on its first packet, and stats, explain and the metrics
// (nicpath_ondemand_*) say what the lookups did. It lives in the DHT's
// module because the core module does not depend on libp2p.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nicpath/nicpath/agent"
	"github.com/nicpath/nicpath/directory/dht"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil))
}

// run is main's work; started, when set, is given the running agent.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, started func(*agent.Agent)) int {
	var path string
	return agent.MainWith(ctx, args, stdout, stderr, agent.MainOptions{
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&path, "dht", "", "the DHT node's configuration (YAML); without it the daemon runs on the replicated state")
		},
		Prepare: func(ctx context.Context, cfg *agent.Config) (func(), error) {
			if path == "" {
				return nil, nil
			}
			dc, err := LoadConfig(path)
			if err != nil {
				return nil, err
			}
			n, err := dht.New(ctx, dc.Node)
			if err != nil {
				return nil, err
			}
			jctx, cancel := context.WithTimeout(ctx, dc.JoinTimeout)
			err = n.Join(jctx)
			cancel()
			if err != nil {
				n.Close()
				return nil, fmt.Errorf("joining the DHT: %w", err)
			}
			cfg.Logger.Info("joined the DHT", "peer", n.Host.ID(), "addrs", n.Host.Addrs(), "routing_table", n.DHT.RoutingTable().Size())
			cfg.Directory = &agent.Directory{Resolver: n, Cache: dc.Cache, QueueLen: dc.QueueLen, MaxQueues: dc.MaxQueues}
			return func() { n.Close() }, nil
		},
		Started: started,
	})
}

// defaultJoin bounds the wait for the bootstrap peers.
const defaultJoin = 30 * time.Second

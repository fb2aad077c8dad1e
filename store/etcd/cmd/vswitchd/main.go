// Command vswitchd is examples/vswitchd built with the etcd store: the same
// daemon, configuration and control socket, and in addition
//
//	store: etcd://192.0.2.1:2379[,HOST:PORT…]/PREFIX/
//
// in its configuration makes it follow an etcd cluster's desired state
// (see agent.Config.Store). It lives in the etcd module
// because the core module does not depend on etcd.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/nicpath/nicpath/agent"
	_ "github.com/nicpath/nicpath/store/etcd" // registers etcd:// with store.Open
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(agent.Main(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

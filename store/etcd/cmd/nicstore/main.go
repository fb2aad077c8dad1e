// Command nicstore works the desired state in etcd: it publishes a policy
// file, shows what is stored and what every host reports, and migrates a VM
// the way store/migrate does (shadow, wait for every host, one
// activation record, clean-up). For demos and tests it also runs a
// one-member etcd server (serve); production uses a real etcd cluster.
//
// Usage:
//
//	nicstore serve -listen 127.0.0.1:2379 [-peer 127.0.0.1:2380] -data DIR [-unsafe-no-fsync]
//	nicstore [-store etcd://HOST:PORT/PREFIX/] publish POLICY.yaml
//	nicstore [-store …] show
//	nicstore [-store …] status
//	nicstore [-store …] migrate [-timeout 30s] VM HOST
//	nicstore [-store …] leases
//
// serve prints "ready: etcd://HOST:PORT/" once clients can connect; with
// port 0 (-listen 127.0.0.1:0) the kernel picks the ports and the line
// names the client's.
//
// leases lists the relocated subnets' leases a tether keeps in the store
// (package tether/lease, under PREFIX/leases/).
//
// -store defaults to $NICPATH_STORE, then etcd://127.0.0.1:2379/nicpath/.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

package agent

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nicpath/nicpath/hal"
)

// The gateway host's metrics: its counters (gateway.Stats) and the NIC's
// ports and drops, read at scrape time.
var (
	descGwConns = prometheus.NewDesc("nicpath_gateway_connections",
		"Translated connections the gateway tracks now.", nil, nil)
	descGwCreated = prometheus.NewDesc("nicpath_gateway_connections_created_total",
		"Translated connections created, by who opened them (tenant: a VM; external: a host toward a published address).", []string{"opened_by"}, nil)
	descGwExpired = prometheus.NewDesc("nicpath_gateway_connections_removed_total",
		"Connections removed: idle, or no longer allowed (or moved) by a new policy.", nil, nil)
	descGwPlaced = prometheus.NewDesc("nicpath_gateway_connections_placed_total",
		"Connections by where their packets are handled: nic (both rules on the gateway's NIC) or host (the NIC refused a rule, or ICMP echo).", []string{"where"}, nil)
	descGwHostPackets = prometheus.NewDesc("nicpath_gateway_host_packets_total",
		"Packets the gateway translated in software (first packets, ICMP echo, connections on the host path).", nil, nil)
	descGwRefused = prometheus.NewDesc("nicpath_gateway_refused_total",
		"Tenant packets the policy refuses at the gateway, by policy reason (counted on the host; later ones drop on the NIC's drop rule).", []string{"reason"}, nil)
	descGwDrops = prometheus.NewDesc("nicpath_gateway_drops_total",
		"Other packets the gateway dropped, by reason (no-connection, non-first-fragment, icmp-error-no-connection, neighbor-unresolved, ttl, …).", []string{"reason"}, nil)
	descGwNeighbor = prometheus.NewDesc("nicpath_gateway_neighbor_messages_total",
		"Neighbour resolution on the external network, by message: arp_reply and nd_advert (the gateway's addresses answered), arp_request and nd_solicit (next hops asked for).", []string{"message"}, nil)
	descGwNeighborMoves = prometheus.NewDesc("nicpath_gateway_neighbor_moves_total",
		"Next hops on the external network that announced a new MAC (a router replaced or failed over); their connections' rules follow it.", nil, nil)
	descGwICMPErrors = prometheus.NewDesc("nicpath_gateway_icmp_errors_total",
		"ICMP errors about translated connections (port unreachable, fragmentation needed / packet too big, time exceeded…) sent on to their VMs.", nil, nil)
)

// gatewayCollector reads a gateway host's counters at scrape time.
type gatewayCollector struct{ a *GatewayAgent }

func (c gatewayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descGwConns, descGwCreated, descGwExpired, descGwPlaced, descGwHostPackets,
		descGwRefused, descGwDrops, descGwNeighbor, descGwICMPErrors, descPortPackets, descDrops, descGwNeighborMoves} {
		ch <- d
	}
}

func (c gatewayCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.a.gw.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	ch <- prometheus.MustNewConstMetric(descGwConns, prometheus.GaugeValue, float64(s.Conns))
	counter(descGwCreated, s.NewConns-s.Inbound, "tenant")
	counter(descGwCreated, s.Inbound, "external")
	counter(descGwExpired, s.Expired)
	counter(descGwPlaced, s.Offloaded, "nic")
	counter(descGwPlaced, s.HostPath, "host")
	counter(descGwHostPackets, s.HostPackets)
	for r, v := range s.Refused {
		counter(descGwRefused, v, r)
	}
	for r, v := range s.Drops {
		counter(descGwDrops, v, r)
	}
	counter(descGwNeighbor, s.ARPReplies, "arp_reply")
	counter(descGwNeighbor, s.ARPRequests, "arp_request")
	counter(descGwNeighbor, s.NDReplies, "nd_advert")
	counter(descGwNeighbor, s.NDRequests, "nd_solicit")
	counter(descGwICMPErrors, s.ICMPErrors)
	counter(descGwNeighborMoves, s.NeighborMoves)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if ns, err := c.a.nic.Stats(ctx); err == nil {
		for r, v := range ns.Drops {
			if v > 0 {
				counter(descDrops, v, "nic", hal.Reason(r).String())
			}
		}
	}
	for _, p := range c.a.nic.Ports() {
		pc, err := c.a.nic.PortCounters(ctx, p.ID)
		if err != nil {
			continue
		}
		counter(descPortPackets, pc.Rx.Packets, p.Name, "rx")
		counter(descPortPackets, pc.Tx.Packets, p.Name, "tx")
	}
}

// MetricsHandler serves the gateway host's Prometheus metrics.
func (a *GatewayAgent) MetricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(gatewayCollector{a})
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelWarn)})
}

// On-demand resolution: with a Directory, the switch runs on the policy
// and this host's VMs, and every other VM's mapping is looked up when a
// packet first needs it (directory/ondemand).

package agent

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nicpath/nicpath/control"
	"github.com/nicpath/nicpath/directory"
	"github.com/nicpath/nicpath/directory/ondemand"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
)

// Directory plugs a mapping directory into the agent: the hook a program
// built with a directory module (directory/dht's vswitchd) fills in, so
// that this module needs none of the directory's dependencies. It is not
// read from the configuration file.
type Directory struct {
	// Resolver answers the mappings (a DHT node, a
	// directory.StateResolver, a test's fake).
	Resolver directory.Resolver
	// Cache sets the TTLs and the lookup timeout (directory's defaults).
	Cache directory.CacheConfig
	// QueueLen bounds the packets held per destination while it is
	// looked up, MaxQueues the destinations (ondemand's defaults).
	QueueLen, MaxQueues int
	// Revalidate is how often records whose TTL expired are looked up
	// again (default: half the cache's TTL).
	Revalidate time.Duration
}

// startOnDemand puts the layer in front of the switch, which it gives
// the part of st this host runs.
func (d *Agent) startOnDemand(ctx context.Context, st *policy.State) error {
	dc := d.cfg.Directory
	vmOf := make(map[hal.PortID]string, len(d.plan.vmPort))
	for vm, p := range d.plan.vmPort {
		vmOf[p] = vm
	}
	l, err := ondemand.New(ctx, ondemand.Config{Switch: d.sw, Host: d.cfg.Host, VMOf: vmOf, Uplink: d.plan.uplink,
		Resolver: dc.Resolver, Cache: dc.Cache, QueueLen: dc.QueueLen, MaxQueues: dc.MaxQueues}, st)
	if err != nil {
		return fmt.Errorf("on-demand resolution: %w", err)
	}
	d.od = l
	return nil
}

// handleExceptions is the switch's Handler with a directory.
func (d *Agent) handleExceptions(ctx context.Context, batch []hal.Exception) error {
	return d.od.HandleBatch(ctx, batch)
}

// runOnDemand walks the packets of finished lookups and revalidates
// expired records until ctx is done.
func (d *Agent) runOnDemand(ctx context.Context) {
	every := d.cfg.Directory.Revalidate
	if every <= 0 {
		ttl := d.cfg.Directory.Cache.TTL
		if ttl <= 0 {
			ttl = 30 * time.Second
		}
		every = ttl / 2
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.od.Ready():
			if err := d.od.Release(ctx); err != nil && ctx.Err() == nil {
				d.log.Warn("releasing resolved packets", "err", err)
			}
		case <-t.C:
			if err := d.od.Revalidate(ctx); err != nil && ctx.Err() == nil {
				d.log.Warn("revalidating directory records", "err", err)
			}
		}
	}
}

// applyState gives the switch a new desired state, through the layer
// when there is one.
func (d *Agent) applyState(ctx context.Context, st *policy.State) error {
	if d.od != nil {
		return d.od.Update(ctx, st)
	}
	return d.sw.Update(ctx, st)
}

// explainDirectory adds what the directory layer knows of the packet's
// destination (or, arriving on the uplink, its sender) when the packet
// needs a lookup: it is held, or was dropped, before the switch sees it.
func (d *Agent) explainDirectory(x *control.Explanation, vm string, uplink bool, vni uint32, src, dst netip.Addr) {
	if d.od == nil {
		return
	}
	addr := dst
	if uplink {
		addr = src
	}
	dest, ok := d.od.Need(vm, uplink, vni, addr)
	if !ok {
		return
	}
	text := "directory: " + d.od.Explain(dest.VNI, dest.CA)
	x.Text = text + "\n" + x.Text
	x.Directory = text
}

// onDemandStats are the layer's counters as control reports them.
func (d *Agent) onDemandStats() *control.OnDemandStats {
	if d.od == nil {
		return nil
	}
	s := d.od.Stats()
	return &control.OnDemandStats{Lookups: s.Cache.Lookups, Hits: s.Cache.Hits, Misses: s.Cache.Misses,
		Negative: s.NotFound, DroppedQueueFull: s.DroppedQueueFull, DroppedTimeout: s.DroppedTimeout,
		DroppedError: s.DroppedError, Held: s.Held, Released: s.Released, QueueDepth: s.Queued}
}

var (
	descODLookups = prometheus.NewDesc("nicpath_ondemand_lookups_total",
		"Mappings looked up in the directory (on a miss of the layer's cache, or to revalidate an expired record).", nil, nil)
	descODHits = prometheus.NewDesc("nicpath_ondemand_cache_hits_total",
		"Mappings the on-demand layer's cache answered without a lookup.", nil, nil)
	descODMisses = prometheus.NewDesc("nicpath_ondemand_cache_misses_total",
		"Mappings the on-demand layer's cache did not hold.", nil, nil)
	descODNegative = prometheus.NewDesc("nicpath_ondemand_negative_total",
		"Lookups the directory answered with no record (the packets are dropped by the switch as unknown destinations; the answer is cached for the negative TTL).", nil, nil)
	descODDrops = prometheus.NewDesc("nicpath_ondemand_drops_total",
		"Packets held for a directory lookup and dropped, by reason: queue_full (the destination's queue, or the number of destinations being looked up, was full), timeout (the lookup timed out) or error (the lookup failed).", []string{"reason"}, nil)
	descODQueue = prometheus.NewDesc("nicpath_ondemand_queue_depth",
		"Packets held now while their destination is looked up.", nil, nil)
	descODHeld = prometheus.NewDesc("nicpath_ondemand_held_total",
		"Packets held while their destination was looked up.", nil, nil)
)

func describeOnDemand(ch chan<- *prometheus.Desc) {
	for _, x := range []*prometheus.Desc{descODLookups, descODHits, descODMisses, descODNegative, descODDrops, descODQueue, descODHeld} {
		ch <- x
	}
}

func (d *Agent) collectOnDemand(ch chan<- prometheus.Metric) {
	s := d.onDemandStats()
	if s == nil {
		return
	}
	c := func(desc *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
	}
	c(descODLookups, s.Lookups)
	c(descODHits, s.Hits)
	c(descODMisses, s.Misses)
	c(descODNegative, s.Negative)
	c(descODDrops, s.DroppedQueueFull, "queue_full")
	c(descODDrops, s.DroppedTimeout, "timeout")
	c(descODDrops, s.DroppedError, "error")
	c(descODHeld, s.Held)
	ch <- prometheus.MustNewConstMetric(descODQueue, prometheus.GaugeValue, float64(s.QueueDepth))
}

package agent

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nicpath/nicpath/hal"
)

// metrics are the daemon's Prometheus metrics. Counters the switch and the
// NIC keep themselves (flows, exceptions, drops) are read at scrape time by
// the collector; what only the daemon sees (rule programming, policy
// reloads, captures) is recorded as it happens.
type metrics struct {
	reg *prometheus.Registry

	programming *prometheus.HistogramVec // seconds per Apply / Activate call
	ruleOps     *prometheus.CounterVec   // operations by kind
	ruleErrors  *prometheus.CounterVec   // failed operations by kind and error class
	policy      *prometheus.CounterVec   // policy file changes by result
	captured    prometheus.Counter
}

func newMetrics(d *Agent) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		programming: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nicpath_rule_programming_seconds",
			Help: "Time of one rule programming call to the NIC (a batched Apply, or an Activate).",
			// From a few microseconds (softnic) to a second (a slow device).
			Buckets: prometheus.ExponentialBuckets(2e-6, 4, 11),
		}, []string{"call"}),
		ruleOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nicpath_rule_operations_total",
			Help: "Rule operations sent to the NIC, by kind.",
		}, []string{"op"}),
		ruleErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nicpath_rule_programming_errors_total",
			Help: "Rule operations and activations the NIC refused or failed, by kind and error.",
		}, []string{"op", "error"}),
		policy: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nicpath_policy_updates_total",
			Help: "Policy file changes, by result: applied, rejected (the file did not load; the running state was kept) or failed (the switch could not apply it).",
		}, []string{"result"}),
		captured: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nicpath_capture_packets_total",
			Help: "Exception-path packets written to captures.",
		}),
	}
	m.reg.MustRegister(m.programming, m.ruleOps, m.ruleErrors, m.policy, m.captured, &collector{d: d})
	for _, r := range []string{"applied", "rejected", "failed"} {
		m.policy.WithLabelValues(r)
	}
	return m
}

func (m *metrics) observeApply(d time.Duration, ops []hal.Op, results []hal.OpResult) {
	m.programming.WithLabelValues("apply").Observe(d.Seconds())
	for i := range ops {
		op := ops[i].Kind.String()
		m.ruleOps.WithLabelValues(op).Inc()
		if i < len(results) && results[i].Err != nil {
			m.ruleErrors.WithLabelValues(op, errClass(results[i].Err)).Inc()
		}
	}
}

func (m *metrics) observeActivate(d time.Duration, err error) {
	m.programming.WithLabelValues("activate").Observe(d.Seconds())
	if err != nil {
		m.ruleErrors.WithLabelValues("activate", errClass(err)).Inc()
	}
}

// collector reads the switch's and the NIC's counters at scrape time.
type collector struct{ d *Agent }

var (
	descFlows = prometheus.NewDesc("nicpath_flows",
		"Unified flows in the switch's cache, by where their packets are handled (nic or host).", []string{"location"}, nil)
	descExceptions = prometheus.NewDesc("nicpath_exceptions_total",
		"Packets the NIC handed to the host on the exception path, by reason.", []string{"reason"}, nil)
	descDrops = prometheus.NewDesc("nicpath_drops_total",
		"Packets dropped outside the policy, by where (host: the vswitch; nic: the NIC) and reason.", []string{"where", "reason"}, nil)
	descPolicyDrops = prometheus.NewDesc("nicpath_policy_drops_total",
		"Packets the policy drops, executed in the host, by reason (drops on the NIC are in the flows' counters).", []string{"reason"}, nil)
	descFallbacks = prometheus.NewDesc("nicpath_fallbacks_total",
		"Times a flow was left in (or moved to) the host instead of the NIC, by reason.", []string{"reason"}, nil)
	descFlowsCreated = prometheus.NewDesc("nicpath_flows_created_total",
		"First packets that created a unified flow.", nil, nil)
	descOffloaded = prometheus.NewDesc("nicpath_flows_offloaded_total",
		"Flow rules that landed on the NIC.", nil, nil)
	descPortPackets = prometheus.NewDesc("nicpath_port_packets_total",
		"Packets through each NIC port, by direction.", []string{"port", "direction"}, nil)
	descPolicyRejected = prometheus.NewDesc("nicpath_policy_rejected",
		"1 while the policy file (or the store's state) is one the daemon refused, until one it applies, or the running policy's own file, replaces it; the switch runs the policy loaded before.", nil, nil)
	descPolicyLastRejection = prometheus.NewDesc("nicpath_policy_last_rejection_timestamp_seconds",
		"When the daemon last refused a policy file (or a store's state), in seconds since the epoch; 0 if it never did.", nil, nil)
	descStoreRevision = prometheus.NewDesc("nicpath_store_revision",
		"The store revision whose desired state the switch applies (daemons that follow a store).", nil, nil)
	descStoreStale = prometheus.NewDesc("nicpath_store_stale",
		"1 while the store cannot be reached and the switch forwards on its last state.", nil, nil)
	descStoreResyncs = prometheus.NewDesc("nicpath_store_resyncs_total",
		"Full reloads from the store after the first: reconnections and compactions.", nil, nil)
	descSpoofed = prometheus.NewDesc("nicpath_spoofed_source_drops_total",
		"Packets a VM sent from a MAC or address its policy does not give it, all dropped (anti-spoofing), by VM: in the host and on the NIC together.", []string{"vm"}, nil)
	descLearned = prometheus.NewDesc("nicpath_learned_addresses_total",
		"Source addresses the NIC reported its vports using, by whether the policy gives the port's VM that MAC and address (owned: yes or no).", []string{"owned"}, nil)
	descReconciles = prometheus.NewDesc("nicpath_reconciles_total",
		"Reconciliations of the NIC's table with the switch's flows (at start, after a driver error, after the NIC reconnected), by result: ok, or failed (the table could not be read; the switch tries again).", []string{"result"}, nil)
	descAnnouncements = prometheus.NewDesc("nicpath_address_announcements_total",
		"Gratuitous ARPs and unsolicited neighbour advertisements the NIC reported (a VM announcing itself, e.g. after it moved).", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descFlows, descExceptions, descDrops, descPolicyDrops, descFallbacks,
		descFlowsCreated, descOffloaded, descPortPackets, descPolicyRejected, descPolicyLastRejection,
		descStoreRevision, descStoreStale, descStoreResyncs, descSpoofed, descLearned, descAnnouncements, descReconciles} {
		ch <- d
	}
	describeOnDemand(ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	st := d.sw.Stats()
	ch <- prometheus.MustNewConstMetric(descFlows, prometheus.GaugeValue, float64(st.FlowsNIC), "nic")
	ch <- prometheus.MustNewConstMetric(descFlows, prometheus.GaugeValue, float64(st.FlowsHost), "host")
	for r := hal.Reason(0); r < hal.NumReasons; r++ {
		if v := st.Exceptions[r]; v > 0 || r == hal.ReasonMiss {
			ch <- prometheus.MustNewConstMetric(descExceptions, prometheus.CounterValue, float64(v), r.String())
		}
	}
	for r, v := range st.Drops {
		ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, float64(v), "host", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if ns, err := d.nic.Stats(ctx); err == nil {
		for r := hal.Reason(0); r < hal.NumReasons; r++ {
			if v := ns.Drops[r]; v > 0 {
				ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, float64(v), "nic", r.String())
			}
		}
	}
	for r, v := range st.PolicyDrops {
		ch <- prometheus.MustNewConstMetric(descPolicyDrops, prometheus.CounterValue, float64(v), r)
	}
	for r, v := range st.Fallbacks {
		ch <- prometheus.MustNewConstMetric(descFallbacks, prometheus.CounterValue, float64(v), r)
	}
	for vm, v := range st.Spoofed {
		ch <- prometheus.MustNewConstMetric(descSpoofed, prometheus.CounterValue, float64(v), vm)
	}
	if d.nic.Capabilities().AddressLearning {
		ch <- prometheus.MustNewConstMetric(descLearned, prometheus.CounterValue, float64(st.Learned-st.LearnedNotOwned), "yes")
		ch <- prometheus.MustNewConstMetric(descLearned, prometheus.CounterValue, float64(st.LearnedNotOwned), "no")
		ch <- prometheus.MustNewConstMetric(descAnnouncements, prometheus.CounterValue, float64(st.Announcements))
	}
	ch <- prometheus.MustNewConstMetric(descFlowsCreated, prometheus.CounterValue, float64(st.FlowsCreated))
	ch <- prometheus.MustNewConstMetric(descOffloaded, prometheus.CounterValue, float64(st.Offloaded))
	ch <- prometheus.MustNewConstMetric(descReconciles, prometheus.CounterValue, float64(st.Reconciles-st.ReconcileFailed), "ok")
	ch <- prometheus.MustNewConstMetric(descReconciles, prometheus.CounterValue, float64(st.ReconcileFailed), "failed")
	for _, p := range d.nic.Ports() {
		pc, err := d.nic.PortCounters(ctx, p.ID)
		if err != nil {
			continue
		}
		name := d.portLabel(p)
		ch <- prometheus.MustNewConstMetric(descPortPackets, prometheus.CounterValue, float64(pc.Rx.Packets), name, "rx")
		ch <- prometheus.MustNewConstMetric(descPortPackets, prometheus.CounterValue, float64(pc.Tx.Packets), name, "tx")
	}
	d.mu.Lock()
	rejected, last := 0.0, 0.0
	if d.rejection != nil {
		rejected = 1
	}
	if !d.lastRejected.IsZero() {
		last = float64(d.lastRejected.UnixNano()) / 1e9
	}
	d.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descPolicyRejected, prometheus.GaugeValue, rejected)
	ch <- prometheus.MustNewConstMetric(descPolicyLastRejection, prometheus.GaugeValue, last)
	d.collectOnDemand(ch)
	if ss := d.storeStatus(); ss != nil {
		stale := 0.0
		if ss.Stale {
			stale = 1
		}
		ch <- prometheus.MustNewConstMetric(descStoreRevision, prometheus.GaugeValue, float64(ss.Revision))
		ch <- prometheus.MustNewConstMetric(descStoreStale, prometheus.GaugeValue, stale)
		ch <- prometheus.MustNewConstMetric(descStoreResyncs, prometheus.CounterValue, float64(ss.Resyncs))
	}
}

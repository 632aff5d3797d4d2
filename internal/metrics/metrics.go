// Package metrics exposes the worker's Prometheus metrics: counters and
// histograms the handlers update as calls complete, and gauges read from
// Redis at scrape time (outbox backlog, dead letters, limits, cooldowns and
// asynq's queues), so that every worker reports the shared state.
package metrics

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/limits"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

const ns = "purgeq"

// Metrics are the handlers' counters and histograms.
type Metrics struct {
	Calls       *prometheus.CounterVec   // kind, outcome
	Items       *prometheus.CounterVec   // kind
	Fill        *prometheus.HistogramVec // kind: items per call ÷ cap
	RateLimited *prometheus.CounterVec   // scope
	Latency     prometheus.Histogram     // enqueue to call, seconds
}

// New registers the metrics and the scrape-time collector on reg.
func New(reg prometheus.Registerer, state State) *Metrics {
	m := &Metrics{
		Calls: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "api_calls_total",
			Help: "Cloudflare purge calls by kind and outcome (accepted, rate_limited, transient, permanent, misconfigured)."}, []string{"kind", "outcome"}),
		Items: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "items_purged_total",
			Help: "Items in accepted purge calls."}, []string{"kind"}),
		Fill: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "batch_fill_ratio",
			Help:    "Items per call divided by the cap for the kind.",
			Buckets: []float64{0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1}}, []string{"kind"}),
		RateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "rate_limited_total",
			Help: "429 answers by scope (global, flex, url)."}, []string{"scope"}),
		Latency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "enqueue_to_call_seconds",
			Help:    "Time from a call's oldest item entering the outbox to the call being accepted.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14)}),
	}
	reg.MustRegister(m.Calls, m.Items, m.Fill, m.RateLimited, m.Latency, &collector{state: state},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Observe records one call's outcome; scope is set for rate_limited.
func (m *Metrics) Observe(c *tasks.Call, outcome string, scope purge.Scope, cap int) {
	m.Calls.WithLabelValues(string(c.Kind), outcome).Inc()
	if outcome == "rate_limited" {
		m.RateLimited.WithLabelValues(string(scope)).Inc()
	}
	if outcome != "accepted" {
		return
	}
	m.Items.WithLabelValues(string(c.Kind)).Add(float64(len(c.Items)))
	m.Fill.WithLabelValues(string(c.Kind)).Observe(float64(len(c.Items)) / float64(cap))
	m.Latency.Observe(time.Since(time.UnixMilli(c.Oldest)).Seconds())
}

// State is where the collector reads the shared state at scrape time.
type State struct {
	Outbox    *batching.Outbox
	Dead      *batching.DeadLetters
	Limiter   *limits.Limiter
	Inspector *asynq.Inspector
	Zones     tasks.Zones
	Log       zerolog.Logger
}

var (
	descDepth     = prometheus.NewDesc(ns+"_outbox_items", "Items waiting in the outbox.", []string{"zone", "kind"}, nil)
	descOldest    = prometheus.NewDesc(ns+"_outbox_oldest_seconds", "Age of the oldest waiting item.", []string{"zone", "kind"}, nil)
	descDead      = prometheus.NewDesc(ns+"_dead_letter_entries", "Entries in the dead-letter queue.", nil, nil)
	descResent    = prometheus.NewDesc(ns+"_resent_calls_total", "Calls sent again after an attempt with an unknown outcome (possible duplicate purges).", nil, nil)
	descRemaining = prometheus.NewDesc(ns+"_limit_remaining", "Capacity left: global window slots, flex bucket tokens, URL bucket tokens.", []string{"scope"}, nil)
	descCooldown  = prometheus.NewDesc(ns+"_cooldown_active", "1 while a cooldown stops the scope's calls.", []string{"scope"}, nil)
	descQueue     = prometheus.NewDesc(ns+"_queue_tasks", "asynq tasks by queue and state.", []string{"queue", "state"}, nil)
)

// laneGauge is the outbox backlog of one zone and kind.
type laneGauge struct {
	zone, kind string
	depth      int64
	oldest     time.Time // zero when nothing waits
}

// byZoneKind folds lanes into one gauge per zone (by name when configured)
// and kind, in a stable order. A zone and kind has a soft and a hard lane,
// but the metrics are labelled by zone and kind only: their depths add up
// and the oldest item is the older of the two. (Two series with the same
// labels would fail the whole scrape.)
func byZoneKind(lanes []batching.LaneStat, names map[string]string) []laneGauge {
	var out []laneGauge
	at := map[[2]string]int{}
	for _, l := range lanes {
		zone := names[l.Lane.Zone]
		if zone == "" {
			zone = l.Lane.Zone
		}
		key := [2]string{zone, string(l.Lane.Kind)}
		i, ok := at[key]
		if !ok {
			i = len(out)
			at[key] = i
			out = append(out, laneGauge{zone: zone, kind: string(l.Lane.Kind)})
		}
		g := &out[i]
		g.depth += l.Depth
		if !l.Oldest.IsZero() && (g.oldest.IsZero() || l.Oldest.Before(g.oldest)) {
			g.oldest = l.Oldest
		}
	}
	slices.SortFunc(out, func(a, b laneGauge) int {
		return cmp.Or(cmp.Compare(a.zone, b.zone), cmp.Compare(a.kind, b.kind))
	})
	return out
}

// collector reads the shared state at scrape time.
type collector struct{ state State }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDepth, descOldest, descDead, descResent, descRemaining, descCooldown, descQueue} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	s := c.state
	names := map[string]string{}
	for _, z := range s.Zones {
		names[z.ID] = z.Name
	}
	if lanes, err := s.Outbox.LaneStats(ctx); err == nil {
		for _, g := range byZoneKind(lanes, names) {
			ch <- prometheus.MustNewConstMetric(descDepth, prometheus.GaugeValue, float64(g.depth), g.zone, g.kind)
			if !g.oldest.IsZero() {
				ch <- prometheus.MustNewConstMetric(descOldest, prometheus.GaugeValue, time.Since(g.oldest).Seconds(), g.zone, g.kind)
			}
		}
	} else {
		s.Log.Warn().Err(err).Msg("metrics: reading the outbox failed")
	}
	if n, err := s.Dead.Count(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(descDead, prometheus.GaugeValue, float64(n))
	}
	if n, err := s.Outbox.Resent(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(descResent, prometheus.CounterValue, float64(n))
	}
	if st, err := s.Limiter.State(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(descRemaining, prometheus.GaugeValue, float64(st.GlobalRemaining), string(purge.ScopeGlobal))
		ch <- prometheus.MustNewConstMetric(descRemaining, prometheus.GaugeValue, float64(st.FlexTokens), string(purge.ScopeFlex))
		ch <- prometheus.MustNewConstMetric(descRemaining, prometheus.GaugeValue, float64(st.URLTokens), string(purge.ScopeURL))
		for _, scope := range []purge.Scope{purge.ScopeGlobal, purge.ScopeFlex, purge.ScopeURL} {
			active := 0.0
			if _, ok := st.Cooldowns[scope]; ok {
				active = 1
			}
			ch <- prometheus.MustNewConstMetric(descCooldown, prometheus.GaugeValue, active, string(scope))
		}
	}
	for _, q := range []string{tasks.QueueRequests, tasks.QueueCalls, tasks.QueueDead} {
		info, err := s.Inspector.GetQueueInfo(q)
		if err != nil {
			continue // the queue does not exist yet
		}
		for state, n := range map[string]int{"pending": info.Pending, "active": info.Active, "scheduled": info.Scheduled,
			"retry": info.Retry, "archived": info.Archived, "completed": info.Completed} {
			ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(n), q, state)
		}
	}
}

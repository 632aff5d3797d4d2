// Package metrics exposes the worker's Prometheus metrics: counters and
// histograms the handlers update as calls complete (each worker its own
// calls), and gauges of the state all workers share (outbox backlog, dead
// letters, limits, cooldowns and asynq's queues), read from Redis at scrape
// time by the one worker that holds the export lease (lease.go). Summed
// over the workers, either kind is the deployment's true value.
// docs/metrics.md lists every series with the PromQL for dashboards and
// alerts.
package metrics

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/limits"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

const ns = "purgeq"

// DefaultLease is how long the export lease lasts unless renewed.
const DefaultLease = 20 * time.Second

// Metrics are the handlers' counters and histograms.
type Metrics struct {
	Calls       *prometheus.CounterVec   // account, kind, outcome
	Items       *prometheus.CounterVec   // account, kind
	Fill        *prometheus.HistogramVec // account, kind: items per call ÷ cap
	RateLimited *prometheus.CounterVec   // account, scope
	Latency     *prometheus.HistogramVec // account: enqueue to call, seconds
	lease       *lease
}

// Account is one Cloudflare account whose limits the metrics show.
type Account struct {
	Name   string
	Limits interface {
		State(context.Context) (limits.State, error)
	}
}

// State is where the collector reads the shared state at scrape time.
type State struct {
	Redis     redis.UniversalClient // holds the export lease
	Outbox    *batching.Outbox
	Dead      *batching.DeadLetters
	Inspector *asynq.Inspector
	// Accounts lists the accounts, each with its limiter; called at every
	// scrape by the lease holder.
	Accounts func() []Account
	// Zone names a zone id and its account (an unknown zone: the id and
	// the default account).
	Zone func(zoneID string) (name, account string)
	// TopZones is how many zone backlogs (zone and kind) get series of
	// their own, the deepest first; 0: none.
	TopZones int
	// Lease is how long the export lease lasts unless renewed (0:
	// DefaultLease); Run renews it three times as often.
	Lease time.Duration
	Log   zerolog.Logger
}

// New registers the metrics and the scrape-time collector on reg.
func New(reg prometheus.Registerer, state State) *Metrics {
	ttl := cmp.Or(state.Lease, DefaultLease)
	m := &Metrics{
		Calls: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "api_calls_total",
			Help: "Cloudflare purge calls by account, kind and outcome (accepted, rate_limited, transient, permanent, misconfigured)."}, []string{"account", "kind", "outcome"}),
		Items: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "items_purged_total",
			Help: "Items in accepted purge calls."}, []string{"account", "kind"}),
		Fill: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "batch_fill_ratio",
			Help:    "Items per call divided by the cap for the kind.",
			Buckets: []float64{0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1}}, []string{"account", "kind"}),
		RateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "rate_limited_total",
			Help: "429 answers by account and scope (global, flex, url)."}, []string{"account", "scope"}),
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "enqueue_to_call_seconds",
			Help:    "Time from a call's oldest item entering the outbox to the call being accepted.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14)}, []string{"account"}),
		lease: newLease(state.Redis, ttl),
	}
	reg.MustRegister(m.Calls, m.Items, m.Fill, m.RateLimited, m.Latency, &collector{state: state, lease: m.lease},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Observe records one call's outcome; scope is set for rate_limited.
func (m *Metrics) Observe(c *tasks.Call, account, outcome string, scope purge.Scope, cap int) {
	m.Calls.WithLabelValues(account, string(c.Kind), outcome).Inc()
	if outcome == "rate_limited" {
		m.RateLimited.WithLabelValues(account, string(scope)).Inc()
	}
	if outcome != "accepted" {
		return
	}
	m.Items.WithLabelValues(account, string(c.Kind)).Add(float64(len(c.Items)))
	m.Fill.WithLabelValues(account, string(c.Kind)).Observe(float64(len(c.Items)) / float64(cap))
	m.Latency.WithLabelValues(account).Observe(time.Since(time.UnixMilli(c.Oldest)).Seconds())
}

// Run keeps the export lease renewed (or takes it when it is free) until
// ctx ends, then gives it up for good, so that another worker takes it
// over at once. Without Run a worker still takes or renews the lease when
// scraped.
func (m *Metrics) Run(ctx context.Context) { m.lease.run(ctx) }

var (
	descExporter     = prometheus.NewDesc(ns+"_metrics_exporter", "1 on the worker that holds the export lease and exports the shared state, else 0.", nil, nil)
	descDepth        = prometheus.NewDesc(ns+"_outbox_items", "Items waiting in the outbox, by account and kind.", []string{"account", "kind"}, nil)
	descOldest       = prometheus.NewDesc(ns+"_outbox_oldest_seconds", "Age of the oldest waiting item, by account and kind.", []string{"account", "kind"}, nil)
	descZoneDepth    = prometheus.NewDesc(ns+"_outbox_zone_items", "Items waiting in the outbox for the deepest zone backlogs (PURGE_METRICS_TOP_ZONES of them).", []string{"account", "zone", "kind"}, nil)
	descZoneOldest   = prometheus.NewDesc(ns+"_outbox_zone_oldest_seconds", "Age of the oldest waiting item of the zone backlogs in purgeq_outbox_zone_items.", []string{"account", "zone", "kind"}, nil)
	descDead         = prometheus.NewDesc(ns+"_dead_letter_entries", "Entries in the dead-letter queue.", nil, nil)
	descResent       = prometheus.NewDesc(ns+"_resent_calls_total", "Calls sent again after an attempt with an unknown outcome (possible duplicate purges).", nil, nil)
	descRemaining    = prometheus.NewDesc(ns+"_limit_remaining", "Capacity left by account: global window slots, flex bucket tokens, URL bucket tokens.", []string{"account", "scope"}, nil)
	descCooldown     = prometheus.NewDesc(ns+"_cooldown_active", "1 while a cooldown stops the account's calls of the scope.", []string{"account", "scope"}, nil)
	descQueue        = prometheus.NewDesc(ns+"_queue_tasks", "asynq tasks by queue and state.", []string{"queue", "state"}, nil)
	descQueueLatency = prometheus.NewDesc(ns+"_queue_latency_seconds", "How long the oldest pending task of the asynq queue has waited.", []string{"queue"}, nil)
)

// labels name one outbox series.
type labels struct{ account, zone, kind string }

// backlog is what waits in the outbox under one set of labels.
type backlog struct {
	labels
	depth  int64
	oldest time.Time // zero when nothing waits
}

// fold adds backlogs up under the labels key gives them: depths add up and
// the oldest item is the oldest of them. A zone and kind has soft, hard
// and priority lanes, but the series are labelled by zone and kind at most
// (two series with the same labels would fail the whole scrape).
func fold(in []backlog, key func(labels) labels) []backlog {
	var out []backlog
	at := map[labels]int{}
	for _, b := range in {
		k := key(b.labels)
		i, ok := at[k]
		if !ok {
			i = len(out)
			at[k] = i
			out = append(out, backlog{labels: k})
		}
		g := &out[i]
		g.depth += b.depth
		if !b.oldest.IsZero() && (g.oldest.IsZero() || b.oldest.Before(g.oldest)) {
			g.oldest = b.oldest
		}
	}
	return out
}

// byZone folds lanes into one backlog per zone (named by zone) and kind.
func byZone(lanes []batching.LaneStat, zone func(string) (string, string)) []backlog {
	in := make([]backlog, len(lanes))
	for i, l := range lanes {
		name, account := zone(l.Lane.Zone)
		in[i] = backlog{labels{account, name, string(l.Lane.Kind)}, l.Depth, l.Oldest}
	}
	return fold(in, func(l labels) labels { return l })
}

// byAccount folds zone backlogs into one per account and kind.
func byAccount(zones []backlog) []backlog {
	return fold(zones, func(l labels) labels { return labels{account: l.account, kind: l.kind} })
}

// top returns the n deepest backlogs, the older first among equals, in a
// stable order.
func top(zones []backlog, n int) []backlog {
	zones = slices.Clone(zones)
	slices.SortFunc(zones, func(a, b backlog) int {
		return cmp.Or(cmp.Compare(b.depth, a.depth), a.oldest.Compare(b.oldest),
			cmp.Compare(a.account, b.account), cmp.Compare(a.zone, b.zone), cmp.Compare(a.kind, b.kind))
	})
	return zones[:min(n, len(zones))]
}

// collector reads the shared state at scrape time, when it holds the lease.
type collector struct {
	state State
	lease *lease
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descExporter, descDepth, descOldest, descZoneDepth, descZoneOldest, descDead,
		descResent, descRemaining, descCooldown, descQueue, descQueueLatency} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	held, err := c.lease.hold(ctx)
	if err != nil {
		c.state.Log.Warn().Err(err).Msg("metrics: taking the export lease failed; this scrape leaves out the shared state")
	}
	ch <- gauge(descExporter, flag(held))
	if !held {
		// purgeq_outbox_items is on every worker's /metrics, whatever
		// waits: 0 here, the holder's series carry the backlog
		send(descDepth, descOldest, c.byAccount(nil), accountKind, ch)
		return
	}
	c.outbox(ctx, ch)
	s := c.state
	if n, err := s.Dead.Count(ctx); err == nil {
		ch <- gauge(descDead, float64(n))
	}
	if n, err := s.Outbox.Resent(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(descResent, prometheus.CounterValue, float64(n))
	}
	c.limits(ctx, ch)
	for _, q := range []string{tasks.QueueRequests, tasks.QueueCalls, tasks.QueueDead, tasks.QueueCallbacks} {
		info, err := s.Inspector.GetQueueInfo(q)
		if err != nil {
			continue // the queue does not exist yet
		}
		for state, n := range map[string]int{"pending": info.Pending, "active": info.Active, "scheduled": info.Scheduled,
			"retry": info.Retry, "archived": info.Archived, "completed": info.Completed} {
			ch <- gauge(descQueue, float64(n), q, state)
		}
		ch <- gauge(descQueueLatency, info.Latency.Seconds(), q)
	}
}

// outbox exports the backlog per account and kind, and per zone and kind
// for the TopZones deepest.
func (c *collector) outbox(ctx context.Context, ch chan<- prometheus.Metric) {
	lanes, err := c.state.Outbox.LaneStats(ctx)
	if err != nil {
		c.state.Log.Warn().Err(err).Msg("metrics: reading the outbox failed")
		return
	}
	zones := byZone(lanes, c.state.Zone)
	send(descDepth, descOldest, c.byAccount(zones), accountKind, ch)
	send(descZoneDepth, descZoneOldest, top(zones, c.state.TopZones), func(l labels) []string { return []string{l.account, l.zone, l.kind} }, ch)
}

// byAccount folds zone backlogs into one per account and kind, with a 0
// for every account's kind that has nothing waiting.
func (c *collector) byAccount(zones []backlog) []backlog {
	var all []backlog
	for _, a := range c.state.Accounts() {
		for _, k := range purge.Kinds {
			all = append(all, backlog{labels: labels{account: a.Name, kind: string(k)}})
		}
	}
	return byAccount(append(all, zones...))
}

func accountKind(l labels) []string { return []string{l.account, l.kind} }

// send exports backlogs as depth and (when something waits) oldest.
func send(depth, oldest *prometheus.Desc, bs []backlog, values func(labels) []string, ch chan<- prometheus.Metric) {
	for _, b := range bs {
		ch <- gauge(depth, float64(b.depth), values(b.labels)...)
		if !b.oldest.IsZero() {
			ch <- gauge(oldest, time.Since(b.oldest).Seconds(), values(b.labels)...)
		}
	}
}

// limits exports each account's remaining capacity and cooldowns.
func (c *collector) limits(ctx context.Context, ch chan<- prometheus.Metric) {
	seen := map[string]bool{}
	for _, a := range c.state.Accounts() {
		if seen[a.Name] {
			continue // a second series with the same labels would fail the scrape
		}
		seen[a.Name] = true
		st, err := a.Limits.State(ctx)
		if err != nil {
			c.state.Log.Warn().Err(err).Str("account", a.Name).Msg("metrics: reading the limits failed")
			continue
		}
		ch <- gauge(descRemaining, float64(st.GlobalRemaining), a.Name, string(purge.ScopeGlobal))
		ch <- gauge(descRemaining, float64(st.FlexTokens), a.Name, string(purge.ScopeFlex))
		ch <- gauge(descRemaining, float64(st.URLTokens), a.Name, string(purge.ScopeURL))
		for _, scope := range []purge.Scope{purge.ScopeGlobal, purge.ScopeFlex, purge.ScopeURL} {
			_, active := st.Cooldowns[scope]
			ch <- gauge(descCooldown, flag(active), a.Name, string(scope))
		}
	}
}

func gauge(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func flag(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

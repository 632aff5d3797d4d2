package metrics

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/keyspace"
	"github.com/purgeq/purgeq/internal/testredis"
	"github.com/purgeq/purgeq/internal/testwait"
	"github.com/purgeq/purgeq/limits"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

var srv *testredis.Server

func TestMain(m *testing.M) { testredis.Main(m, &srv) }

func TestFold(t *testing.T) {
	t0 := time.UnixMilli(1_700_000_000_000)
	lane := func(zone string, kind purge.Kind, soft bool, prio string, depth int64, oldest time.Time) batching.LaneStat {
		return batching.LaneStat{Lane: batching.Lane{Zone: zone, Kind: kind, Soft: soft, Priority: prio}, Depth: depth, Oldest: oldest}
	}
	zone := func(id string) (string, string) {
		switch id {
		case "z1":
			return "example.com", "main"
		case "z2":
			return "example.org", "main"
		case "z3":
			return "brand.example", "brand"
		}
		return id, "default"
	}
	b := func(account, zone, kind string, depth int64, oldest time.Time) backlog {
		return backlog{labels{account, zone, kind}, depth, oldest}
	}
	for _, tc := range []struct {
		name            string
		lanes           []batching.LaneStat
		zones, accounts []backlog
	}{
		{"none", nil, nil, nil},
		{"one lane, named zone", []batching.LaneStat{lane("z1", purge.Files, false, "", 3, t0)},
			[]backlog{b("main", "example.com", "files", 3, t0)}, []backlog{b("main", "", "files", 3, t0)}},
		{"unknown zone keeps its id, default account", []batching.LaneStat{lane("z9", purge.Tags, true, "", 2, t0)},
			[]backlog{b("default", "z9", "tags", 2, t0)}, []backlog{b("default", "", "tags", 2, t0)}},
		{"soft, hard and priority lanes of one zone and kind add up, oldest wins", []batching.LaneStat{
			lane("z1", purge.Files, false, "", 3, t0.Add(time.Second)),
			lane("z1", purge.Files, true, "", 4, t0),
			lane("z1", purge.Files, false, "high", 1, t0.Add(2*time.Second)),
		}, []backlog{b("main", "example.com", "files", 8, t0)}, []backlog{b("main", "", "files", 8, t0)}},
		{"an empty lane has no oldest", []batching.LaneStat{
			lane("z1", purge.Tags, false, "", 0, time.Time{}),
			lane("z1", purge.Tags, true, "", 5, t0),
		}, []backlog{b("main", "example.com", "tags", 5, t0)}, []backlog{b("main", "", "tags", 5, t0)}},
		{"zones of one account add up per kind; accounts and kinds stay apart", []batching.LaneStat{
			lane("z1", purge.Files, false, "", 1, t0),
			lane("z2", purge.Files, false, "", 2, t0.Add(-time.Second)),
			lane("z2", purge.Tags, false, "", 4, t0),
			lane("z3", purge.Files, false, "", 8, t0),
		}, []backlog{b("main", "example.com", "files", 1, t0), b("main", "example.org", "files", 2, t0.Add(-time.Second)),
			b("main", "example.org", "tags", 4, t0), b("brand", "brand.example", "files", 8, t0)},
			[]backlog{b("main", "", "files", 3, t0.Add(-time.Second)), b("main", "", "tags", 4, t0), b("brand", "", "files", 8, t0)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			zones := byZone(tc.lanes, zone)
			if !slices.Equal(zones, tc.zones) {
				t.Errorf("byZone = %+v, want %+v", zones, tc.zones)
			}
			if got := byAccount(zones); !slices.Equal(got, tc.accounts) {
				t.Errorf("byAccount = %+v, want %+v", got, tc.accounts)
			}
		})
	}
}

func TestTop(t *testing.T) {
	t0 := time.UnixMilli(1_700_000_000_000)
	in := []backlog{
		{labels{"a", "z1", "files"}, 5, t0},
		{labels{"a", "z2", "files"}, 9, t0},
		{labels{"a", "z3", "files"}, 5, t0.Add(-time.Second)},
		{labels{"b", "z4", "tags"}, 1, t0},
	}
	got := top(in, 3)
	want := []backlog{in[1], in[2], in[0]} // deepest first; the older first among equals
	if !slices.Equal(got, want) {
		t.Errorf("top(3) = %+v, want %+v", got, want)
	}
	if got := top(in, 0); len(got) != 0 {
		t.Errorf("top(0) = %+v, want none", got)
	}
	if got := top(in, 10); len(got) != 4 {
		t.Errorf("top(10) of 4 = %d backlogs, want 4", len(got))
	}
	if in[0].zone != "z1" {
		t.Errorf("top reordered its input: %+v", in)
	}
}

// fakeLimits answers a fixed limits.State.
type fakeLimits limits.State

func (f fakeLimits) State(context.Context) (limits.State, error) { return limits.State(f), nil }

// env is a worker's view of the test Redis.
type env struct {
	rdb  *redis.Client
	ob   *batching.Outbox
	insp *asynq.Inspector
}

func newEnv(t *testing.T) env {
	rdb := testredis.Connect(t)
	testredis.Flush(t, rdb)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	return env{rdb: rdb, ob: batching.NewOutbox(rdb, time.Hour), insp: insp}
}

// state is a State with one account, "default", and zone ids zN named zN.example.
func (e env) state() State {
	return State{Redis: e.rdb, Outbox: e.ob, Dead: batching.NewDeadLetters(e.rdb), Inspector: e.insp,
		Accounts: func() []Account {
			return []Account{{Name: "default", Limits: fakeLimits{GlobalRemaining: 7, FlexTokens: 3, URLTokens: 500}}}
		},
		Zone:     func(id string) (string, string) { return id + ".example", "default" },
		TopZones: 20, Log: zerolog.Nop()}
}

func (e env) admit(t testing.TB, r *tasks.Request) {
	t.Helper()
	r.EnqueuedAt = time.Now().UnixMilli()
	if err := e.ob.Admit(context.Background(), r, 0, 1); err != nil {
		t.Fatalf("admitting %s: %v", r.ID, err)
	}
}

func urls(zone string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("https://%s.example/%d", zone, i)
	}
	return out
}

// series is one scraped series: its labels and value.
type series struct {
	labels map[string]string
	value  float64
}

// scrape gathers reg, failing the test if the scrape fails, and returns
// the purgeq_ series by name.
func scrape(t testing.TB, reg *prometheus.Registry) map[string][]series {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string][]series{}
	for _, mf := range families {
		if !strings.HasPrefix(mf.GetName(), "purgeq_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			s := series{labels: map[string]string{}, value: value(m)}
			for _, l := range m.GetLabel() {
				s.labels[l.GetName()] = l.GetValue()
			}
			out[mf.GetName()] = append(out[mf.GetName()], s)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}

// find returns the value of the series of name with exactly these labels.
func find(got map[string][]series, name string, labels ...string) (float64, bool) {
	for _, s := range got[name] {
		if len(s.labels) != len(labels)/2 {
			continue
		}
		match := true
		for i := 0; i < len(labels); i += 2 {
			match = match && s.labels[labels[i]] == labels[i+1]
		}
		if match {
			return s.value, true
		}
	}
	return 0, false
}

// shared are the series only the lease holder exports.
var shared = []string{"purgeq_outbox_items", "purgeq_outbox_oldest_seconds", "purgeq_outbox_zone_items",
	"purgeq_outbox_zone_oldest_seconds", "purgeq_dead_letter_entries", "purgeq_resent_calls_total",
	"purgeq_limit_remaining", "purgeq_cooldown_active", "purgeq_queue_tasks", "purgeq_queue_latency_seconds"}

// exports reports which of the shared series a scrape holds with a value
// (every worker has purgeq_outbox_items; those without the lease, at 0).
func exports(got map[string][]series) []string {
	var names []string
	for _, n := range shared {
		if slices.ContainsFunc(got[n], func(s series) bool { return s.value != 0 || n != "purgeq_outbox_items" }) {
			names = append(names, n)
		}
	}
	return names
}

// TestScrapeSoftAndHardLanes: a soft and a hard purge of one zone and kind
// waiting at once is one purgeq_outbox_items series (and one zone series)
// with their sum, and the scrape succeeds (two series with the same labels
// made /metrics answer 500).
func TestScrapeSoftAndHardLanes(t *testing.T) {
	e := newEnv(t)
	e.admit(t, &tasks.Request{ID: "hard", Zones: map[string]map[purge.Kind][]string{"z1": {purge.Files: urls("z1", 2)}}})
	e.admit(t, &tasks.Request{ID: "soft", Soft: true, Zones: map[string]map[purge.Kind][]string{"z1": {purge.Files: urls("z1", 3)[2:]}}})
	e.admit(t, &tasks.Request{ID: "soft2", Soft: true, Zones: map[string]map[purge.Kind][]string{"z1": {purge.Files: {"https://z1.example/x", "https://z1.example/y"}}}})
	if stats, err := e.ob.LaneStats(context.Background()); err != nil || len(stats) != 2 {
		t.Fatalf("lane stats = %+v, %v; want a soft and a hard lane", stats, err)
	}

	reg := prometheus.NewPedanticRegistry()
	New(reg, e.state())
	got := scrape(t, reg)
	for _, c := range []struct {
		name   string
		labels []string
	}{
		{"purgeq_outbox_items", []string{"account", "default", "kind", "files"}},
		{"purgeq_outbox_oldest_seconds", []string{"account", "default", "kind", "files"}},
		{"purgeq_outbox_zone_items", []string{"account", "default", "zone", "z1.example", "kind", "files"}},
		{"purgeq_outbox_zone_oldest_seconds", []string{"account", "default", "zone", "z1.example", "kind", "files"}},
	} {
		want := 1
		if c.name == "purgeq_outbox_items" {
			want = len(purge.Kinds) // every kind of the account, 0 when nothing waits
		}
		if len(got[c.name]) != want {
			t.Fatalf("%s has %d series, want %d: %v", c.name, len(got[c.name]), want, got[c.name])
		}
		v, ok := find(got, c.name, c.labels...)
		if !ok {
			t.Fatalf("%s = %v, want labels %v", c.name, got[c.name], c.labels)
		}
		if strings.HasSuffix(c.name, "_items") && v != 5 {
			t.Errorf("%s = %v, want 5 (2 hard + 3 soft)", c.name, v)
		}
		if strings.HasSuffix(c.name, "_seconds") && (v < 0 || v > 60) {
			t.Errorf("%s = %v, want a few seconds at most", c.name, v)
		}
	}
}

// newWorker is one worker's metrics on the test Redis, with its own registry.
func newWorker(e env, lease time.Duration) (*Metrics, *prometheus.Registry) {
	reg := prometheus.NewPedanticRegistry()
	s := e.state()
	s.Lease = lease
	return New(reg, s), reg
}

// TestOneWorkerExports: of two workers on one Redis exactly one exports
// the shared series, scrape after scrape; when it stops (Run's context
// ends: the lease is released) or stops renewing (a crash: the lease
// expires), the other takes over within the lease time.
func TestOneWorkerExports(t *testing.T) {
	e := newEnv(t)
	e.admit(t, &tasks.Request{ID: "r", Zones: map[string]map[purge.Kind][]string{"z1": {purge.Files: urls("z1", 3)}}})
	if err := tasks.ArchiveDead(context.Background(), asynq.NewClientFromRedisClient(e.rdb), e.insp, "d1", []byte(`{}`)); err != nil {
		t.Fatal(err) // a queue to report
	}
	const ttl = 600 * time.Millisecond
	ma, rega := newWorker(e, ttl)
	mb, regb := newWorker(e, ttl)
	ctxA, stopA := context.WithCancel(context.Background())
	ctxB, stopB := context.WithCancel(context.Background())
	defer stopA()
	defer stopB()
	doneA := make(chan struct{})
	go func() { ma.Run(ctxA); close(doneA) }()
	testwait.For(t, ttl, "worker A to take the lease", func() bool { return exports(scrape(t, rega)) != nil })
	go mb.Run(ctxB)

	// Over three lease times, every scrape of both: A exports everything
	// shared, B nothing.
	for end := time.Now().Add(3 * ttl); time.Now().Before(end); time.Sleep(ttl / 10) {
		a, b := scrape(t, rega), scrape(t, regb)
		if got := exports(a); !slices.Equal(got, shared) {
			t.Fatalf("worker A exports %v, want every shared series %v", got, shared)
		}
		if got := exports(b); got != nil {
			t.Fatalf("worker B exports %v too: sum() over workers would double them", got)
		}
		if len(b["purgeq_outbox_items"]) == 0 {
			t.Fatal("worker B has no purgeq_outbox_items: every worker's /metrics keeps it (at 0 without the lease)")
		}
		if va, _ := find(a, "purgeq_metrics_exporter"); va != 1 {
			t.Fatalf("worker A: purgeq_metrics_exporter = %v, want 1", va)
		}
		if vb, _ := find(b, "purgeq_metrics_exporter"); vb != 0 {
			t.Fatalf("worker B: purgeq_metrics_exporter = %v, want 0", vb)
		}
	}
	if v, _ := find(scrape(t, rega), "purgeq_outbox_items", "account", "default", "kind", "files"); v != 3 {
		t.Errorf("purgeq_outbox_items = %v, want 3", v)
	}

	// A stops: it releases the lease, a scrape of A (shutting down) does
	// not take it back, and B takes it at its next renewal.
	stopA()
	<-doneA
	start := time.Now()
	if got := exports(scrape(t, rega)); got != nil {
		t.Fatalf("stopped worker A still exports %v", got)
	}
	testwait.For(t, ttl, "worker B to take over after A stopped", func() bool {
		return e.rdb.Exists(context.Background(), keyspace.MetricsLease).Val() == 1
	})
	t.Logf("B's Run took the lease %v after A released it", time.Since(start).Round(time.Millisecond))
	if got := exports(scrape(t, regb)); !slices.Equal(got, shared) {
		t.Fatalf("worker B exports %v after taking over, want %v", got, shared)
	}

	// B crashes (stops renewing, keeps the lease); C, scraped but without
	// Run, takes over at its first scrape after the lease expired.
	stopB()
	testwait.For(t, ttl, "B's Run to return", func() bool { return e.rdb.Exists(context.Background(), keyspace.MetricsLease).Val() == 0 })
	_, regc := newWorker(e, ttl)
	_, regd := newWorker(e, ttl)
	if exports(scrape(t, regc)) == nil {
		t.Fatal("worker C did not take the free lease at a scrape")
	}
	start = time.Now() // C now holds the lease and is never scraped again: it crashed
	testwait.For(t, ttl+ttl/2, "worker D to take over after C stopped renewing", func() bool { return exports(scrape(t, regd)) != nil })
	if took := time.Since(start); took < ttl/2 {
		t.Errorf("D took over %v after C's last renewal, before the lease (%v) expired", took, ttl)
	} else {
		t.Logf("D took over %v after C's last renewal (lease %v)", took.Round(time.Millisecond), ttl)
	}
}

// TestPerAccountLabels: the backlog, the limits and the per-call metrics
// are labelled by account; the limits of each account are its own.
func TestPerAccountLabels(t *testing.T) {
	e := newEnv(t)
	e.admit(t, &tasks.Request{ID: "r", Zones: map[string]map[purge.Kind][]string{
		"z1": {purge.Files: urls("z1", 2), purge.Tags: {"t1"}},
		"z2": {purge.Files: urls("z2", 3)},
		"z3": {purge.Files: urls("z3", 4)},
	}})
	s := e.state()
	s.Zone = func(id string) (string, string) {
		return id + ".example", map[string]string{"z1": "main", "z2": "main", "z3": "brand"}[id]
	}
	s.Accounts = func() []Account {
		return []Account{
			{Name: "main", Limits: fakeLimits{GlobalRemaining: 900, FlexTokens: 25, URLTokens: 800}},
			{Name: "brand", Limits: fakeLimits{GlobalRemaining: 10, FlexTokens: 0, URLTokens: 50,
				Cooldowns: map[purge.Scope]time.Time{purge.ScopeFlex: time.Now().Add(time.Minute)}}},
			{Name: "main", Limits: fakeLimits{}}, // named twice: must not fail the scrape
		}
	}
	reg := prometheus.NewPedanticRegistry()
	m := New(reg, s)
	m.Observe(&tasks.Call{Kind: purge.Files, Items: urls("z3", 4), Oldest: time.Now().UnixMilli()}, "brand", "accepted", "", 30)
	m.Observe(&tasks.Call{Kind: purge.Tags, Items: []string{"t1"}}, "main", "rate_limited", purge.ScopeFlex, 30)

	got := scrape(t, reg)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"purgeq_outbox_items", []string{"account", "main", "kind", "files"}, 5},
		{"purgeq_outbox_items", []string{"account", "main", "kind", "tags"}, 1},
		{"purgeq_outbox_items", []string{"account", "brand", "kind", "files"}, 4},
		{"purgeq_outbox_zone_items", []string{"account", "brand", "zone", "z3.example", "kind", "files"}, 4},
		{"purgeq_limit_remaining", []string{"account", "main", "scope", "global"}, 900},
		{"purgeq_limit_remaining", []string{"account", "main", "scope", "flex"}, 25},
		{"purgeq_limit_remaining", []string{"account", "brand", "scope", "url"}, 50},
		{"purgeq_cooldown_active", []string{"account", "brand", "scope", "flex"}, 1},
		{"purgeq_cooldown_active", []string{"account", "main", "scope", "flex"}, 0},
		{"purgeq_api_calls_total", []string{"account", "brand", "kind", "files", "outcome", "accepted"}, 1},
		{"purgeq_api_calls_total", []string{"account", "main", "kind", "tags", "outcome", "rate_limited"}, 1},
		{"purgeq_rate_limited_total", []string{"account", "main", "scope", "flex"}, 1},
		{"purgeq_items_purged_total", []string{"account", "brand", "kind", "files"}, 4},
		{"purgeq_batch_fill_ratio", []string{"account", "brand", "kind", "files"}, 1}, // histogram: one observation
		{"purgeq_enqueue_to_call_seconds", []string{"account", "brand"}, 1},
	} {
		if v, ok := find(got, c.name, c.labels...); !ok || v != c.want {
			t.Errorf("%s%v = %v (found: %v), want %v; all: %v", c.name, c.labels, v, ok, c.want, got[c.name])
		}
	}
	if n := len(got["purgeq_outbox_items"]); n != 2*len(purge.Kinds) {
		t.Errorf("purgeq_outbox_items has %d series, want %d (account × kind)", n, 2*len(purge.Kinds))
	}
	if n := len(got["purgeq_limit_remaining"]); n != 6 {
		t.Errorf("purgeq_limit_remaining has %d series, want 6 (2 accounts × 3 scopes)", n)
	}
}

// admitLanes puts items into the outbox of zones z0…z(n-1), zone i
// holding depth(i) URLs, in requests of up to 1,000 zones.
func admitLanes(t testing.TB, e env, n int, depth func(int) int) {
	t.Helper()
	for lo := 0; lo < n; lo += 1000 {
		r := &tasks.Request{ID: fmt.Sprintf("r%d", lo), Zones: map[string]map[purge.Kind][]string{}}
		for i := lo; i < min(lo+1000, n); i++ {
			z := fmt.Sprintf("z%d", i)
			r.Zones[z] = map[purge.Kind][]string{purge.Files: urls(z, depth(i))}
		}
		e.admit(t, r)
	}
}

// TestTopZonesBoundsSeries: with 1,000 zones waiting, only the TopZones
// deepest have zone series; the account series still count every item.
func TestTopZonesBoundsSeries(t *testing.T) {
	e := newEnv(t)
	admitLanes(t, e, 1000, func(i int) int { return 1 + i%50 })
	for _, n := range []int{20, 0} {
		e.rdb.Del(context.Background(), keyspace.MetricsLease) // the previous round's instance holds it
		s := e.state()
		s.TopZones = n
		reg := prometheus.NewPedanticRegistry()
		New(reg, s)
		got := scrape(t, reg)
		if len(got["purgeq_outbox_zone_items"]) != n || len(got["purgeq_outbox_zone_oldest_seconds"]) != n {
			t.Fatalf("TopZones %d: %d zone item series, %d zone age series; want %d each",
				n, len(got["purgeq_outbox_zone_items"]), len(got["purgeq_outbox_zone_oldest_seconds"]), n)
		}
		for _, s := range got["purgeq_outbox_zone_items"] {
			if s.value != 50 {
				t.Errorf("zone series %v = %v, want one of the deepest (50)", s.labels, s.value)
			}
		}
		total := 0
		for i := range 1000 {
			total += 1 + i%50
		}
		if v, _ := find(got, "purgeq_outbox_items", "account", "default", "kind", "files"); v != float64(total) {
			t.Errorf("TopZones %d: purgeq_outbox_items = %v, want %d", n, v, total)
		}
	}
}

// TestScrapeManyLanes: /metrics answers 200, with bounded series, while
// 10,000 zones have items waiting; the time a scrape takes is logged.
func TestScrapeManyLanes(t *testing.T) {
	e := newEnv(t)
	const zones = 10_000
	admitLanes(t, e, zones, func(int) int { return 1 })
	s := e.state()
	reg := prometheus.NewRegistry()
	New(reg, s)
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	var took []time.Duration
	for range 5 {
		rec := httptest.NewRecorder()
		start := time.Now()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		took = append(took, time.Since(start))
		if rec.Code != http.StatusOK {
			t.Fatalf("/metrics = %d with %d zones waiting: %s", rec.Code, zones, rec.Body)
		}
		body := rec.Body.String()
		if want := fmt.Sprintf("purgeq_outbox_items{account=\"default\",kind=\"files\"} %d\n", zones); !strings.Contains(body, want) {
			t.Fatalf("/metrics lacks %q", want)
		}
		if n := strings.Count(body, "\npurgeq_outbox_zone_items{"); n != s.TopZones {
			t.Fatalf("/metrics has %d zone series, want %d", n, s.TopZones)
		}
	}
	slices.Sort(took)
	start := time.Now()
	if _, err := e.ob.LaneStats(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("LaneStats alone: %v", time.Since(start))
	t.Logf("scrape with %d zones waiting: median %v, slowest %v (of %d)", zones, took[len(took)/2], took[len(took)-1], len(took))
}

package metrics

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/limits"
	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

func TestByZoneKind(t *testing.T) {
	t0 := time.UnixMilli(1_700_000_000_000)
	lane := func(zone string, kind purge.Kind, soft bool, depth int64, oldest time.Time) batching.LaneStat {
		return batching.LaneStat{Lane: batching.Lane{Zone: zone, Kind: kind, Soft: soft}, Depth: depth, Oldest: oldest}
	}
	names := map[string]string{"z1": "example.com"}
	for _, tc := range []struct {
		name  string
		lanes []batching.LaneStat
		want  []laneGauge
	}{
		{"none", nil, nil},
		{"one lane, named zone", []batching.LaneStat{lane("z1", purge.Files, false, 3, t0)},
			[]laneGauge{{"example.com", "files", 3, t0}}},
		{"unknown zone keeps its id", []batching.LaneStat{lane("z9", purge.Tags, true, 2, t0)},
			[]laneGauge{{"z9", "tags", 2, t0}}},
		{"soft and hard of one zone and kind add up, oldest wins", []batching.LaneStat{
			lane("z1", purge.Files, false, 3, t0.Add(time.Second)),
			lane("z1", purge.Files, true, 4, t0),
		}, []laneGauge{{"example.com", "files", 7, t0}}},
		{"oldest wins whichever comes first", []batching.LaneStat{
			lane("z1", purge.Files, true, 4, t0),
			lane("z1", purge.Files, false, 3, t0.Add(time.Second)),
		}, []laneGauge{{"example.com", "files", 7, t0}}},
		{"an empty lane has no oldest", []batching.LaneStat{
			lane("z1", purge.Tags, false, 0, time.Time{}),
			lane("z1", purge.Tags, true, 5, t0),
		}, []laneGauge{{"example.com", "tags", 5, t0}}},
		{"other kinds and zones stay apart, sorted", []batching.LaneStat{
			lane("z2", purge.Files, false, 1, t0),
			lane("z1", purge.Tags, true, 2, t0),
			lane("z1", purge.Files, true, 3, t0),
			lane("z1", purge.Tags, false, 4, t0.Add(-time.Second)),
		}, []laneGauge{{"example.com", "files", 3, t0}, {"example.com", "tags", 6, t0.Add(-time.Second)}, {"z2", "files", 1, t0}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := byZoneKind(tc.lanes, names); !slices.Equal(got, tc.want) {
				t.Errorf("byZoneKind = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestScrapeSoftAndHardLanes: a soft and a hard purge of one zone and kind
// waiting at once is one purgeq_outbox_items series with their sum, and the
// scrape succeeds (two series with the same labels made /metrics answer 500).
func TestScrapeSoftAndHardLanes(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()

	ob := batching.NewOutbox(rdb, time.Hour)
	now := time.Now().UnixMilli()
	for _, r := range []*tasks.Request{
		{ID: "hard", EnqueuedAt: now, Zones: map[string]map[purge.Kind][]string{"z1": {purge.Files: {"https://example.com/a", "https://example.com/b"}}}},
		{ID: "soft", EnqueuedAt: now, Soft: true, Zones: map[string]map[purge.Kind][]string{"z1": {purge.Files: {"https://example.com/c", "https://example.com/d", "https://example.com/e"}}}},
	} {
		if err := ob.Admit(ctx, r, 0, 1); err != nil {
			t.Fatalf("admitting %s: %v", r.ID, err)
		}
	}
	if stats, err := ob.LaneStats(ctx); err != nil || len(stats) != 2 {
		t.Fatalf("lane stats = %+v, %v; want a soft and a hard lane", stats, err)
	}

	lim, err := limits.New(rdb, limits.Config{Token: limits.Fingerprint("test"), Global: rate.Rate{N: 1000, Per: 5 * time.Minute},
		Flex: limits.Bucket{Rate: rate.Rate{N: 5, Per: time.Minute}, Burst: 25}, URL: limits.Bucket{Rate: rate.Rate{N: 800, Per: time.Second}, Burst: 800}})
	if err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: mr.Addr()})
	t.Cleanup(func() { insp.Close() })
	zones, err := tasks.ParseZones("example.com=z1")
	if err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewPedanticRegistry()
	New(reg, State{Outbox: ob, Dead: batching.NewDeadLetters(rdb), Limiter: lim, Inspector: insp, Zones: zones, Log: zerolog.Nop()})
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	found := map[string]bool{}
	for _, mf := range families {
		switch mf.GetName() {
		case "purgeq_outbox_items", "purgeq_outbox_oldest_seconds":
			found[mf.GetName()] = true
			if len(mf.GetMetric()) != 1 {
				t.Fatalf("%s has %d series, want 1: %v", mf.GetName(), len(mf.GetMetric()), mf.GetMetric())
			}
			m := mf.GetMetric()[0]
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if len(labels) != 2 || labels["zone"] != "example.com" || labels["kind"] != "files" {
				t.Errorf("%s labels = %v, want zone=example.com kind=files", mf.GetName(), labels)
			}
			v := m.GetGauge().GetValue()
			if mf.GetName() == "purgeq_outbox_items" && v != 5 {
				t.Errorf("purgeq_outbox_items = %v, want 5 (2 hard + 3 soft)", v)
			}
			if mf.GetName() == "purgeq_outbox_oldest_seconds" && (v < 0 || v > 60) {
				t.Errorf("purgeq_outbox_oldest_seconds = %v, want a few seconds at most", v)
			}
		}
	}
	if !found["purgeq_outbox_items"] || !found["purgeq_outbox_oldest_seconds"] {
		t.Errorf("missing outbox series: %v", found)
	}
}

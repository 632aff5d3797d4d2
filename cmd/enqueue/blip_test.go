package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/keyspace"
	"github.com/purgeq/purgeq/internal/testredis"
	"github.com/purgeq/purgeq/internal/testwait"
	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/purge/cftest"
	"github.com/purgeq/purgeq/tasks"
)

// roomySim is a simulator for the test zones whose limits never bind.
func roomySim(t *testing.T) *cftest.Server {
	t.Helper()
	plan := purge.Plans["free"]
	plan.URLRate, plan.URLBurst = rate.Per(10000000, time.Second), 10000000
	sim := cftest.NewServer(cftest.Config{Token: "tok", Zones: []string{"zone-com", "zone-org"}, GlobalLimit: rate.Per(100000, time.Second), Plan: plan})
	t.Cleanup(sim.Close)
	t.Setenv("PURGE_GLOBAL_LIMIT", "100000/1s")
	t.Setenv("PURGE_URL_LIMIT", "10000000/1s")
	t.Setenv("PURGE_URL_BURST", "10000000")
	t.Setenv("PURGE_BATCH_WAIT", "100ms")
	return sim
}

// deployFile writes n URLs of run to a file and returns its path.
func deployFile(t *testing.T, run, n int) string {
	t.Helper()
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "https://example.com/run%d/asset-%d.js\n", run, i)
	}
	path := filepath.Join(t.TempDir(), fmt.Sprintf("deploy-%d.txt", run))
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// acceptedItems counts the distinct items the simulator accepted.
func acceptedItems(sim *cftest.Server) map[string]bool {
	got := map[string]bool{}
	for _, c := range sim.Calls() {
		if c.Accepted() {
			for _, it := range c.Items {
				got[it] = true
			}
		}
	}
	return got
}

func waitStatus(t *testing.T, c *conn, id string, d time.Duration) batching.Status {
	t.Helper()
	var st batching.Status
	testwait.For(t, d, "request "+id+" to finish", func() bool {
		var err error
		st, err = c.requests.Status(context.Background(), id)
		return err == nil && (st.State == "done" || st.State == "failed")
	})
	return st
}

// TestRerunSameKey: a deploy step run again with the same idempotency key,
// whatever state the first run is in (staged but never committed; queued
// but not admitted), queues its items once and loses none.
func TestRerunSameKey(t *testing.T) {
	rdb := setup(t)
	ctx := context.Background()
	file := deployFile(t, 0, 3000)

	// A first run that died after staging a chunk, before committing.
	cfg, err := open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cfg.close()
	crashed := cfg.client.NewStream(rdb, false, "deploy-abc")
	if err := crashed.Add(ctx, tasks.PurgeRequest{Files: tasks.URLs("https://example.com/run0/asset-0.js")}); err != nil {
		t.Fatal(err)
	}

	first := enqueueCmd(t, "", "--zone", "example.com", "--from", file, "--idempotency-key", "deploy-abc")
	second := enqueueCmd(t, "", "--zone", "example.com", "--from", file, "--idempotency-key", "deploy-abc")
	if first.code != 0 || second.code != 0 || strings.TrimSpace(first.stdout) != strings.TrimSpace(second.stdout) {
		t.Fatalf("runs: %+v, %+v; want both exit 0 with one id", first, second)
	}
	if !strings.Contains(second.stderr, "nothing new queued") {
		t.Errorf("the second run did not say it queued nothing new: %q", second.stderr)
	}
	if n := pending(t, rdb); n != 1 {
		t.Errorf("%d requests pending, want 1", n)
	}

	sim := roomySim(t)
	startWorker(t, sim)
	id := strings.TrimSpace(first.stdout)
	if st := waitStatus(t, cfg, id, 60*time.Second); st.State != "done" || st.Purged != 3000 {
		t.Errorf("status %+v; want done with 3000 purged", st)
	}
	if got := len(acceptedItems(sim)); got != 3000 {
		t.Errorf("Cloudflare accepted %d distinct URLs, want 3000", got)
	}
	// A third run once the first is done queues nothing and fails nothing.
	if third := enqueueCmd(t, "", "--zone", "example.com", "--from", file, "--idempotency-key", "deploy-abc"); third.code != 0 {
		t.Errorf("a run after the first finished: %+v", third)
	}
}

// TestMissingChunkFailsLoudly: a streamed request whose staged chunks
// vanished before admission reads failed, with the reason, and --wait
// exits 1: never done, never silently gone.
func TestMissingChunkFailsLoudly(t *testing.T) {
	rdb := setup(t)
	r := enqueueCmd(t, "", "--from", deployFile(t, 0, 10))
	if r.code != 0 {
		t.Fatal(r)
	}
	id := strings.TrimSpace(r.stdout)
	keys, _ := rdb.Keys(context.Background(), keyspace.Staging(id, "*")).Result()
	if len(keys) != 1 {
		t.Fatalf("staging keys %v", keys)
	}
	if ttl, _ := rdb.TTL(context.Background(), keys[0]).Result(); ttl != -1 {
		t.Errorf("a committed request's staging keeps an expiry (%v): a backlog longer than it would lose the request", ttl)
	}
	rdb.Del(context.Background(), keys[0])
	startWorker(t, roomySim(t))
	w := enqueueCmd(t, "", "status", id)
	testwait.For(t, 20*time.Second, "the request to fail", func() bool {
		w = enqueueCmd(t, "", "status", id)
		return strings.Contains(w.stdout, "failed")
	})
	if !strings.Contains(w.stdout, "missing from staging") {
		t.Errorf("status does not say why: %+v", w)
	}
}

// TestProducerThroughBlips: 40 deploy hooks of 1,000 URLs each, through a
// proxy that loses 5% of Redis's replies, all exit 0, and every URL is
// purged (PURGEQ_BLIP_RUNS changes the number of runs).
func TestProducerThroughBlips(t *testing.T) {
	setup(t)
	runs := 40
	if n, err := fmt.Sscan(os.Getenv("PURGEQ_BLIP_RUNS"), &runs); n != 1 || err != nil {
		runs = 40
	}
	proxy := testredis.StartTestProxy(t, srv.Addr, testredis.ProxyOptions{Drop: 0.05, Seed: 7})
	t.Setenv("PURGE_REDIS_URL", proxy.URL())
	ids := map[string]bool{}
	for run := range runs {
		r := enqueueCmd(t, "", "--from", deployFile(t, run, 1000))
		if r.code != 0 {
			t.Errorf("run %d exited %d: %s", run, r.code, r.stderr)
			continue
		}
		ids[strings.TrimSpace(r.stdout)] = true
	}
	dropped := proxy.Dropped()
	t.Setenv("PURGE_REDIS_URL", srv.URL())
	sim := roomySim(t)
	startWorker(t, sim)
	c, err := open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	for id := range ids {
		if st := waitStatus(t, c, id, 120*time.Second); st.State != "done" || st.Purged != 1000 {
			t.Errorf("request %s: %+v", id, st)
		}
	}
	got := len(acceptedItems(sim))
	t.Logf("%d runs through a proxy that lost %d replies: %d exited 0, %d distinct URLs purged of %d", runs, dropped, len(ids), got, runs*1000)
	if len(ids) != runs || got != runs*1000 {
		t.Errorf("%d of %d runs queued, %d of %d URLs purged", len(ids), runs, got, runs*1000)
	}
	if dropped == 0 {
		t.Error("the proxy lost no reply: the test proves nothing")
	}
}

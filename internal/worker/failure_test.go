package worker_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/purge/cftest"
	"github.com/purgeq/purgeq/tasks"
)

// flood enqueues n URLs over the three zones in requests of 100 and
// returns the request ids.
func (e *env) flood(n int, path string) []string {
	names := []string{"a.example", "b.example", "c.example"}
	var ids []string
	for start := 0; start < n; start += 100 {
		var urls []string
		for i := start; i < min(start+100, n); i++ {
			urls = append(urls, fmt.Sprintf("https://%s/%s/%d", names[i%3], path, i))
		}
		ids = append(ids, e.enqueue(tasks.PurgeRequest{Files: tasks.URLs(urls...)}).ID)
	}
	return ids
}

// settled sums the finished requests' counters.
func settled(t *testing.T, e *env, ids []string, d time.Duration) (purged, dead int) {
	t.Helper()
	for _, st := range e.waitDone(d, ids...) {
		purged += st.Purged
		dead += st.Dead
	}
	return purged, dead
}

func deadItems(t *testing.T, e *env) []string {
	t.Helper()
	entries, err := e.dead.Entries(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	var items []string
	for _, en := range entries {
		items = append(items, en.Item)
	}
	sort.Strings(items)
	return items
}

// TestPoisonIsolated: one URL Cloudflare names as unpurgeable among 1,000,
// and one it fails without naming: only those two are dead-lettered.
func TestPoisonIsolated(t *testing.T) {
	e := setup(t, cftest.Config{}, map[string]string{"PURGE_BATCH_WAIT": "200ms"})
	e.sim.Poison("https://a.example/p/3")
	e.sim.PoisonQuietly("https://b.example/p/499")
	e.startWorker()
	purged, dead := settled(t, e, e.flood(1000, "p"), 60*time.Second)
	got := deadItems(t, e)
	t.Logf("purged %d, dead %d: %v; %d calls", purged, dead, got, len(e.sim.Calls()))
	if purged != 998 || dead != 2 || len(got) != 2 || got[0] != "https://a.example/p/3" || got[1] != "https://b.example/p/499" {
		t.Errorf("purged %d, dead %d, dead-lettered %v; want 998, 2 and the two poison URLs", purged, dead, got)
	}
	entries, _ := e.dead.Entries(context.Background(), "")
	for _, en := range entries {
		if en.Reason == "" || en.Code == 0 || len(en.Requests) != 1 || en.FirstFailed == 0 {
			t.Errorf("entry lacks detail: %+v", en)
		}
	}
	archived, err := asynq.NewInspectorFromRedisClient(e.rdb).ListArchivedTasks(tasks.QueueDead)
	if err != nil || len(archived) != 2 || archived[0].Type != tasks.TypeDead {
		t.Errorf("archived mirrors: %v, %v; want 2 purge:dead tasks", archived, err)
	}
}

// TestMisconfigured: a refused token dead-letters with a reason that says
// what to fix.
func TestMisconfigured(t *testing.T) {
	e := setup(t, cftest.Config{}, map[string]string{"PURGE_BATCH_WAIT": "100ms", "PURGE_MAX_RETRY": "1", "PURGE_CLOUDFLARE_API_TOKEN": "wrong"})
	e.startWorker()
	_, dead := settled(t, e, e.flood(150, "m"), 30*time.Second)
	entries, _ := e.dead.Entries(context.Background(), "")
	if dead != 150 || len(entries) != 150 || !strings.Contains(entries[0].Reason, "PURGE_CLOUDFLARE_API_TOKEN") || entries[0].Code != purge.CodeAuth {
		t.Fatalf("dead %d, %d entries, first %+v", dead, len(entries), entries[0])
	}
}

// TestRetriesExhausted: transient failures past the retry budget
// dead-letter with their attempts and last error.
func TestRetriesExhausted(t *testing.T) {
	e := setup(t, cftest.Config{}, map[string]string{"PURGE_BATCH_WAIT": "100ms", "PURGE_MAX_RETRY": "1"})
	e.sim.SetFaults(cftest.Faults{Error5xx: 1}, 1)
	e.startWorker()
	_, dead := settled(t, e, e.flood(10, "x"), 30*time.Second)
	entries, _ := e.dead.Entries(context.Background(), "")
	if dead != 10 || len(entries) != 10 || entries[0].Attempts != 2 || !strings.Contains(entries[0].Reason, "gave up after 2 attempts") || entries[0].FirstFailed >= entries[0].LastFailed {
		t.Errorf("dead %d, first entry %+v", dead, entries[0])
	}
}

// TestTransientFaultsRecovered: 20% 5xx, 5% hangs past the client timeout,
// 5% connection resets: every item purged, none dead-lettered.
func TestTransientFaultsRecovered(t *testing.T) {
	e := setup(t, cftest.Config{}, map[string]string{"PURGE_BATCH_WAIT": "200ms", "PURGE_CLOUDFLARE_API_TIMEOUT": "300ms", "PURGE_MAX_RETRY": "12"})
	e.sim.SetFaults(cftest.Faults{Error5xx: 0.20, Hang: 0.05, Reset: 0.05}, 7)
	e.startWorker()
	ids := e.flood(3000, "f")
	var tagIDs []string
	for i := range 10 {
		pr := tasks.PurgeRequest{Zone: "c.example"}
		for j := range 50 {
			pr.Tags = append(pr.Tags, fmt.Sprintf("t-%d-%d", i, j))
		}
		tagIDs = append(tagIDs, e.enqueue(pr).ID)
	}
	purged, dead := settled(t, e, append(ids, tagIDs...), 120*time.Second)
	st := e.sim.Stats()
	resent, _ := e.outbox.Resent(context.Background())
	t.Logf("purged %d, dead %d; simulator %+v; calls re-sent after an unknown outcome: %d", purged, dead, st, resent)
	if purged != 3500 || dead != 0 {
		t.Errorf("purged %d, dead %d; want 3500 and 0", purged, dead)
	}
	if st.Faults == 0 {
		t.Error("no fault was injected")
	}
}

// TestManyDeadEntries: 20,000 items failing for good make 20,000 entries,
// all listed and all retryable once the cause is gone.
func TestManyDeadEntries(t *testing.T) {
	e := setup(t, cftest.Config{}, map[string]string{"PURGE_BATCH_WAIT": "200ms"})
	var poison []string
	names := []string{"a.example", "b.example", "c.example"}
	for i := range 20000 {
		poison = append(poison, fmt.Sprintf("https://%s/d/%d", names[i%3], i))
	}
	e.sim.Poison(poison...)
	e.startWorker()
	ids := e.flood(20000, "d")
	_, dead := settled(t, e, ids, 180*time.Second)
	if dead != 20000 {
		t.Fatalf("dead %d, want 20000", dead)
	}
	if got := deadItems(t, e); len(got) != 20000 {
		t.Fatalf("%d entries listed, want 20000", len(got))
	}
	e.sim.ClearPoison()
	all, _ := e.dead.IDs(context.Background())
	n, err := e.dead.Retry(context.Background(), all)
	if err != nil || n != 20000 {
		t.Fatalf("RetryDead = %d, %v", n, err)
	}
	purged, dead := settled(t, e, ids, 180*time.Second)
	if purged != 20000 || dead != 0 {
		t.Errorf("after the retry: purged %d, dead %d", purged, dead)
	}
}

// TestWorkerKilled: workers SIGKILLed every two seconds during a flood and
// restarted; every item is purged, duplicates are counted.
func TestWorkerKilled(t *testing.T) {
	e := setup(t, cftest.Config{Latency: 20 * time.Millisecond}, map[string]string{"PURGE_BATCH_WAIT": "200ms", "PURGE_GLOBAL_LIMIT": "20/1s"})
	p := e.startWorkerProcess()
	ids := e.flood(20000, "k")
	for range 4 {
		time.Sleep(2 * time.Second)
		p.kill()
		p = e.startWorkerProcess()
	}
	start := time.Now()
	purged, dead := settled(t, e, ids, 4*time.Minute)
	s := tally(e.sim.Calls())
	dups := 0
	for _, items := range s.items {
		for _, n := range items {
			dups += n - 1
		}
	}
	resent, _ := e.outbox.Resent(context.Background())
	t.Logf("purged %d, dead %d; recovered %v after the last kill; items purged twice %d; calls re-sent after an unknown outcome %d",
		purged, dead, time.Since(start).Round(time.Second), dups, resent)
	if purged != 20000 || dead != 0 {
		t.Errorf("purged %d, dead %d; want 20000, 0", purged, dead)
	}
	if dups > 0 && resent == 0 {
		t.Errorf("%d duplicate purges but none reported", dups)
	}
}

// TestRedisRestarted: redis-server (AOF on) stops mid-flood and comes back;
// every item is purged and the worker reconnects by itself.
func TestRedisRestarted(t *testing.T) {
	e := setup(t, cftest.Config{Latency: 10 * time.Millisecond}, map[string]string{"PURGE_BATCH_WAIT": "200ms", "PURGE_GLOBAL_LIMIT": "20/1s"})
	e.startWorker()
	ids := e.flood(10000, "r")
	time.Sleep(time.Second)
	srv.Stop()
	time.Sleep(2 * time.Second)
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	purged, dead := settled(t, e, ids, 4*time.Minute)
	t.Logf("purged %d, dead %d after the restart", purged, dead)
	if purged != 10000 || dead != 0 {
		t.Errorf("purged %d, dead %d; want 10000, 0", purged, dead)
	}
}

// TestThreeWorkersForced429: three worker processes under forced global
// 429s: after each 429 no call from any of them reaches the API until the
// cooldown ends.
func TestThreeWorkersForced429(t *testing.T) {
	const cooldown = 700 * time.Millisecond
	e := setup(t, cftest.Config{Block: cooldown, GlobalLimit: rate.Per(100000, time.Second)}, map[string]string{
		"PURGE_BATCH_WAIT": "100ms", "PURGE_COOLDOWN": cooldown.String(), "PURGE_GLOBAL_LIMIT": "40/1s"})
	for range 3 {
		e.startWorkerProcess()
	}
	ids := e.flood(30000, "c")
	for range 3 {
		time.Sleep(1500 * time.Millisecond)
		e.sim.Force429(purge.ScopeGlobal, 1)
	}
	purged, _ := settled(t, e, ids, 2*time.Minute)
	calls := e.sim.Calls()
	var forced []time.Time
	for _, c := range calls {
		if c.Status == 429 && !c.DuringBlock {
			forced = append(forced, c.At)
		}
	}
	late := 0
	for _, at := range forced {
		for _, c := range calls {
			if c.At.After(at.Add(inFlightGrace)) && c.At.Before(at.Add(cooldown)) {
				late++
			}
		}
	}
	t.Logf("purged %d; %d forced 429s; calls during a cooldown after the first %v: %d; %+v", purged, len(forced), inFlightGrace, late, e.sim.Stats())
	if len(forced) != 3 || late != 0 || purged != 30000 {
		t.Errorf("forced %d, late calls %d, purged %d", len(forced), late, purged)
	}
}

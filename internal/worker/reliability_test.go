package worker_test

import (
	"context"
	"fmt"

	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/keyspace"
	"github.com/purgeq/purgeq/internal/testredis"
	"github.com/purgeq/purgeq/internal/testwait"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/purge/cftest"
	"github.com/purgeq/purgeq/tasks"
)

// archivedCalls counts purge:call tasks in asynq's archive: every one of
// them would be a call outside the dead-letter queue.
func archivedCalls(t *testing.T, e *env) int {
	t.Helper()
	info, err := asynq.NewInspectorFromRedisClient(e.rdb).GetQueueInfo(tasks.QueueCalls)
	if err != nil {
		return 0
	}
	return info.Archived
}

// TestWaitAfterRetryBudget: with no retries allowed and a flex bucket of
// one call per 500 ms, calls that must wait for the bucket are neither
// archived nor dead-lettered: all nine tags are purged.
func TestWaitAfterRetryBudget(t *testing.T) {
	e := setup(t, cftest.Config{}, map[string]string{"PURGE_MAX_RETRY": "0", "PURGE_FLEX_LIMIT": "2/1s", "PURGE_FLEX_BURST": "1",
		"PURGE_MAX_FLEX": "1", "PURGE_INLINE_WAIT": "50ms", "PURGE_BATCH_WAIT": "50ms"})
	e.startWorker()
	var tags []string
	for i := range 9 {
		tags = append(tags, fmt.Sprintf("budget-%d", i))
	}
	id := e.enqueue(tasks.PurgeRequest{Zone: "a.example", Tags: tags}).ID
	st := e.waitDone(30*time.Second, id)[id]
	dead, _ := e.dead.Count(context.Background())
	if st.State != "done" || st.Purged != 9 || dead != 0 || archivedCalls(t, e) != 0 {
		t.Errorf("status %+v, %d dead, %d archived calls; want 9 purged, none dead or archived", st, dead, archivedCalls(t, e))
	}
}

// TestNamedItemExact: Cloudflare naming one URL dead-letters that URL
// only, not those it is a prefix of or equal to but for case.
func TestNamedItemExact(t *testing.T) {
	e := setup(t, cftest.Config{}, map[string]string{"PURGE_BATCH_WAIT": "100ms"})
	e.sim.Poison("https://a.example/blog/x")
	e.startWorker()
	id := e.enqueue(tasks.PurgeRequest{Files: tasks.URLs("https://a.example/", "https://a.example/blog", "https://a.example/BLOG/X", "https://a.example/blog/x")}).ID
	st := e.waitDone(30*time.Second, id)[id]
	if got := deadItems(t, e); st.Purged != 3 || st.Dead != 1 || len(got) != 1 || got[0] != "https://a.example/blog/x" {
		t.Errorf("status %+v, dead-lettered %v; want only https://a.example/blog/x", st, got)
	}
}

// TestSupersededWaitForAcceptance: during a flex cooldown, URLs that a
// purge-everything covers do not read done until Cloudflare accepted it.
func TestSupersededWaitForAcceptance(t *testing.T) {
	e := setup(t, cftest.Config{}, map[string]string{"PURGE_BATCH_WAIT": "50ms"})
	e.sim.Force429(purge.ScopeFlex, 1)
	e.startWorker()
	all := e.enqueue(tasks.PurgeRequest{Zone: "a.example", Everything: true}).ID
	urls := e.enqueue(tasks.PurgeRequest{Files: tasks.URLs("https://a.example/1", "https://a.example/2")}).ID
	done := e.waitDone(30*time.Second, all, urls)
	var accepted time.Time
	for _, c := range e.sim.Calls() {
		if c.Accepted() && c.Kind == purge.Everything {
			accepted = c.At
		}
	}
	st := done[urls]
	if accepted.IsZero() || st.State != "done" || st.Superseded != 2 {
		t.Fatalf("purge-everything accepted at %v; URLs %+v", accepted, st)
	}
	finished, _ := e.rdb.HGet(context.Background(), keyspace.Request(urls), "finished").Int64()
	if time.UnixMilli(finished).Before(accepted.Truncate(time.Millisecond)) {
		t.Errorf("the covered URLs finished at %v, before the purge-everything was accepted at %v", time.UnixMilli(finished), accepted)
	}
}

// TestHugeRequestStaysResponsive: one request of many tags is admitted in
// slices: no Redis command takes 250 ms or more (SLOWLOG), a small request
// queued meanwhile finishes, and every tag is purged. PURGEQ_HUGE_TAGS sets
// the size (200,000 for the README's figure).
func TestHugeRequestStaysResponsive(t *testing.T) {
	n := envInt("PURGEQ_HUGE_TAGS", 20000)
	e := setup(t, cftest.Config{}, map[string]string{"PURGE_BATCH_WAIT": "50ms"})
	ctx := context.Background()
	e.rdb.ConfigSet(ctx, "slowlog-log-slower-than", "20000") // 20 ms, to report the slowest
	t.Cleanup(func() { e.rdb.ConfigSet(ctx, "slowlog-log-slower-than", "10000") })
	e.rdb.Do(ctx, "SLOWLOG", "RESET")
	tags := make([]string, n)
	for i := range tags {
		tags[i] = "huge-" + strconv.Itoa(i)
	}
	start := time.Now()
	huge := e.enqueue(tasks.PurgeRequest{Zone: "b.example", Tags: tags}).ID
	e.startWorker()
	testwait.For(t, 60*time.Second, "admission to start", func() bool {
		st, err := e.requests.Status(ctx, huge)
		return err == nil && st.Total > 0
	})
	small := e.enqueue(tasks.PurgeRequest{Zone: "c.example", Tags: []string{"small"}}).ID
	done := e.waitDone(5*time.Minute, small, huge)
	slow, _ := e.rdb.SlowLogGet(ctx, 128).Result()
	var slowest time.Duration
	for _, s := range slow {
		slowest = max(slowest, s.Duration)
		if s.Duration >= 250*time.Millisecond {
			t.Errorf("slow Redis command (%v): %.80s", s.Duration, strings.Join(s.Args, " "))
		}
	}
	t.Logf("%d tags purged in %v; small request %s; Redis commands over 20 ms: %d, slowest %v", n, time.Since(start).Round(time.Millisecond), done[small].State, len(slow), slowest)
	if done[huge].Purged != n || done[small].State != "done" {
		t.Errorf("huge %+v, small %+v", done[huge], done[small])
	}
}

// TestBlipsKeepDeadLettersMirrored: a worker whose Redis loses 5% of its
// replies makes one dead-letter entry and one UI mirror per poison URL,
// counts no false re-send, and purges everything else.
func TestBlipsKeepDeadLettersMirrored(t *testing.T) {
	e := setup(t, cftest.Config{}, map[string]string{"PURGE_BATCH_WAIT": "100ms"})
	var poison []string
	for i := range 300 {
		if i%3 == 0 {
			poison = append(poison, fmt.Sprintf("https://%s/blip/%d", []string{"a.example", "b.example", "c.example"}[i%3], i))
		}
	}
	e.sim.Poison(poison...)
	proxy := testredis.StartTestProxy(t, srv.Addr, testredis.ProxyOptions{Drop: 0.05, Seed: 3})
	t.Setenv("PURGE_REDIS_URL", proxy.URL())
	e.startWorker()
	purged, dead := settled(t, e, e.flood(300, "blip"), 3*time.Minute)
	entries, _ := e.dead.Count(context.Background())
	var mirrors []*asynq.TaskInfo
	testwait.For(t, 10*time.Second, "every entry mirrored", func() bool {
		mirrors, _ = asynq.NewInspectorFromRedisClient(e.rdb).ListArchivedTasks(tasks.QueueDead, asynq.PageSize(1000))
		return len(mirrors) >= int(entries)
	})
	resent, _ := e.outbox.Resent(context.Background())
	dups := 0
	for _, its := range tally(e.sim.Calls()).items {
		for _, n := range its {
			dups += n - 1
		}
	}
	t.Logf("%d replies lost; purged %d, dead %d; %d entries, %d mirrors; re-sends counted %d, duplicate purges seen %d",
		proxy.Dropped(), purged, dead, entries, len(mirrors), resent, dups)
	if purged != 200 || dead != 100 || entries != 100 || len(mirrors) != 100 {
		t.Errorf("purged %d, dead %d, %d entries, %d mirrors; want 200, 100, 100, 100", purged, dead, entries, len(mirrors))
	}
	if int(resent) > dups {
		t.Errorf("%d re-sends counted, but Cloudflare saw %d duplicate purges", resent, dups)
	}
	if proxy.Dropped() == 0 {
		t.Error("no reply was lost: the test proves nothing")
	}
}

// TestLostDequeueReply: the reply to asynq's dequeue of a call is lost
// (the script moved the task to active; no worker holds it). The call sits
// until its lease expires and asynq's recoverer runs, then goes out: with
// PURGE_MAX_RETRY=0 it is neither archived nor dead-lettered. The stall is
// logged for the README.
func TestLostDequeueReply(t *testing.T) {
	e := setup(t, cftest.Config{}, map[string]string{"PURGE_MAX_RETRY": "0", "PURGE_BATCH_WAIT": "50ms"})
	ctx := context.Background()
	id := e.enqueue(tasks.PurgeRequest{Zone: "a.example", Tags: []string{"stranded"}}).ID
	// what the worker does, by hand: admit, pop, hand the call to asynq
	req := &tasks.Request{ID: id, EnqueuedAt: time.Now().UnixMilli(), Zones: map[string]map[purge.Kind][]string{"za": {purge.Tags: {"stranded"}}}}
	if err := e.outbox.Admit(ctx, req, 0, 1); err != nil {
		t.Fatal(err)
	}
	res, err := e.outbox.Pop(ctx, batching.PopRequest{Lane: batching.Lane{Zone: "za", Kind: purge.Tags}, Cap: 100, AllowPartial: true, Window: 8, Lease: time.Hour, Owner: "test"})
	if err != nil || res.Status != batching.Popped {
		t.Fatalf("pop: %+v, %v", res, err)
	}
	ac := asynq.NewClientFromRedisClient(e.rdb)
	defer ac.Close()
	// the worker's own hand-off (its task options decide the recovery)
	if err := (tasks.CallQueue{Client: ac, Timeout: time.Minute, Retention: time.Minute}).Enqueue(ctx, res.CallID, res.Call); err != nil {
		t.Fatal(err)
	}
	e.outbox.Handoff(ctx, res.CallID)
	e.rdb.Del(ctx, "asynq:{"+tasks.QueueRequests+"}:pending") // the request is admitted already
	// asynq's dequeue script, whose reply never arrives
	q := "asynq:{" + tasks.QueueCalls + "}:"
	e.rdb.RPopLPush(ctx, q+"pending", q+"active")
	e.rdb.HSet(ctx, q+"t:"+res.CallID, "state", "active")
	e.rdb.ZAdd(ctx, q+"lease", redis.Z{Score: float64(time.Now().Add(30 * time.Second).Unix()), Member: res.CallID})
	start := time.Now()
	e.startWorker()
	st := e.waitDone(3*time.Minute, id)[id]
	t.Logf("a call whose dequeue reply was lost went out %v later", time.Since(start).Round(time.Second))
	if st.State != "done" || archivedCalls(t, e) != 0 {
		t.Errorf("status %+v, %d archived calls", st, archivedCalls(t, e))
	}
}

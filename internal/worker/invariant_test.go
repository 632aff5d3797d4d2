package worker_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/redisconn"
	"github.com/purgeq/purgeq/internal/testredis"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/purge/cftest"
	"github.com/purgeq/purgeq/tasks"
)

// acked is a request a producer was told is queued, with its items.
type acked struct {
	id    string
	zone  string // zone id
	kind  purge.Kind
	items []string
}

// TestInvariant drives the whole pipeline through a random sequence of
// faults — worker SIGKILLs, Redis restarts, replies lost after the command
// ran (a proxy in front of Redis that workers and producers go through),
// 5xx, timeouts, resets, global and bucket 429s, poison items, re-runs with
// the same idempotency key, PURGE_MAX_RETRY from 0 to 3 — and checks, once
// the system is idle, for every acknowledged request: each item was
// accepted by the simulator or sits in the dead-letter store; "done" only
// when every item was accepted, "failed" only with dead entries; nothing
// left in progress; no purge:call task archived outside the dead-letter
// queue. PURGEQ_INVARIANT_ROUNDS and PURGEQ_INVARIANT_SEED make it long or
// replay one run.
func TestInvariant(t *testing.T) {
	rounds := envInt("PURGEQ_INVARIANT_ROUNDS", 3)
	seed := uint64(envInt("PURGEQ_INVARIANT_SEED", int(time.Now().UnixNano()%1e6)))
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("seed %d (PURGEQ_INVARIANT_SEED replays it), %d rounds", seed, rounds)
	const cooldown = 500 * time.Millisecond
	e := setup(t, cftest.Config{Block: cooldown, HangFor: time.Second}, map[string]string{
		"PURGE_BATCH_WAIT": "100ms", "PURGE_COOLDOWN": cooldown.String(), "PURGE_CLOUDFLARE_API_TIMEOUT": "300ms",
		"PURGE_RETRY_BASE": "50ms", "PURGE_RETRY_MAX": "300ms", "PURGE_FLEX_LIMIT": "50/1s", "PURGE_FLEX_BURST": "20"})
	e.sim.SetFaults(cftest.Faults{Error5xx: 0.05, Hang: 0.02, Reset: 0.02, Malformed: 0.01}, seed)
	proxy := testredis.StartTestProxy(t, srv.Addr, testredis.ProxyOptions{Drop: 0.01, Seed: seed})
	t.Setenv("PURGE_REDIS_URL", proxy.URL())
	producer := producerVia(t, proxy.URL())

	names := []string{"a.example", "b.example", "c.example"}
	poison := map[string]bool{}
	var reqs []acked
	keyed := map[string]acked{} // idempotency key → the request it queued
	workers := []*proc{}
	kills, restarts := 0, 0
	start := func() {
		t.Setenv("PURGE_MAX_RETRY", strconv.Itoa(rng.IntN(4)))
		workers = append(workers, e.startWorkerProcess())
	}
	start()
	start()
	for r := range rounds {
		// a wave of requests: URLs and tags, some poison, some keyed
		for i := range 40 {
			zone := names[rng.IntN(3)]
			var pr tasks.PurgeRequest
			a := acked{zone: zoneNames[zone]}
			n := 1 + rng.IntN(150)
			if rng.IntN(3) == 0 {
				pr.Zone, a.kind = zone, purge.Tags
				for j := range n {
					pr.Tags = append(pr.Tags, fmt.Sprintf("inv-%d-%d-%d", r, i, j))
				}
				a.items = pr.Tags
			} else {
				a.kind = purge.Files
				for j := range n {
					pr.Files = append(pr.Files, purge.File{URL: fmt.Sprintf("https://%s/inv/%d/%d/%d", zone, r, i, j)})
					a.items = append(a.items, pr.Files[j].URL)
				}
			}
			if rng.IntN(10) == 0 {
				bad := a.items[rng.IntN(len(a.items))]
				poison[bad] = true
				if rng.IntN(2) == 0 {
					e.sim.Poison(bad)
				} else {
					e.sim.PoisonQuietly(bad)
				}
			}
			if rng.IntN(4) == 0 {
				pr.IdempotencyKey = fmt.Sprintf("deploy-%d-%d", r, i)
			}
			rc, err := producer.Enqueue(context.Background(), pr)
			if err != nil {
				continue // not acknowledged: nothing promised
			}
			a.id = rc.ID
			reqs = append(reqs, a)
			if pr.IdempotencyKey != "" {
				keyed[pr.IdempotencyKey] = a
			}
		}
		// re-runs of earlier deploys with the same key
		for key := range keyed {
			if rng.IntN(2) == 0 {
				continue
			}
			a := keyed[key]
			pr := tasks.PurgeRequest{IdempotencyKey: key}
			if a.kind == purge.Tags {
				pr.Zone, pr.Tags = zoneName(a.zone), a.items
			} else {
				pr.Files = tasks.URLs(a.items...)
			}
			if rc, err := producer.Enqueue(context.Background(), pr); err == nil && rc.ID != a.id {
				t.Errorf("re-run of %s got id %s, want %s", key, rc.ID, a.id)
			}
		}
		// faults, in random order
		for _, f := range rng.Perm(5) {
			time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
			switch f {
			case 0:
				k := rng.IntN(len(workers))
				workers[k].kill()
				workers = append(workers[:k], workers[k+1:]...)
				kills++
				start()
			case 1:
				srv.Stop()
				time.Sleep(time.Duration(200+rng.IntN(1000)) * time.Millisecond)
				if err := srv.Restart(); err != nil {
					t.Fatal(err)
				}
				restarts++
			case 2:
				e.sim.Force429([]purge.Scope{purge.ScopeGlobal, purge.ScopeFlex, purge.ScopeURL}[rng.IntN(3)], 1+rng.IntN(2))
			case 3:
				proxy.SetDrop([]float64{0, 0.01, 0.03}[rng.IntN(3)])
			case 4:
				start() // one more worker for a while
			}
		}
	}
	ids := make([]string, len(reqs))
	for i, a := range reqs {
		ids[i] = a.id
	}
	statuses := e.waitDone(5*time.Minute, ids...)
	checkInvariant(t, e, reqs, statuses, poison)
	done, failed, items := 0, 0, 0
	for _, a := range reqs {
		items += len(a.items)
		if statuses[a.id].State == "done" {
			done++
		} else {
			failed++
		}
	}
	dead, _ := e.dead.Count(context.Background())
	t.Logf("%d requests (%d items): %d done, %d failed; %d dead-letter entries (%d poison items); faults: %d worker kills, %d Redis restarts, %d replies lost; simulator %+v",
		len(reqs), items, done, failed, dead, len(poison), kills, restarts, proxy.Dropped(), e.sim.Stats())
}

// producerVia is a producer client whose Redis is at redisURL.
func producerVia(t *testing.T, redisURL string) *tasks.Client {
	t.Helper()
	rdb, _, err := redisconn.Open(redisURL, redisconn.Producer)
	if err != nil {
		t.Fatal(err)
	}
	ac := asynq.NewClientFromRedisClient(rdb)
	t.Cleanup(func() { ac.Close(); rdb.Close() })
	zones, err := tasks.ParseZones(joinZones())
	if err != nil {
		t.Fatal(err)
	}
	return tasks.NewClient(ac, tasks.ClientOptions{Zones: zones, Redis: rdb})
}

func joinZones() string {
	var parts []string
	for name, id := range zoneNames {
		parts = append(parts, name+"="+id)
	}
	return strings.Join(parts, ",")
}

func zoneName(id string) string {
	for name, zid := range zoneNames {
		if zid == id {
			return name
		}
	}
	return id
}

// checkInvariant checks the promise for every acknowledged request.
func checkInvariant(t *testing.T, e *env, reqs []acked, statuses map[string]batching.Status, poison map[string]bool) {
	t.Helper()
	ctx := context.Background()
	accepted := map[string]bool{} // zone id + item
	for _, c := range e.sim.Calls() {
		if c.Accepted() {
			for _, it := range c.Items {
				accepted[c.Zone+" "+it] = true
			}
		}
	}
	entries, err := e.dead.Entries(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	dead := map[string][]batching.DeadEntry{}
	for _, en := range entries {
		dead[en.Zone+" "+en.Item] = append(dead[en.Zone+" "+en.Item], en)
		if !poison[en.Item] && !strings.HasPrefix(en.Reason, "gave up") {
			t.Errorf("%s dead-lettered for another's fault: %s", en.Item, en.Reason)
		}
	}
	for _, a := range reqs {
		st := statuses[a.id]
		lost, deadHere := 0, 0
		for _, it := range a.items {
			key := a.zone + " " + strings.ToLower(it)
			if a.kind == purge.Files {
				key = a.zone + " " + it
			}
			switch {
			case accepted[key]:
			case len(dead[key]) > 0:
				deadHere++
			default:
				lost++
			}
		}
		if lost > 0 {
			t.Errorf("request %s: %d of %d items neither accepted nor dead-lettered (status %+v)", a.id, lost, len(a.items), st)
		}
		switch {
		case st.State == "done" && (st.Dead != 0 || deadHere != 0):
			t.Errorf("request %s reads done with %d items dead-lettered: %+v", a.id, deadHere, st)
		case st.State == "failed" && (st.Dead == 0 || deadHere == 0):
			t.Errorf("request %s reads failed without dead entries: %+v", a.id, st)
		}
	}
	info, err := asynq.NewInspectorFromRedisClient(e.rdb).GetQueueInfo(tasks.QueueCalls)
	if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
		t.Fatal(err)
	}
	if info != nil && info.Archived != 0 {
		t.Errorf("%d purge:call tasks archived outside the dead-letter queue", info.Archived)
	}
}

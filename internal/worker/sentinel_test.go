package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/rate"
	"github.com/purgeq/purgeq/internal/redisconn"
	"github.com/purgeq/purgeq/internal/testredis"
	"github.com/purgeq/purgeq/internal/testwait"
	"github.com/purgeq/purgeq/purge/cftest"
	"github.com/purgeq/purgeq/tasks"
)

// TestSentinelFailover: the master dies mid-flood (SIGKILL); Sentinel
// promotes the replica; the workers follow it and every item queued before
// the failover is purged.
func TestSentinelFailover(t *testing.T) {
	sentinels, err := testredis.StartSentinels()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sentinels.Close) // after the workers stop
	limit := rate.Per(20, time.Second)
	e := setup(t, cftest.Config{GlobalLimit: limit, Block: time.Second}, map[string]string{
		"PURGE_REDIS_URL": sentinels.URL(), "PURGE_GLOBAL_LIMIT": limit.String(), "PURGE_GLOBAL_GUARD": "50ms",
		"PURGE_COOLDOWN": "1s", "PURGE_BATCH_WAIT": "200ms"})
	rdb, _, err := redisconn.Open(sentinels.URL(), redisconn.Tuning{MaxRetries: 25, MaxRetryBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	ac := asynq.NewClientFromRedisClient(rdb)
	defer ac.Close()
	zones, _ := tasks.ParseZones(e.vars["PURGE_ZONES"])
	client := tasks.NewClient(ac, tasks.ClientOptions{Zones: zones})
	outbox := batching.NewOutbox(rdb, time.Hour)
	e.startWorker()
	e.startWorker()

	var ids []string
	for i := range 60 {
		zone := []string{"a.example", "b.example", "c.example"}[i%3]
		pr := tasks.PurgeRequest{Zone: zone}
		for j := range 100 {
			pr.Files = append(pr.Files, purgeFile(fmt.Sprintf("https://%s/failover/%d/%d", zone, i, j)))
		}
		rc, err := client.Enqueue(context.Background(), pr)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rc.ID)
	}
	// Let the replica catch up with what producers were told is queued, as
	// a producer that needs it would (WAIT), then kill the master mid-flood.
	if n, err := sentinels.Master.Client().Do(context.Background(), "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT: %d, %v", n, err)
	}
	time.Sleep(time.Second)
	sentinels.Master.Kill()
	killed := time.Now()

	purged := 0
	testwait.For(t, 90*time.Second, "every request after the failover", func() bool {
		purged = 0
		for _, id := range ids {
			st, err := outbox.Status(context.Background(), id)
			if err != nil || st.State != "done" {
				return false
			}
			purged += st.Purged
		}
		return true
	})
	t.Logf("purged %d items; finished %v after the master was killed; %+v", purged, time.Since(killed).Round(time.Second), e.sim.Stats())
	if purged != 6000 {
		t.Errorf("purged %d, want 6000", purged)
	}
}

package worker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/rate"
	"github.com/purgeq/purgeq/internal/redisconn"
	"github.com/purgeq/purgeq/internal/testredis"
	"github.com/purgeq/purgeq/internal/testwait"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/purge/cftest"
	"github.com/purgeq/purgeq/tasks"
)

// TestRedisCluster runs the queue and the limits on a Redis Cluster of three
// masters started here: every item is purged and the global window holds.
func TestRedisCluster(t *testing.T) {
	cluster, err := testredis.StartCluster(3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close) // after the workers stop: cleanups run last-in first-out
	limit := rate.Per(20, time.Second)
	e := setup(t, cftest.Config{GlobalLimit: limit, Block: time.Second}, map[string]string{
		"PURGE_REDIS_URL": cluster.URL(), "PURGE_GLOBAL_LIMIT": limit.String(), "PURGE_GLOBAL_GUARD": "50ms",
		"PURGE_COOLDOWN": "1s", "PURGE_BATCH_WAIT": "200ms"})
	rdb, _, err := redisconn.Open(cluster.URL(), redisconn.Tuning{})
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
	for i := range 30 {
		zone := []string{"a.example", "b.example", "c.example"}[i%3]
		pr := tasks.PurgeRequest{Zone: zone, Tags: []string{fmt.Sprint("cluster-", i)}}
		for j := range 100 {
			pr.Files = append(pr.Files, purgeFile(fmt.Sprintf("https://%s/cluster/%d/%d", zone, i, j)))
		}
		rc, err := client.Enqueue(context.Background(), pr)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rc.ID)
	}
	purged := 0
	testwait.For(t, 60*time.Second, "every request on the cluster", func() bool {
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
	st := e.sim.Stats()
	var where []string
	for _, key := range []string{"purgeq:{purgeq}:lanes", "asynq:{purge-calls}:pending", "asynq:{purge-requests}:pending", "purgeq:limits:{x}:window"} {
		slot, _ := rdb.ClusterKeySlot(context.Background(), key).Result()
		where = append(where, fmt.Sprintf("%s → slot %d", key, slot))
	}
	t.Logf("purged %d items in %d calls; most in a window %d of %d; %s", purged, st.Accepted, st.MaxInWindow, limit.N, strings.Join(where, "; "))
	if purged != 3030 || st.Exceeded != 0 || st.MaxInWindow > limit.N || st.Global429 != 0 {
		t.Errorf("purged %d (want 3030); %+v", purged, st)
	}
}

func purgeFile(u string) purge.File { return purge.File{URL: u} }

package worker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/purgeq/purgeq/internal/keyspace"
	"github.com/purgeq/purgeq/internal/testredis"
	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge/cftest"
)

// scaledOutEnv is a world whose Redis is started by the test (a cluster or
// Sentinels) instead of the package's single server.
func scaledOutEnv(t *testing.T, redisURL string, limit rate.Rate) *env {
	e := setup(t, cftest.Config{GlobalLimit: limit, Block: time.Second}, map[string]string{
		"PURGE_GLOBAL_LIMIT": limit.String(), "PURGE_GLOBAL_GUARD": "50ms", "PURGE_COOLDOWN": "1s", "PURGE_BATCH_WAIT": "200ms"})
	e.onRedis(redisURL)
	e.startWorker()
	e.startWorker()
	return e
}

// TestRedisCluster runs the queue and the limits on a Redis Cluster of three
// masters started here: every item is purged and the global window holds.
func TestRedisCluster(t *testing.T) {
	cluster, err := testredis.StartCluster(3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close) // after the workers stop: cleanups run last-in first-out
	limit := rate.Per(20, time.Second)
	e := scaledOutEnv(t, cluster.URL(), limit)
	purged, _ := settled(t, e, e.flood(3000, "cluster"), 60*time.Second)

	st := e.sim.Stats()
	var where []string
	for _, key := range []string{keyspace.Lanes, "asynq:{purge-calls}:pending", "asynq:{purge-requests}:pending", "purgeq:limits:{x}:window"} {
		slot, _ := cluster.Nodes[0].Client().ClusterKeySlot(context.Background(), key).Result()
		where = append(where, fmt.Sprintf("%s → slot %d", key, slot))
	}
	t.Logf("purged %d items in %d calls; most in a window %d of %d; %s", purged, st.Accepted, st.MaxInWindow, limit.N, strings.Join(where, "; "))
	if purged != 3000 || st.Exceeded != 0 || st.MaxInWindow > limit.N || st.Global429 != 0 {
		t.Errorf("purged %d (want 3000); %+v", purged, st)
	}
}

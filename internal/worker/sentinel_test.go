package worker_test

import (
	"testing"
	"time"

	"github.com/purgeq/purgeq/internal/testredis"
	"github.com/purgeq/purgeq/limits/rate"
)

// TestSentinelFailover: the master dies mid-flood (SIGKILL); Sentinel
// promotes the replica; the workers follow it and every item queued before
// the failover is purged. The producer waits for the replica (WAIT) before
// it reports a request queued, as PURGE_REDIS_REPLICAS=1 does.
func TestSentinelFailover(t *testing.T) {
	sentinels, err := testredis.StartSentinels()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sentinels.Close) // after the workers stop
	e := scaledOutEnv(t, sentinels.URL(), rate.Per(20, time.Second))
	ids := e.flood(6000, "failover")
	time.Sleep(time.Second) // mid-flood
	sentinels.Master.Kill()
	killed := time.Now()
	purged, _ := settled(t, e, ids, 90*time.Second)
	t.Logf("purged %d items; finished %v after the master was killed; %+v", purged, time.Since(killed).Round(time.Second), e.sim.Stats())
	if purged != 6000 {
		t.Errorf("purged %d, want 6000", purged)
	}
}

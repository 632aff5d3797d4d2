package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/purgeq/purgeq/internal/rate"
	"github.com/purgeq/purgeq/internal/testredis"
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
	e := scaledOutEnv(t, sentinels.URL(), rate.Per(20, time.Second))
	ids := e.flood(6000, "failover")
	// Let the replica catch up with what producers were told is queued
	// (WAIT; replication is asynchronous), then kill the master mid-flood.
	if n, err := sentinels.Master.Client().Do(context.Background(), "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT: %d, %v", n, err)
	}
	time.Sleep(time.Second)
	sentinels.Master.Kill()
	killed := time.Now()
	purged, _ := settled(t, e, ids, 90*time.Second)
	t.Logf("purged %d items; finished %v after the master was killed; %+v", purged, time.Since(killed).Round(time.Second), e.sim.Stats())
	if purged != 6000 {
		t.Errorf("purged %d, want 6000", purged)
	}
}

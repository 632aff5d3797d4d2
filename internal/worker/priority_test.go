package worker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/purge/cftest"
	"github.com/purgeq/purgeq/tasks"
)

// TestHighPriorityOvertakesBulk: with the flex bucket at one call a second
// and a bulk backlog waiting, each high-priority tag enqueued meanwhile is
// accepted ahead of the backlog — within about two token intervals of its
// enqueue (p99 logged; the bound asserted is the backlog's own length, so
// a slow machine does not fail it) — while every bulk call but the last
// stays full. PURGEQ_PRIORITY_BULK and PURGEQ_PRIORITY_HIGH set the sizes
// (3,000 and 20 for the README's figure).
func TestHighPriorityOvertakesBulk(t *testing.T) {
	bulk, high := envInt("PURGEQ_PRIORITY_BULK", 1000), envInt("PURGEQ_PRIORITY_HIGH", 6)
	e := setup(t, cftest.Config{}, map[string]string{"PURGE_FLEX_LIMIT": "1/1s", "PURGE_FLEX_BURST": "1", "PURGE_BATCH_WAIT": "200ms",
		"PURGE_INLINE_WAIT": "3s"})
	e.startWorker()
	var tags []string
	for i := range bulk {
		tags = append(tags, fmt.Sprintf("bulk-%d", i))
	}
	bulkID := e.enqueue(tasks.PurgeRequest{Zone: "a.example", Tags: tags, Priority: "bulk"}).ID
	time.Sleep(1500 * time.Millisecond) // the backlog is being sent
	enqueued := map[string]time.Time{}
	var ids []string
	for i := range high {
		tag := fmt.Sprintf("hotfix-%d", i)
		enqueued[tag] = time.Now()
		ids = append(ids, e.enqueue(tasks.PurgeRequest{Zone: "a.example", Tags: []string{tag}, Priority: "high"}).ID)
		time.Sleep(1500 * time.Millisecond)
	}
	e.waitDone(time.Duration(bulk/100+high+30)*2*time.Second, append(ids, bulkID)...)
	var lat []time.Duration
	var lastBulk time.Time
	partial := 0
	for _, c := range tally(e.sim.Calls()).accepted {
		if c.Kind != purge.Tags {
			continue
		}
		if at, ok := enqueued[c.Items[0]]; ok {
			lat = append(lat, c.At.Sub(at))
			continue
		}
		lastBulk = c.At
		if len(c.Items) < 100 {
			partial++
		}
	}
	if len(lat) != high {
		t.Fatalf("%d high tags accepted, want %d", len(lat), high)
	}
	p99 := percentile(lat, 0.99)
	t.Logf("%d bulk tags, %d high: high enqueue→accepted p50 %v, p99 %v; bulk calls not full: %d; backlog drained %v after the last high",
		bulk, high, percentile(lat, 0.5).Round(time.Millisecond), p99.Round(time.Millisecond), partial, lastBulk.Sub(enqueued[fmt.Sprintf("hotfix-%d", high-1)]).Round(time.Second))
	if partial > 1 {
		t.Errorf("%d bulk calls were not full", partial)
	}
	if !lastBulk.After(enqueued[fmt.Sprintf("hotfix-%d", high-1)]) {
		t.Fatal("the backlog drained before the last high tag came: the test proves nothing")
	}
	if p99 > time.Duration(bulk/100)*time.Second/2 {
		t.Errorf("high tags waited p99 %v: not ahead of a backlog of %d calls", p99, bulk/100)
	}
}

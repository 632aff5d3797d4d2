package worker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/purge/cftest"
	"github.com/purgeq/purgeq/tasks"
)

// TestLoneZoneNotBehindBacklog: the flex bucket carries one call a second
// and 30 full calls of a.example wait for it; a lone tag of b.example
// queued 3 s later leaves within about one token interval plus the batch
// wait, not as call 31 behind the whole backlog (it did before calls
// waited in line by lane). PURGEQ_FAIR_BACKLOG sets the backlog's tags
// (3,000 for the README's figure).
func TestLoneZoneNotBehindBacklog(t *testing.T) {
	backlog := envInt("PURGEQ_FAIR_BACKLOG", 3000)
	e := setup(t, cftest.Config{}, map[string]string{"PURGE_FLEX_LIMIT": "1/1s", "PURGE_FLEX_BURST": "1", "PURGE_BATCH_WAIT": "2s"})
	e.startWorker()
	var tags []string
	for i := range backlog {
		tags = append(tags, fmt.Sprintf("a-%d", i))
	}
	busy := e.enqueue(tasks.PurgeRequest{Zone: "a.example", Tags: tags}).ID
	time.Sleep(3 * time.Second) // the backlog is being sent
	at := time.Now()
	lone := e.enqueue(tasks.PurgeRequest{Zone: "b.example", Tags: []string{"lone"}}).ID
	e.waitDone(time.Duration(backlog/100+30)*2*time.Second, busy, lone)
	var waited time.Duration
	position, calls := 0, 0
	for _, c := range tally(e.sim.Calls()).accepted {
		if c.Kind != purge.Tags {
			continue
		}
		calls++
		if c.Zone == zoneNames["b.example"] {
			waited, position = c.At.Sub(at), calls
		}
	}
	t.Logf("a lone tag of another zone queued 3 s into a backlog of %d calls waited %v and went out as call %d of %d",
		backlog/100, waited.Round(time.Millisecond), position, calls)
	if position == 0 {
		t.Fatal("the lone tag's call was not seen")
	}
	if position == calls {
		t.Fatal("the backlog drained before the lone tag went: the test proves nothing")
	}
	// one token interval plus the batch wait is 3 s, about call 7 here;
	// the bound leaves room for a loaded machine
	if position > backlog/100/2 {
		t.Errorf("the lone tag went out as call %d of %d: behind the backlog", position, calls)
	}
}

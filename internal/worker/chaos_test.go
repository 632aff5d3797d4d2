package worker_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/purge/cftest"
)

// TestChaos throws everything at once at three worker processes during a
// sustained flood: simulator faults (5xx, hangs, resets, malformed bodies),
// poison items, forced global 429s, worker SIGKILLs and a Redis restart.
// At the end every item is purged or dead-lettered (exactly the poison
// ones), no call reached the API during a cooldown after the in-flight
// grace, and the global window was never exceeded (with a 200 ms guard:
// three -race processes on two cores, killed and restarted, stall for tens
// of milliseconds between acquiring and sending). CI runs it small;
// PURGEQ_CHAOS_ITEMS and PURGEQ_CHAOS_ROUNDS make it long.
func TestChaos(t *testing.T) {
	items, rounds := envInt("PURGEQ_CHAOS_ITEMS", 8000), envInt("PURGEQ_CHAOS_ROUNDS", 2)
	const cooldown = 600 * time.Millisecond
	limit := rate.Per(10, time.Second) // the flood lasts through every round
	e := setup(t, cftest.Config{GlobalLimit: limit, Block: cooldown}, map[string]string{
		"PURGE_BATCH_WAIT": "200ms", "PURGE_COOLDOWN": cooldown.String(), "PURGE_GLOBAL_LIMIT": limit.String(), "PURGE_GLOBAL_GUARD": "200ms",
		"PURGE_CLOUDFLARE_API_TIMEOUT": "300ms", "PURGE_MAX_RETRY": "15"})
	e.sim.SetFaults(cftest.Faults{Error5xx: 0.10, Hang: 0.03, Reset: 0.03, Malformed: 0.02}, 11)
	poison := map[string]bool{}
	for i := 0; i < items; i += items / 5 {
		u := fmt.Sprintf("https://%s/chaos/%d", []string{"a.example", "b.example", "c.example"}[i%3], i)
		poison[u] = true
		e.sim.Poison(u)
	}
	procs := []*proc{e.startWorkerProcess(), e.startWorkerProcess(), e.startWorkerProcess()}
	ids := e.flood(items, "chaos")
	for r := range rounds {
		time.Sleep(1500 * time.Millisecond)
		e.sim.Force429(purge.ScopeGlobal, 1)
		procs[r%3].kill()
		procs[r%3] = e.startWorkerProcess()
		time.Sleep(1500 * time.Millisecond)
		srv.Stop()
		time.Sleep(time.Second)
		if err := srv.Restart(); err != nil {
			t.Fatal(err)
		}
	}
	purged, dead := settled(t, e, ids, 5*time.Minute)

	st := e.sim.Stats()
	calls := e.sim.Calls()
	late := 0
	for _, c := range calls {
		if c.Status != 429 || c.DuringBlock {
			continue
		}
		for _, d := range calls {
			if d.At.After(c.At.Add(inFlightGrace)) && d.At.Before(c.At.Add(cooldown)) {
				late++
			}
		}
	}
	dups := 0
	for _, its := range tally(calls).items {
		for _, n := range its {
			dups += n - 1
		}
	}
	resent, _ := e.outbox.Resent(context.Background())
	t.Logf("%d items: purged %d, dead %d (poison %d); calls %d, faults %d, 429s %d, most in a window %d of %d; late calls %d; duplicate purges %d, resent calls %d",
		items, purged, dead, len(poison), st.Calls, st.Faults, st.Global429, st.MaxInWindow, limit.N, late, dups, resent)
	if purged+dead != items || dead != len(poison) {
		t.Errorf("purged %d + dead %d ≠ %d items, or dead ≠ %d poison", purged, dead, items, len(poison))
	}
	for _, it := range deadItems(t, e) {
		if !poison[it] {
			t.Errorf("%s was dead-lettered but is not poison", it)
		}
	}
	if late != 0 || st.Exceeded != 0 || st.MaxInWindow > limit.N {
		t.Errorf("limits broken: late %d, %+v", late, st)
	}
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

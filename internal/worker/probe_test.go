package worker_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/testwait"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/purge/cftest"
	"github.com/purgeq/purgeq/tasks"
)

// TestVerificationRepurgesOnce runs a worker with PURGE_VERIFY=1 and its
// probes sent through PURGE_PROBE_RESOLVE to a test server playing the
// edge: /stale is a cache hit an hour old, /fresh a miss. The stale URL is
// purged exactly once more (the simulator receives it twice, never a
// third time) and its history reads "repurged" for the first purge and
// "stale" for the re-purge (the edge still answers with the old copy); the
// fresh URL's entry reads "fresh".
func TestVerificationRepurgesOnce(t *testing.T) {
	var mu sync.Mutex
	probes := map[string]int{}
	edge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		probes[r.URL.Path]++
		mu.Unlock()
		if r.URL.Path == "/stale" {
			w.Header().Set("CF-Cache-Status", "HIT")
			w.Header().Set("Age", "3600")
			return
		}
		w.Header().Set("CF-Cache-Status", "MISS")
	}))
	t.Cleanup(edge.Close)
	_, port, _ := net.SplitHostPort(edge.Listener.Addr().String())
	e := setup(t, cftest.Config{}, map[string]string{"PURGE_VERIFY": "1", "PURGE_PROBE_RESOLVE": "a.example:" + port + ":127.0.0.1"})
	e.startWorker()
	stale, fresh := "http://a.example:"+port+"/stale", "http://a.example:"+port+"/fresh"
	rc := e.enqueue(tasks.PurgeRequest{Files: []purge.File{{URL: stale}, {URL: fresh}}})
	e.waitDone(30*time.Second, rc.ID)

	zones, err := tasks.ParseZones(e.vars["PURGE_ZONES"])
	if err != nil {
		t.Fatal(err)
	}
	h := batching.NewHistory(e.rdb, time.Hour)
	history := func(url string, want ...batching.Verification) {
		t.Helper()
		var es []batching.Entry
		testwait.For(t, 30*time.Second, fmt.Sprintf("history of %s verified %v", url, want), func() bool {
			es, err = h.Find(context.Background(), zones, url, "")
			if err != nil {
				t.Fatal(err)
			}
			if len(es) != len(want) {
				return false
			}
			for i := range es {
				if es[i].Verification != want[i] {
					return false
				}
			}
			return true
		})
	}
	history(fresh, batching.Fresh)
	history(stale, batching.Stale, batching.Repurged) // newest first
	sent := tally(e.sim.Calls())
	if n := sent.items[laneKey{"za", purge.Files}][stale]; n != 2 {
		t.Errorf("the stale URL was purged %d times; want twice (one re-purge)", n)
	}
	if n := sent.items[laneKey{"za", purge.Files}][fresh]; n != 1 {
		t.Errorf("the fresh URL was purged %d times; want once", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if probes["/stale"] != 2 || probes["/fresh"] != 1 {
		t.Errorf("probes %v; want /stale twice (each purge), /fresh once", probes)
	}
}

package batching

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/purgeq/purgeq/internal/keyspace"
	"github.com/purgeq/purgeq/purge"
)

// readyIDs lists the ready index's lanes now.
func readyIDs(t *testing.T, ob *Outbox) []string {
	t.Helper()
	lanes, err := ob.Ready(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, l := range lanes {
		ids = append(ids, l.id())
	}
	slices.Sort(ids)
	return ids
}

// TestReadyIndex: a lane is listed when items arrive, not while its chunk
// waits out the batch wait or is held for busy limits, again when items
// arrive, and never once empty.
func TestReadyIndex(t *testing.T) {
	ob, rdb := newOutbox(t)
	ctx := context.Background()
	a, b := Lane{Zone: "za", Kind: purge.Files}, Lane{Zone: "zb", Kind: purge.Tags}
	admit(t, ob, request("r1", false, "za", map[purge.Kind][]string{purge.Files: {"https://a.example/1"}}))
	admit(t, ob, request("r2", false, "zb", map[purge.Kind][]string{purge.Tags: {"t1"}}))
	if got := readyIDs(t, ob); !slices.Equal(got, []string{a.id(), b.id()}) {
		t.Fatalf("ready %v after admission", got)
	}
	// a's chunk waits an hour: the pop that says so takes it off the list
	if res, _ := pop(t, ob, PopRequest{Lane: a, Cap: 100, Wait: time.Hour}); res.Status != NotReady {
		t.Fatalf("pop a: %+v", res)
	}
	// b is held while the limits are busy
	if err := ob.Hold(ctx, b, time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := readyIDs(t, ob); len(got) != 0 {
		t.Fatalf("ready %v while a waits and b is held", got)
	}
	// new items bring b back at once
	admit(t, ob, request("r3", false, "zb", map[purge.Kind][]string{purge.Tags: {"t2"}}))
	if got := readyIDs(t, ob); !slices.Equal(got, []string{b.id()}) {
		t.Fatalf("ready %v after b got items", got)
	}
	// popped empty, b leaves the index; a stays out until its time
	if res, call := pop(t, ob, PopRequest{Lane: b, Cap: 100, AllowPartial: true}); res.Status != Popped || len(call.Items) != 2 {
		t.Fatalf("pop b: %+v", res)
	}
	if got := readyIDs(t, ob); len(got) != 0 {
		t.Fatalf("ready %v after b emptied", got)
	}
	if n, _ := rdb.ZCard(ctx, keyspace.Ready).Result(); n != 1 {
		t.Errorf("%d lanes indexed, want a's alone", n)
	}
	// at start-up every lane with items is due: a's hour (another
	// worker's batch wait) is not this worker's
	if err := ob.IndexLanes(ctx, false); err != nil {
		t.Fatal(err)
	}
	if got := readyIDs(t, ob); len(got) != 0 {
		t.Errorf("ready %v after indexing missing lanes only", got)
	}
	if err := ob.IndexLanes(ctx, true); err != nil {
		t.Fatal(err)
	}
	if got := readyIDs(t, ob); !slices.Equal(got, []string{a.id()}) {
		t.Errorf("ready %v after IndexLanes", got)
	}
	// a lane admitted by a version without the index is indexed too
	rdb.ZRem(ctx, keyspace.Ready, a.id())
	if err := ob.IndexLanes(ctx, false); err != nil {
		t.Fatal(err)
	}
	if got := readyIDs(t, ob); !slices.Equal(got, []string{a.id()}) {
		t.Errorf("ready %v after IndexLanes of an unindexed lane", got)
	}
}

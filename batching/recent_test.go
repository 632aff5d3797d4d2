package batching

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/purgeq/purgeq/internal/keyspace"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

// TestCallLog: calls are counted per account and minute, across an hour's
// boundary, and each hour's counts expire two hours after the hour.
func TestCallLog(t *testing.T) {
	_, rdb := newOutbox(t)
	ctx := context.Background()
	l := NewCallLog(rdb)
	hour := time.Date(2030, 1, 2, 10, 0, 0, 0, time.UTC)
	count := func(account string, at time.Time, n int) {
		for range n {
			if err := l.Count(ctx, account, at); err != nil {
				t.Fatal(err)
			}
		}
	}
	count("a", hour.Add(-time.Minute), 2)                 // 09:59
	count("a", hour.Add(30*time.Second), 3)               // 10:00
	count("a", hour.Add(2*time.Minute+59*time.Second), 1) // 10:02
	count("b", hour, 7)

	got, err := l.PerMinute(ctx, "a", hour.Add(-2*time.Minute), 6) // 09:58 … 10:03
	if want := []int{0, 2, 3, 0, 1, 0}; err != nil || !slices.Equal(got, want) {
		t.Errorf("PerMinute(a) = %v, %v; want %v", got, err, want)
	}
	if got, _ := l.PerMinute(ctx, "b", hour, 2); !slices.Equal(got, []int{7, 0}) {
		t.Errorf("PerMinute(b) = %v; want [7 0]", got)
	}
	if got, _ := l.PerMinute(ctx, "c", hour, 60); len(got) != 60 || slices.Max(got) != 0 {
		t.Errorf("an account without calls: %v", got)
	}
	at, err := rdb.ExpireTime(ctx, keyspace.Calls("a", hour.Unix()/3600)).Result()
	if want := hour.Add(time.Hour + callLogKeep).Unix(); err != nil || int64(at/time.Second) != want {
		t.Errorf("the hour's counts expire at %v (%v), want %d", at, err, want)
	}
}

// TestRecent: the newest history entries come back newest first, with
// their Cloudflare ids, as many as asked.
func TestRecent(t *testing.T) {
	_, rdb := newOutbox(t)
	ctx := context.Background()
	h := NewHistory(rdb, time.Hour)
	if es, err := h.Recent(ctx, 5); err != nil || len(es) != 0 {
		t.Errorf("an empty history: %+v, %v", es, err)
	}
	for i := range 12 {
		c := &tasks.Call{ID: fmt.Sprintf("call-%02d", i), Zone: "za", Kind: purge.Tags, Items: []string{fmt.Sprint("tag-", i)}}
		if err := h.Remember(ctx, c, "default", fmt.Sprint("cf-", i)); err != nil {
			t.Fatal(err)
		}
	}
	es, err := h.Recent(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range es {
		ids = append(ids, e.Call+"="+e.CloudflareID)
		if e.Zone != "za" || e.Kind != purge.Tags || e.At.IsZero() {
			t.Errorf("entry %+v: want zone za, kind tags and a time", e)
		}
	}
	if want := []string{"call-11=cf-11", "call-10=cf-10", "call-09=cf-9"}; !slices.Equal(ids, want) {
		t.Errorf("Recent(3) = %v, want %v", ids, want)
	}
	if es, _ := h.Recent(ctx, 100); len(es) != 12 {
		t.Errorf("Recent(100) = %d entries, want all 12", len(es))
	}
	// an entry past the retention is skipped, not an error
	if err := rdb.HDel(ctx, keyspace.History, "12").Err(); err != nil {
		t.Fatal(err)
	}
	if es, err := h.Recent(ctx, 2); err != nil || len(es) != 1 || es[0].Call != "call-10" {
		t.Errorf("Recent(2) without the newest entry = %+v, %v; want call-10 alone", es, err)
	}
}

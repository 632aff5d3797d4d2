package batching

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/internal/keyspace"
	"github.com/purgeq/purgeq/internal/testredis"
	"github.com/purgeq/purgeq/limits"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

var srv *testredis.Server

func TestMain(m *testing.M) { testredis.Main(m, &srv) }

func newOutbox(t *testing.T) (*Outbox, *redis.Client) {
	t.Helper()
	rdb := testredis.Connect(t)
	testredis.Flush(t, rdb)
	return NewOutbox(rdb, time.Hour), rdb
}

func request(id string, soft bool, zone string, kinds map[purge.Kind][]string) *tasks.Request {
	return &tasks.Request{ID: id, EnqueuedAt: time.Now().UnixMilli(), Soft: soft, Zones: map[string]map[purge.Kind][]string{zone: kinds}}
}

func admit(t *testing.T, ob *Outbox, r *tasks.Request) {
	t.Helper()
	if err := ob.Admit(context.Background(), r, 0, 1); err != nil {
		t.Fatal(err)
	}
}

func pop(t *testing.T, ob *Outbox, p PopRequest) (PopResult, *tasks.Call) {
	t.Helper()
	if p.Window == 0 {
		p.Window = 10
	}
	if p.Lease == 0 {
		p.Lease = time.Hour
	}
	res, err := ob.Pop(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != Popped {
		return res, nil
	}
	call, err := tasks.DecodeCall(res.Call)
	if err != nil {
		t.Fatalf("payload %s: %v", res.Call, err)
	}
	return res, call
}

func status(t *testing.T, ob *Outbox, id string) Status {
	t.Helper()
	st, err := NewRequests(ob.rdb, ob.retention).Status(context.Background(), id)
	if err != nil {
		t.Fatalf("status %s: %v", id, err)
	}
	return st
}

func urls(n int, format string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(format, i)
	}
	return out
}

// TestCoalescing: items waiting twice are stored once and credited to
// both requests; a full chunk leaves after the wait (at once if eager), a
// partial one after the wait.
func TestCoalescing(t *testing.T) {
	ob, _ := newOutbox(t)
	ctx := context.Background()
	files := Lane{Zone: "z", Kind: purge.Files}
	admit(t, ob, request("r1", false, "z", map[purge.Kind][]string{purge.Files: urls(150, "https://a.example/%d")}))
	admit(t, ob, request("r2", false, "z", map[purge.Kind][]string{purge.Files: urls(120, "https://a.example/%d")}))
	admit(t, ob, request("r2", false, "z", map[purge.Kind][]string{purge.Files: {"https://x.example/"}}))
	if st, _ := NewRequests(ob.rdb, ob.retention).Status(ctx, "r2"); st.Total != 120 {
		t.Errorf("a request admitted twice has total %d, want 120", st.Total)
	}

	// A full chunk waits too, unless eager.
	if res, _ := pop(t, ob, PopRequest{Lane: files, Cap: 100, Wait: time.Hour}); res.Status != NotReady || res.ReadyIn < 59*time.Minute {
		t.Fatalf("full chunk before the wait: %+v", res)
	}
	_, call := pop(t, ob, PopRequest{Lane: files, Cap: 100, Wait: time.Hour, Eager: true})
	if call == nil || len(call.Items) != 100 || call.Kind != purge.Files || call.Zone != "z" {
		t.Fatalf("full chunk: %+v", call)
	}
	if call.Items[0] != "https://a.example/0" || call.Items[99] != "https://a.example/99" {
		t.Errorf("a full chunk left out of admission order: %s … %s", call.Items[0], call.Items[99])
	}
	if call.Sources[0] != "r1 r2" {
		t.Errorf("sources of a shared item = %q, want \"r1 r2\"", call.Sources[0])
	}
	res, _ := pop(t, ob, PopRequest{Lane: files, Cap: 100, Wait: time.Hour})
	if res.Status != NotReady || res.ReadyIn < 59*time.Minute {
		t.Fatalf("partial chunk before the wait: %+v", res)
	}
	res, _ = pop(t, ob, PopRequest{Lane: files, Cap: 100, Wait: 0})
	if res.Status != PartialReady || res.Size != 50 {
		t.Fatalf("partial chunk after the wait: %+v", res)
	}
	_, rest := pop(t, ob, PopRequest{Lane: files, Cap: 100, Wait: 0, AllowPartial: true})
	if rest == nil || len(rest.Items) != 50 {
		t.Fatalf("partial pop: %+v", rest)
	}
	if res, _ := pop(t, ob, PopRequest{Lane: files, Cap: 100}); res.Status != LaneEmpty {
		t.Errorf("empty lane: %+v", res)
	}

	if _, err := ob.Record(ctx, call, all(len(call.Items)), nil, Failure{}, nil); err != nil {
		t.Fatal(err)
	}
	// Items leave in admission order: the first 100 are r1's first 100,
	// all of which r2 asked for too.
	if st := status(t, ob, "r2"); st.Purged != 100 || st.State != "in_progress" {
		t.Errorf("r2 after the first call: %+v", st)
	}
	if _, err := ob.Record(ctx, rest, all(len(rest.Items)), nil, Failure{}, nil); err != nil {
		t.Fatal(err)
	}
	// Recording a call again (a re-run task) changes nothing.
	if e, err := ob.Record(ctx, rest, all(len(rest.Items)), nil, Failure{}, nil); err != nil || len(e) != 0 {
		t.Fatal(e, err)
	}
	if st := status(t, ob, "r1"); st.Purged != 150 || st.State != "done" {
		t.Errorf("r1: %+v", st)
	}
	if st := status(t, ob, "r2"); st.Purged != 120 || st.State != "done" {
		t.Errorf("r2: %+v", st)
	}
	lanes, _ := ob.Lanes(ctx)
	if len(lanes) != 0 {
		t.Errorf("lanes left: %v", lanes)
	}
}

// TestAdmissionAccounting: overlapping requests of every size, popped in
// chunks that cut across admissions, are each credited exactly their
// items, once; nothing of a lane stays in Redis once it is empty.
func TestAdmissionAccounting(t *testing.T) {
	ob, rdb := newOutbox(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(8, 8))
	lane := Lane{Zone: "z", Kind: purge.Files}
	want := map[string]int{}
	pops := 0
	drain := func(allowPartial bool) {
		for {
			_, call := pop(t, ob, PopRequest{Lane: lane, Cap: 1 + rng.IntN(120), Wait: 0, AllowPartial: allowPartial})
			if call == nil {
				return
			}
			pops++
			if _, err := ob.Record(ctx, call, all(len(call.Items)), nil, Failure{}, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	for r := range 300 {
		id := fmt.Sprintf("r%d", r)
		seen := map[string]bool{}
		var items []string
		for range 1 + rng.IntN(60) {
			it := fmt.Sprintf("https://a.example/%d", rng.IntN(2000))
			if !seen[it] {
				seen[it] = true
				items = append(items, it)
			}
		}
		admit(t, ob, request(id, false, "z", map[purge.Kind][]string{purge.Files: items}))
		want[id] = len(items)
		if r%7 == 0 {
			drain(r%2 == 0)
		}
	}
	drain(true)
	if pops < 50 {
		t.Fatalf("only %d pops: the test did not cut across admissions", pops)
	}
	for id, n := range want {
		if st := status(t, ob, id); st.Purged != n || st.Total != n || st.State != "done" {
			t.Errorf("%s: %+v, want %d purged", id, st, n)
		}
	}
	if keys, _ := rdb.Keys(ctx, prefix+"*:z|*").Result(); len(keys) != 0 {
		t.Errorf("an empty lane left keys: %v", keys)
	}
}

// TestPopRetried: a pop run again with the same call id (the Redis client
// retrying after a dropped connection) returns the same chunk instead of
// popping, and losing, another.
func TestPopRetried(t *testing.T) {
	ob, _ := newOutbox(t)
	ctx := context.Background()
	admit(t, ob, request("r", false, "z", map[purge.Kind][]string{purge.Files: urls(250, "https://a.example/%d")}))
	p := PopRequest{Lane: Lane{Zone: "z", Kind: purge.Files}, Cap: 100, Window: 10, Lease: time.Hour}
	first, err := ob.pop(ctx, p, "c-same")
	if err != nil || first.Status != Popped {
		t.Fatalf("first pop: %+v, %v", first, err)
	}
	again, err := ob.pop(ctx, p, "c-same")
	if err != nil || string(again.Call) != string(first.Call) {
		t.Fatalf("the retried pop returned %s, want the first chunk %s (%v)", again.Call, first.Call, err)
	}
	if stats, _ := ob.LaneStats(ctx); len(stats) != 1 || stats[0].Depth != 150 {
		t.Errorf("lane after a retried pop: %+v, want 150 waiting", stats)
	}
}

// TestRecordHandsOffInOneStep: the parts of a failed call sent again are
// in flight as soon as the outcome is recorded (a crash before their
// enqueue leaves them to the reaper, not lost), and a re-run finds the
// outcome with its dead-letter entries.
func TestRecordHandsOffInOneStep(t *testing.T) {
	ob, _ := newOutbox(t)
	ctx := context.Background()
	admit(t, ob, request("r", false, "z", map[purge.Kind][]string{purge.Files: urls(4, "https://a.example/%d")}))
	_, c := pop(t, ob, PopRequest{Lane: Lane{Zone: "z", Kind: purge.Files}, Cap: 100, AllowPartial: true})
	if err := ob.Handoff(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if done, _, _ := ob.Recorded(ctx, c.ID); done {
		t.Fatal("a call reads recorded before its outcome is")
	}
	rest := c.Sub(tasks.SubRest, []int{1, 2, 3})
	entries, err := ob.Record(ctx, c, nil, []int{0}, Failure{Reason: "refused", Code: 1015}, []*tasks.Call{rest})
	if err != nil || len(entries) != 1 {
		t.Fatalf("Record: %v, %v", entries, err)
	}
	inflight, err := ob.InFlight(ctx, tasks.SubCallIDs(c.ID)...)
	if err != nil || len(inflight) != 1 || inflight[rest.ID] == nil {
		t.Fatalf("in flight after Record: %v, %v; want %s", inflight, err, rest.ID)
	}
	if stranded, _ := ob.Stranded(ctx, 0); stranded[rest.ID] == nil {
		t.Error("the reaper does not see the re-sent part")
	}
	done, again, err := ob.Recorded(ctx, c.ID)
	if err != nil || !done || len(again) != 1 || again[0].ID != entries[0].ID {
		t.Errorf("Recorded: %v, %v, %v; want the entry %s", done, again, err, entries[0].ID)
	}
	if st := status(t, ob, "r"); st.Dead != 1 || st.State != "in_progress" {
		t.Errorf("status %+v", st)
	}
}

// TestMarkSentNamesTheAttempt: the same attempt marking twice (a retry
// after a lost reply) is a first send both times; another attempt is a
// re-send, counted once however often its own marking is retried.
func TestMarkSentNamesTheAttempt(t *testing.T) {
	ob, rdb := newOutbox(t)
	ctx := context.Background()
	for _, tc := range []struct {
		attempt string
		first   bool
		resent  int64
	}{{"a1", true, 0}, {"a1", true, 0}, {"a2", false, 1}, {"a2", false, 1}, {"a3", false, 2}} {
		first, err := ob.MarkSent(ctx, "call", tc.attempt)
		resent, _ := ob.Resent(ctx)
		if err != nil || first != tc.first || resent != tc.resent {
			t.Errorf("attempt %s: first %v, resent %d, %v; want %v, %d", tc.attempt, first, resent, err, tc.first, tc.resent)
		}
	}
	if ttl := rdb.PTTL(ctx, keyspace.Sent("call")).Val(); ttl <= 0 || ttl > markerTTL {
		t.Errorf("sent marker TTL %v, want at most %v", ttl, markerTTL)
	}
}

// TestNothingStaysForever: the keys of requests that never finish and of
// dispatchers that are gone expire.
func TestNothingStaysForever(t *testing.T) {
	ob, rdb := newOutbox(t)
	ctx := context.Background()
	admit(t, ob, request("r", false, "z", map[purge.Kind][]string{purge.Tags: {"a", "b"}}))
	if ttl := rdb.PTTL(ctx, keyspace.Request("r")).Val(); ttl <= 0 {
		t.Errorf("an unfinished request's status never expires (PTTL %v)", ttl)
	}
	p := PopRequest{Lane: Lane{Zone: "z", Kind: purge.Tags}, Cap: 100, AllowPartial: true, Owner: "gone", Lease: time.Minute}
	if res, _ := pop(t, ob, p); res.Status != Popped {
		t.Fatalf("pop: %+v", res)
	}
	if ttl := rdb.PTTL(ctx, keyspace.Outstanding(string(purge.ScopeFlex), "gone")).Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("a dispatcher's outstanding set has PTTL %v, want at most the lease", ttl)
	}
}

// TestAdmissionInSlices: a request larger than a slice is admitted in
// several scripts; admitting it again (a retried task) adds nothing, and a
// chunk that the version before slicing admitted is not admitted again.
func TestAdmissionInSlices(t *testing.T) {
	ob, rdb := newOutbox(t)
	ctx := context.Background()
	r := request("big", false, "z", map[purge.Kind][]string{purge.Tags: urls(2500, "t-%d"), purge.Hosts: {"a.example"}})
	admit(t, ob, r)
	admit(t, ob, r)
	if st := status(t, ob, "big"); st.Total != 2501 {
		t.Errorf("total %d, want 2501", st.Total)
	}
	if n, _ := rdb.HGet(ctx, keyspace.Request("big"), "slices:0").Int(); n != 3 {
		t.Errorf("%d slices recorded, want 3", n)
	}
	if stats, _ := ob.LaneStats(ctx); len(stats) != 2 || stats[0].Depth+stats[1].Depth != 2501 {
		t.Errorf("lanes %+v", stats)
	}
	rdb.HSet(ctx, keyspace.Request("old"), "chunk:0", 1, "total", 5, "pending", 0)
	admit(t, ob, request("old", false, "z", map[purge.Kind][]string{purge.Tags: urls(5, "old-%d")}))
	if st := status(t, ob, "old"); st.Total != 5 {
		t.Errorf("a chunk admitted by the previous version was admitted again: %+v", st)
	}
}

// TestHotItem: an item asked for by a thousand requests while it waits is
// sent once and credited to every one of them.
func TestHotItem(t *testing.T) {
	ob, _ := newOutbox(t)
	ctx := context.Background()
	for r := range 1000 {
		admit(t, ob, request(fmt.Sprintf("r%d", r), false, "z", map[purge.Kind][]string{purge.Tags: {"home"}}))
	}
	_, call := pop(t, ob, PopRequest{Lane: Lane{Zone: "z", Kind: purge.Tags}, Cap: 100, AllowPartial: true})
	if call == nil || len(call.Items) != 1 || len(strings.Fields(call.Sources[0])) != 1000 {
		t.Fatalf("hot item: %+v", call)
	}
	if _, err := ob.Record(ctx, call, []int{0}, nil, Failure{}, nil); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"r0", "r500", "r999"} {
		if st := status(t, ob, id); st.State != "done" || st.Purged != 1 {
			t.Errorf("%s: %+v", id, st)
		}
	}
}

// TestEverythingSupersedes: a purge-everything takes the place of what
// waits for its zone, and covers what arrives while it waits; a soft one
// does not cover hard purges. The items it covers are credited when its
// call is accepted, not before.
func TestEverythingSupersedes(t *testing.T) {
	ob, _ := newOutbox(t)
	ctx := context.Background()
	admit(t, ob, request("r1", false, "z", map[purge.Kind][]string{purge.Files: urls(3, "https://a.example/%d"), purge.Tags: {"t1"}}))
	admit(t, ob, request("other-zone", false, "y", map[purge.Kind][]string{purge.Tags: {"t1"}}))
	admit(t, ob, request("soft", true, "z", map[purge.Kind][]string{purge.Everything: {purge.EverythingKey}}))
	admit(t, ob, request("all", false, "z", map[purge.Kind][]string{purge.Everything: {purge.EverythingKey}}))
	admit(t, ob, request("late", true, "z", map[purge.Kind][]string{purge.Prefixes: {"a.example/x/"}}))
	for _, id := range []string{"r1", "soft", "late", "all"} {
		if st := status(t, ob, id); st.State == "done" || st.Superseded != 0 {
			t.Errorf("%s credited before the purge-everything was accepted: %+v", id, st)
		}
	}
	lanes, _ := ob.Lanes(ctx)
	ids := []string{}
	for _, l := range lanes {
		ids = append(ids, l.id())
	}
	if got := strings.Join(sortStrings(ids), " "); got != "y|tags|0 z|everything|0" {
		t.Errorf("lanes = %s", got)
	}
	_, call := pop(t, ob, PopRequest{Lane: Lane{Zone: "z", Kind: purge.Everything}, Cap: 1, Wait: time.Hour, Eager: true})
	if call == nil || call.Items[0] != purge.EverythingKey {
		t.Fatalf("an eager purge-everything (a full chunk) did not leave at once: %+v", call)
	}
	if _, err := ob.Record(ctx, call, []int{0}, nil, Failure{}, nil); err != nil {
		t.Fatal(err)
	}
	want := map[string]Status{"r1": {Superseded: 4}, "soft": {Superseded: 1}, "late": {Superseded: 1}, "all": {Purged: 1}}
	for id, w := range want {
		if st := status(t, ob, id); st.State != "done" || st.Superseded != w.Superseded || st.Purged != w.Purged {
			t.Errorf("%s after the purge-everything was accepted: %+v, want %+v", id, st, w)
		}
	}
}

// TestEverythingDeadLetters: when the purge-everything call fails for
// good, the items it covered are dead-lettered with it (their requests
// failed), and a retry of the entry sends them out again.
func TestEverythingDeadLetters(t *testing.T) {
	ob, _ := newOutbox(t)
	ctx := context.Background()
	admit(t, ob, request("r1", false, "z", map[purge.Kind][]string{purge.Files: urls(3, "https://a.example/%d")}))
	admit(t, ob, request("all", false, "z", map[purge.Kind][]string{purge.Everything: {purge.EverythingKey}}))
	admit(t, ob, request("late", false, "z", map[purge.Kind][]string{purge.Tags: {"t1", "t2"}}))
	_, call := pop(t, ob, PopRequest{Lane: Lane{Zone: "z", Kind: purge.Everything}, Cap: 1, AllowPartial: true})
	entries, err := ob.Record(ctx, call, nil, []int{0}, Failure{Reason: "refused", Code: 1013}, nil)
	if err != nil || len(entries) != 1 {
		t.Fatalf("Record: %v, %v", entries, err)
	}
	if got := strings.Join(entries[0].Requests, " "); got != "all r1 late" && got != "all late r1" {
		t.Errorf("entry names requests %q", got)
	}
	for id, dead := range map[string]int{"r1": 3, "all": 1, "late": 2} {
		if st := status(t, ob, id); st.State != "failed" || st.Dead != dead {
			t.Errorf("%s: %+v, want failed with %d dead", id, st, dead)
		}
	}
	if n, err := NewDeadLetters(ob.rdb).Retry(ctx, []string{entries[0].ID}); err != nil || n != 1 {
		t.Fatalf("RetryDead: %d, %v", n, err)
	}
	_, again := pop(t, ob, PopRequest{Lane: Lane{Zone: "z", Kind: purge.Everything}, Cap: 1, AllowPartial: true})
	if again == nil {
		t.Fatal("the retried purge-everything is not waiting")
	}
	if _, err := ob.Record(ctx, again, []int{0}, nil, Failure{}, nil); err != nil {
		t.Fatal(err)
	}
	for id, sup := range map[string]int{"r1": 3, "all": 0, "late": 2} {
		if st := status(t, ob, id); st.State != "done" || st.Superseded != sup || st.Dead != 0 {
			t.Errorf("%s after the retry was accepted: %+v", id, st)
		}
	}
}

func sortStrings(s []string) []string {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s
}

// TestWindowAndCrashRecovery: the window bounds outstanding calls of a
// scope; a popped call whose hand-off never finished is found by Stranded.
func TestWindowAndCrashRecovery(t *testing.T) {
	ob, _ := newOutbox(t)
	ctx := context.Background()
	admit(t, ob, request("r", false, "z", map[purge.Kind][]string{purge.Tags: urls(350, "t%d"), purge.Files: {"https://a.example/"}}))
	tags := Lane{Zone: "z", Kind: purge.Tags}
	res1, c1 := pop(t, ob, PopRequest{Lane: tags, Cap: 100, Window: 2})
	_, c2 := pop(t, ob, PopRequest{Lane: tags, Cap: 100, Window: 2})
	if c1 == nil || c2 == nil {
		t.Fatal("two pops within the window failed")
	}
	if res, _ := pop(t, ob, PopRequest{Lane: tags, Cap: 100, Window: 2}); res.Status != WindowFull {
		t.Fatalf("third pop: %+v, want WindowFull", res)
	}
	// Another dispatcher has its own window.
	if _, c := pop(t, ob, PopRequest{Lane: tags, Cap: 100, Window: 2, Owner: "other"}); c == nil || c.Owner != "other" {
		t.Fatalf("another dispatcher was blocked by this one's window: %+v", c)
	}
	// The other scope has its own window.
	if _, c := pop(t, ob, PopRequest{Lane: Lane{Zone: "z", Kind: purge.Files}, Cap: 100, Window: 2, AllowPartial: true}); c == nil {
		t.Fatal("the URL scope was blocked by the flex window")
	}
	if err := ob.Handoff(ctx, res1.CallID); err != nil {
		t.Fatal(err)
	}
	stranded, err := ob.Stranded(ctx, 0)
	if err != nil || len(stranded) != 3 || stranded[c2.ID] == nil || stranded[res1.CallID] != nil {
		t.Fatalf("%d stranded, %v; want c2, the other dispatcher's and the files call", len(stranded), err)
	}
	if _, err := ob.Record(ctx, c1, all(len(c1.Items)), nil, Failure{}, nil); err != nil {
		t.Fatal(err)
	}
	if _, c := pop(t, ob, PopRequest{Lane: tags, Cap: 100, Window: 2, AllowPartial: true}); c == nil || len(c.Items) != 50 {
		t.Fatalf("pop after a call finished: %+v", c)
	}
}

func all(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// TestDeadLetterRetryDrop: dead items get one entry each, credited once
// even when recorded twice; a retry puts them back for their requests,
// which are no longer finished; a drop deletes entries.
func TestDeadLetterRetryDrop(t *testing.T) {
	ob, _ := newOutbox(t)
	ctx := context.Background()
	admit(t, ob, request("r", false, "z", map[purge.Kind][]string{purge.Hosts: {"a.example", "b.example", "c.example"}}))
	hosts := Lane{Zone: "z", Kind: purge.Hosts}
	_, c := pop(t, ob, PopRequest{Lane: hosts, Cap: 100, AllowPartial: true})
	f := Failure{Reason: "permanent", Code: 1115, Message: "Invalid host", Attempts: 1}
	entries, err := ob.Record(ctx, c, []int{0}, []int{1, 2}, f, nil)
	if err != nil || len(entries) != 2 {
		t.Fatalf("Record: %v, %v", entries, err)
	}
	// Recording again (a retry after a lost reply) answers as the first
	// did, so that the entries are mirrored, and credits nothing twice.
	if again, _ := ob.Record(ctx, c, []int{0}, []int{1, 2}, f, nil); len(again) != 2 || again[0].ID != entries[0].ID {
		t.Errorf("a second Record answered %v, want the first's entries %v", again, entries)
	}
	if st := status(t, ob, "r"); st.Purged != 1 || st.Dead != 2 || st.State != "failed" {
		t.Errorf("status: %+v", st)
	}
	list, err := NewDeadLetters(ob.rdb).Entries(ctx, "")
	if err != nil || len(list) != 2 {
		t.Fatalf("DeadEntries: %v, %v", list, err)
	}
	e := list[0]
	if e.Item != "b.example" {
		e = list[1]
	}
	if e.Zone != "z" || e.Kind != purge.Hosts || e.Item != "b.example" || e.Code != 1115 || e.Requests[0] != "r" || e.Attempts != 1 || e.FirstFailed == 0 {
		t.Errorf("entry: %+v", e)
	}
	if other, _ := NewDeadLetters(ob.rdb).Entries(ctx, "other"); len(other) != 0 {
		t.Errorf("zone filter: %v", other)
	}
	if n, err := NewDeadLetters(ob.rdb).Retry(ctx, []string{e.ID, "unknown"}); err != nil || n != 1 {
		t.Fatalf("RetryDead: %d, %v", n, err)
	}
	if st := status(t, ob, "r"); st.Dead != 1 || st.State != "in_progress" {
		t.Errorf("status after retry: %+v", st)
	}
	_, again := pop(t, ob, PopRequest{Lane: hosts, Cap: 100, AllowPartial: true})
	if again == nil || again.Items[0] != "b.example" || again.Sources[0] != "r" {
		t.Fatalf("the retried item did not come back: %+v", again)
	}
	other := list[0].ID
	if other == e.ID {
		other = list[1].ID
	}
	if n, _ := NewDeadLetters(ob.rdb).Drop(ctx, []string{other}); n != 1 {
		t.Errorf("DropDead = %d", n)
	}
	if n, _ := NewDeadLetters(ob.rdb).Count(ctx); n != 0 {
		t.Errorf("%d entries left", n)
	}
}

// always is a Readiness with room.
type always struct{}

func (always) Peek(context.Context, limits.Need) (limits.Result, error) {
	return limits.Result{OK: true}, nil
}

// TestDispatcherFairness: a zone with a huge backlog does not starve a zone
// with one URL: with one call at a time, the small zone's chunk leaves
// within two calls of becoming ready.
func TestDispatcherFairness(t *testing.T) {
	ob, _ := newOutbox(t)
	admit(t, ob, request("big", false, "big", map[purge.Kind][]string{purge.Files: urls(3000, "https://big.example/%d")}))
	var mu sync.Mutex
	var order []string
	var d *Dispatcher
	enqueue := func(ctx context.Context, id string, payload []byte) error {
		c, err := tasks.DecodeCall(payload)
		if err != nil {
			return err
		}
		mu.Lock()
		order = append(order, c.Zone)
		mu.Unlock()
		go func() { // the call completes a moment later
			time.Sleep(5 * time.Millisecond)
			ob.Record(context.Background(), c, all(len(c.Items)), nil, Failure{}, nil)
			d.Wake()
		}()
		return nil
	}
	d = NewDispatcher(ob, enqueue, DispatcherConfig{
		Route: func(string) (Route, bool) {
			return Route{Limits: always{}, Caps: func(purge.Kind) int { return 100 }}, true
		}, BatchWait: 50 * time.Millisecond, Window: 1,
		Lease: time.Hour, Tick: 5 * time.Millisecond, StrandedAfter: time.Second,
	}, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.Run(ctx)
	time.Sleep(30 * time.Millisecond)
	admit(t, ob, request("small", false, "small", map[purge.Kind][]string{purge.Files: {"https://small.example/"}}))
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(order)
		mu.Unlock()
		if n == 31 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d calls after 10s", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	readyAt := -1
	for i, z := range order {
		if z == "small" {
			readyAt = i
		}
	}
	// 50 ms of waiting at ~5 ms a call is at most ~15 calls; it must not
	// wait for the 30 big calls.
	if readyAt < 0 || readyAt > 20 {
		t.Errorf("the small zone's call was number %d of %d: %v", readyAt+1, len(order), order)
	}
	mu.Unlock()
	for status(t, ob, "big").Purged != 3000 {
		if time.Now().After(deadline) {
			t.Fatalf("big: %+v", status(t, ob, "big"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMemoryPerWaitingURL measures the Redis memory one waiting URL costs
// against the target: the URL's length + 100 bytes.
func TestMemoryPerWaitingURL(t *testing.T) {
	ob, rdb := newOutbox(t)
	ctx := context.Background()
	used := func() int64 {
		info, err := rdb.InfoMap(ctx, "memory").Result()
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		fmt.Sscan(info["Memory"]["used_memory"], &n)
		return n
	}
	before := used()
	const n, per = 100000, 1000
	length := 0
	for r := 0; r < n/per; r++ {
		items := urls(per, fmt.Sprintf("https://www.example.com/assets/%d/%%d/app.js", r))
		length = len(items[0])
		admit(t, ob, request(fmt.Sprintf("req-%d", r), false, "z", map[purge.Kind][]string{purge.Files: items}))
	}
	perURL := float64(used()-before) / n
	t.Logf("%d waiting URLs of about %d bytes: %.0f bytes of Redis memory each (target %d)", n, length, perURL, length+100)
	if perURL > float64(length+100) {
		t.Errorf("%.0f bytes per waiting URL", perURL)
	}
}

// TestJSONShapes pins the JSON the scripts and Go share: the call payload
// pop.lua writes is read by tasks.DecodeCall with every field set and none
// unknown, and the fields retry.lua reads of a dead-letter entry are those
// DeadEntry writes.
func TestJSONShapes(t *testing.T) {
	ob, rdb := newOutbox(t)
	ctx := context.Background()
	admit(t, ob, request("r", true, "z", map[purge.Kind][]string{purge.Tags: {"a", "b"}}))
	res, call := pop(t, ob, PopRequest{Lane: Lane{Zone: "z", Kind: purge.Tags, Soft: true}, Cap: 100, AllowPartial: true, Owner: "o1"})
	if call == nil {
		t.Fatal("nothing popped")
	}
	dec := json.NewDecoder(bytes.NewReader(res.Call))
	dec.DisallowUnknownFields()
	var strict tasks.Call
	if err := dec.Decode(&strict); err != nil {
		t.Fatalf("pop.lua wrote a field tasks.Call does not know: %v (%s)", err, res.Call)
	}
	if strict.ID != res.CallID || strict.Zone != "z" || strict.Kind != purge.Tags || !strict.Soft || len(strict.Items) != 2 ||
		len(strict.Sources) != 2 || strict.Sources[0] != "r" || strict.Oldest == 0 || strict.Owner != "o1" {
		t.Errorf("call payload %s read as %+v", res.Call, strict)
	}

	e := DeadEntry{ID: "d1", Zone: "z", Kind: purge.Tags, Soft: true, Item: "a", Requests: []string{"r"}, Sources: "r r2~3"}
	b, _ := json.Marshal(e)
	read := redis.NewScript(`local e = cjson.decode(ARGV[1]); return {e.zone, e.kind, tostring(e.soft), e.item, e.sources}`)
	got, err := read.Run(ctx, rdb, nil, b).StringSlice()
	if err != nil || strings.Join(got, "|") != "z|tags|true|a|r r2~3" {
		t.Errorf("retry.lua's reading of %s: %v, %v", b, got, err)
	}
	if src, _ := luaFiles.ReadFile("lua/retry.lua"); !strings.Contains(string(src), "e.sources") || !strings.Contains(string(src), "e.zone") {
		t.Error("retry.lua no longer reads the fields this test pins")
	}
}

// TestAttribution: a request's producer and source are recorded at
// admission and read back in its status, also while it waits in asynq.
func TestAttribution(t *testing.T) {
	ob, rdb := newOutbox(t)
	ctx := context.Background()
	requests := NewRequests(rdb, time.Hour)
	r := request("attr", false, "z", map[purge.Kind][]string{purge.Tags: {"a"}})
	r.Producer, r.Source = "cms-blog", "post 4711"
	payload, _ := json.Marshal(r)
	ac := asynq.NewClientFromRedisClient(rdb)
	defer ac.Close()
	if _, err := ac.Enqueue(asynq.NewTask(tasks.TypeRequest, payload), asynq.TaskID(r.ID), asynq.Queue(tasks.QueueRequests)); err != nil {
		t.Fatal(err)
	}
	if st, err := requests.Status(ctx, "attr"); err != nil || st.State != Queued || st.Producer != "cms-blog" || st.Source != "post 4711" {
		t.Errorf("queued status %+v, %v", st, err)
	}
	admit(t, ob, r)
	if st, err := requests.Status(ctx, "attr"); err != nil || st.Producer != "cms-blog" || st.Source != "post 4711" || st.Total != 1 {
		t.Errorf("admitted status %+v, %v", st, err)
	}
}

// TestEverythingMinInterval: a purge-everything within the interval of
// the last one sent for its zone merges into it: it shares that call's
// outcome (purged, or dead with it and named by its entry), or, that call
// accepted already, is done at once; after a failed one it goes anew.
func TestEverythingMinInterval(t *testing.T) {
	ob, rdb := newOutbox(t)
	ctx := context.Background()
	everything := func(id string) {
		admit(t, ob, request(id, false, "z", map[purge.Kind][]string{purge.Everything: {purge.EverythingKey}}))
	}
	lane := Lane{Zone: "z", Kind: purge.Everything}
	p := PopRequest{Lane: lane, Cap: 1, AllowPartial: true, EverythingInterval: time.Hour}
	requests := NewRequests(rdb, time.Hour)
	state := func(id string) Status { st, _ := requests.Status(ctx, id); return st }

	everything("e1")
	_, c1 := pop(t, ob, p)
	everything("e2") // while e1's call is in flight
	if res, _ := pop(t, ob, p); res.Status != LaneEmpty {
		t.Fatalf("a purge-everything within the interval made a call of its own: %+v", res)
	}
	if _, err := ob.Record(ctx, c1, []int{0}, nil, Failure{}, nil); err != nil {
		t.Fatal(err)
	}
	if st := state("e2"); st.State != Done || st.Purged != 1 {
		t.Errorf("e2 merged into e1's accepted call: %+v", st)
	}
	everything("e3") // after e1 was accepted, within the interval
	if st := state("e3"); st.State != Done {
		t.Errorf("e3: %+v, want done at once", st)
	}

	rdb.Del(ctx, keyspace.Prefix+"everything-sent:"+lane.id())
	everything("f1")
	_, f := pop(t, ob, p)
	everything("f2")
	entries, err := ob.Record(ctx, f, nil, []int{0}, Failure{Reason: "refused", Code: 1013}, nil)
	if err != nil || len(entries) != 1 {
		t.Fatal(entries, err)
	}
	if st := state("f2"); st.State != Failed || st.Dead != 1 {
		t.Errorf("f2 merged into a dead call: %+v", st)
	}
	dead, _ := NewDeadLetters(rdb).Entries(ctx, "")
	if len(dead) != 1 || !slices.Contains(dead[0].Requests, "f2") || !strings.Contains(dead[0].Sources, "f2") {
		t.Errorf("the dead entry does not name the merged request: %+v", dead)
	}
	everything("f3") // after a failed one: goes anew
	if res, _ := pop(t, ob, p); res.Status != Popped {
		t.Errorf("after a dead purge-everything, the next one did not go: %+v", res)
	}
}

// TestHistory: an accepted call is remembered once, with Cloudflare's id
// and the requests it served (producer, source); an item is found by its
// normalised form (a URL's host in any case, a tag in any case), newest
// first. It also measures the Redis memory one item-purge costs.
func TestHistory(t *testing.T) {
	ob, rdb := newOutbox(t)
	ctx := context.Background()
	h := NewHistory(rdb, time.Hour)
	zones := tasks.Zones{{Name: "a.example", ID: "za"}}
	r := request("hist", false, "za", map[purge.Kind][]string{purge.Files: {"https://a.example/x?v=1"}, purge.Tags: {"product-1"}})
	r.Producer, r.Source = "cms-blog", "post 1"
	admit(t, ob, r)
	for _, kind := range []purge.Kind{purge.Files, purge.Tags} {
		_, c := pop(t, ob, PopRequest{Lane: Lane{Zone: "za", Kind: kind}, Cap: 100, AllowPartial: true})
		for range 2 { // a retried call is remembered once
			if err := h.Remember(ctx, c, "default", "cf-"+string(kind)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for item, want := range map[string]string{"https://A.EXAMPLE/x?v=1": "cf-files", "PRODUCT-1": "cf-tags"} {
		es, err := h.Find(ctx, zones, item, "")
		if err != nil || len(es) != 1 || es[0].CloudflareID != want || es[0].Zone != "a.example" ||
			len(es[0].Requests) != 1 || es[0].Requests[0] != (EntryRequest{ID: "hist", Producer: "cms-blog", Source: "post 1"}) {
			t.Errorf("history of %s: %+v, %v; want one entry %s for request hist", item, es, err, want)
		}
	}
	if es, _ := h.Find(ctx, zones, "https://a.example/x?v=2", ""); len(es) != 0 {
		t.Errorf("another query string found %+v", es)
	}
	// a delayed repeat, purged with another account's token: the entry
	// names the account, the delay and the request repeated
	rep := request("hist-repeat", false, "za", map[purge.Kind][]string{purge.Tags: {"product-2"}})
	rep.RepeatOf, rep.NotBefore = "hist", time.Now().Add(time.Minute).UnixMilli()
	if err := NewRequests(rdb, time.Hour).Follow(ctx, rep); err != nil {
		t.Fatal(err)
	}
	admit(t, ob, rep)
	_, c := pop(t, ob, PopRequest{Lane: Lane{Zone: "za", Kind: purge.Tags}, Cap: 100, AllowPartial: true})
	if err := h.Remember(ctx, c, "shop", "cf-repeat"); err != nil {
		t.Fatal(err)
	}
	es, err := h.Find(ctx, zones, "product-2", "")
	if err != nil || len(es) != 1 || es[0].Account != "shop" || len(es[0].Requests) != 1 || es[0].Requests[0].RepeatOf != "hist" ||
		es[0].Requests[0].NotBefore == nil || es[0].Requests[0].NotBefore.UnixMilli() != rep.NotBefore {
		t.Errorf("history of a delayed repeat: %+v, %v", es, err)
	}

	// memory: 100 calls of 100 distinct URLs, then the same URLs again
	usage := func() int64 {
		var n int64
		keys, _ := rdb.Keys(ctx, keyspace.Prefix+"hist*").Result()
		for _, k := range keys {
			n += rdb.MemoryUsage(ctx, k).Val()
		}
		return n
	}
	var per [2]float64
	for round := range 2 {
		before := usage()
		for i := range 100 {
			c := &tasks.Call{ID: fmt.Sprintf("c%024d", round*1000+i), Zone: "za", Kind: purge.Files}
			for j := range 100 {
				c.Items = append(c.Items, fmt.Sprintf("https://a.example/assets/%d/%d.js", i, j))
				c.Sources = append(c.Sources, "hist")
			}
			if err := h.Remember(ctx, c, "default", "cf"); err != nil {
				t.Fatal(err)
			}
		}
		per[round] = float64(usage()-before) / 10000
	}
	t.Logf("history: %.1f bytes of Redis per item-purge for an item's first purge of the day (its index entry), %.1f for a further purge", per[0], per[1])
	if per[0] > 80 || per[1] > 32 {
		t.Errorf("%.1f and %.1f bytes per item-purge, want at most 80 and 32", per[0], per[1])
	}
}

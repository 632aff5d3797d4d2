package worker_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/callback"
	"github.com/purgeq/purgeq/internal/keyspace"
	"github.com/purgeq/purgeq/internal/testwait"
	"github.com/purgeq/purgeq/purge/cftest"
	"github.com/purgeq/purgeq/tasks"
)

const callbackSecret = "callback-secret-for-tests"

// hook is a callback receiver: it answers fail (a status) while failing
// is set, 200 otherwise, and records every delivery.
type hook struct {
	*httptest.Server
	mu      sync.Mutex
	failing int
	got     []hookDelivery
}

type hookDelivery struct {
	body   callback.Body
	raw    []byte
	signed bool
	status int
	at     time.Time
}

func newHook(t *testing.T, failing int) *hook {
	h := &hook{failing: failing}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		d := hookDelivery{raw: raw, at: time.Now(), signed: callback.Verify([]byte(callbackSecret), raw, r.Header.Get(callback.SignatureHeader))}
		json.Unmarshal(raw, &d.body)
		h.mu.Lock()
		d.status = http.StatusOK
		if h.failing > 0 {
			d.status = h.failing
		}
		h.got = append(h.got, d)
		h.mu.Unlock()
		w.WriteHeader(d.status)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hook) setFailing(status int) {
	h.mu.Lock()
	h.failing = status
	h.mu.Unlock()
}

// deliveries lists what reached the receiver, and those answered 200.
func (h *hook) deliveries() (all, ok []hookDelivery) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, d := range h.got {
		if d.status == http.StatusOK {
			ok = append(ok, d)
		}
	}
	return slices.Clone(h.got), ok
}

func callbackEnv(t *testing.T) *env {
	return setup(t, cftest.Config{}, map[string]string{"PURGE_CALLBACK_SECRET": callbackSecret, "PURGE_BATCH_WAIT": "50ms"})
}

// callbackQueue is what the callbacks queue holds.
func (e *env) callbackQueue() *asynq.QueueInfo {
	info, err := asynq.NewInspectorFromRedisClient(e.rdb).GetQueueInfo(tasks.QueueCallbacks)
	if err != nil {
		return &asynq.QueueInfo{}
	}
	return info
}

// firstCalls is when each item was first (and last) in an accepted call.
func firstCalls(calls []cftest.Call, items ...string) (first, last map[string]time.Time) {
	first, last = map[string]time.Time{}, map[string]time.Time{}
	for _, c := range calls {
		if !c.Accepted() {
			continue
		}
		for _, it := range c.Items {
			if !slices.Contains(items, it) {
				continue
			}
			if _, ok := first[it]; !ok || c.At.Before(first[it]) {
				first[it] = c.At
			}
			if c.At.After(last[it]) {
				last[it] = c.At
			}
		}
	}
	return first, last
}

// TestCallbackRetriedAndSigned: a receiver that answers 500 gets the
// callback again, and the 200 ends it; every body is signed with
// PURGE_CALLBACK_SECRET and carries the request's final status and a
// timestamp. An end noted again (a worker that crashed after queueing the
// delivery, before taking the note off the list) is not delivered twice.
func TestCallbackRetriedAndSigned(t *testing.T) {
	e := callbackEnv(t)
	h := newHook(t, http.StatusInternalServerError)
	e.startWorker()
	rc := e.enqueue(tasks.PurgeRequest{Files: tasks.URLs("https://a.example/cb/1", "https://a.example/cb/2"), CallbackURL: h.URL + "/purged?token=t"})
	testwait.For(t, 10*time.Second, "a first, refused delivery", func() bool { all, _ := h.deliveries(); return len(all) >= 1 })
	h.setFailing(0)
	testwait.For(t, 20*time.Second, "the delivery to be retried", func() bool { _, ok := h.deliveries(); return len(ok) == 1 })
	all, ok := h.deliveries()
	for _, d := range all {
		b := d.body
		if !d.signed || b.ID != rc.ID || b.State != batching.Done || b.Total != 2 || b.Purged != 2 {
			t.Errorf("delivery %s: signed %v", d.raw, d.signed)
		}
		if ts, err := time.Parse(time.RFC3339, b.Timestamp); err != nil || time.Since(ts) > time.Minute {
			t.Errorf("timestamp %q: %v", b.Timestamp, err)
		}
	}
	t.Logf("%d deliveries; the retry %v after the 500", len(all), ok[0].at.Sub(all[0].at).Round(time.Millisecond))

	// As if a worker had crashed after queueing the delivery, before
	// taking the end off the list: the end is followed up again.
	if err := e.rdb.RPush(context.Background(), keyspace.Ended, rc.ID+" done").Err(); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 5*time.Second, "the end noted again to be followed up", func() bool {
		n, err := e.rdb.LLen(context.Background(), keyspace.Ended).Result()
		return err == nil && n == 0
	})
	q := e.callbackQueue()
	if q.Pending+q.Scheduled+q.Retry+q.Active != 0 || q.Completed != 1 {
		t.Errorf("callbacks queue %+v: want the one completed delivery only", q)
	}
	if again, _ := h.deliveries(); len(again) != len(all) {
		t.Errorf("%d deliveries after the end was noted again, want %d", len(again), len(all))
	}
}

// TestDelayHolds: a request with a delay of 2s shows not_before in its
// status and reaches Cloudflare no sooner; plain and streamed alike.
func TestDelayHolds(t *testing.T) {
	e := callbackEnv(t)
	e.startWorker()
	ctx := context.Background()
	plain, streamed := "https://a.example/delay/plain", "https://a.example/delay/streamed"
	start := time.Now()
	rc := e.enqueue(tasks.PurgeRequest{Files: tasks.URLs(plain), Delay: 2 * time.Second})
	st := e.client.NewStream(e.rdb, false, "")
	if err := st.Follow(tasks.PurgeRequest{Delay: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if err := st.Add(ctx, tasks.PurgeRequest{Files: tasks.URLs(streamed)}); err != nil {
		t.Fatal(err)
	}
	src, err := st.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	notBefore := map[string]time.Time{}
	for it, id := range map[string]string{plain: rc.ID, streamed: src.ID} {
		s, err := e.requests.Status(ctx, id)
		if err != nil || s.State != batching.Queued || s.NotBefore == nil || s.NotBefore.Before(start.Add(2*time.Second).Truncate(time.Millisecond)) {
			t.Fatalf("%s: status %+v (%v), want queued with not_before", id, s, err)
		}
		notBefore[it] = *s.NotBefore
	}
	e.waitDone(15*time.Second, rc.ID, src.ID)
	first, _ := firstCalls(e.sim.Calls(), plain, streamed)
	for _, it := range []string{plain, streamed} {
		if first[it].Before(notBefore[it]) {
			t.Errorf("%s sent at %v, before its not_before %v", it, first[it], notBefore[it])
		}
		t.Logf("%s: sent %v after the enqueue, %v after not_before (delay 2s)", it, first[it].Sub(start).Round(time.Millisecond), first[it].Sub(notBefore[it]).Round(time.Millisecond))
	}
}

// TestRepeatAfter: once a request with repeat_after 2s is done, its items
// go out again as a new request no sooner than 2s after the first calls;
// the statuses link the two (repeat {id, at}, repeat_of), and the callback
// is told of both. Plain and streamed alike.
func TestRepeatAfter(t *testing.T) {
	e := callbackEnv(t)
	h := newHook(t, 0)
	e.startWorker()
	ctx := context.Background()
	plain, streamed := "https://a.example/repeat/plain", "https://b.example/repeat/streamed"
	rc := e.enqueue(tasks.PurgeRequest{Files: tasks.URLs(plain), RepeatAfter: 2 * time.Second, CallbackURL: h.URL})
	st := e.client.NewStream(e.rdb, false, "")
	if err := st.Follow(tasks.PurgeRequest{RepeatAfter: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if err := st.Add(ctx, tasks.PurgeRequest{Files: tasks.URLs(streamed)}); err != nil {
		t.Fatal(err)
	}
	src, err := st.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	firsts := e.waitDone(10*time.Second, rc.ID, src.ID)
	for id, s := range firsts {
		if s.State != batching.Done {
			t.Fatalf("%s: %+v", id, s)
		}
	}
	var repeats []string
	testwait.For(t, 5*time.Second, "the repeats to be scheduled", func() bool {
		repeats = repeats[:0]
		for _, id := range []string{rc.ID, src.ID} {
			s, err := e.requests.Status(ctx, id)
			if err != nil || s.Repeat == nil {
				return false
			}
			repeats = append(repeats, s.Repeat.ID)
		}
		return true
	})
	for i, s := range e.waitDone(15*time.Second, repeats...) {
		if s.State != batching.Done || s.Total != 1 || (s.RepeatOf != rc.ID && s.RepeatOf != src.ID) || s.ID != i {
			t.Errorf("repeat %+v", s)
		}
	}
	first, last := firstCalls(e.sim.Calls(), plain, streamed)
	for _, it := range []string{plain, streamed} {
		gap := last[it].Sub(first[it])
		if gap < 2*time.Second {
			t.Errorf("%s purged again %v after the first call, before repeat_after 2s", it, gap)
		}
		t.Logf("%s: purged again %v after the first call (repeat_after 2s)", it, gap.Round(time.Millisecond))
	}
	testwait.For(t, 10*time.Second, "callbacks for the request and its repeat", func() bool { _, ok := h.deliveries(); return len(ok) == 2 })
	_, ok := h.deliveries()
	if b := ok[0].body; b.ID != rc.ID || b.Repeat == nil || b.Repeat.ID != tasks.RepeatID(rc.ID) || b.Repeat.At.Before(first[plain].Add(2*time.Second)) {
		t.Errorf("the first callback %s: want repeat {id, at} of the scheduled repeat", ok[0].raw)
	}
	if b := ok[1].body; b.ID != tasks.RepeatID(rc.ID) || b.RepeatOf != rc.ID || b.State != batching.Done {
		t.Errorf("the repeat's callback %s: want repeat_of", ok[1].raw)
	}
}

// TestFollowupsSurviveWorkerKill: a delayed request queued while a worker
// process runs, the worker killed before the delay is up; another worker
// purges it when due and its callback's first attempt fails; that worker
// is killed too; a third delivers the callback, once.
func TestFollowupsSurviveWorkerKill(t *testing.T) {
	// long enough that even a loaded machine kills the worker in time
	const delay = 4 * time.Second
	e := callbackEnv(t)
	h := newHook(t, http.StatusBadGateway)
	p := e.startWorkerProcess()
	start := time.Now()
	item := "https://a.example/kill/1"
	rc := e.enqueue(tasks.PurgeRequest{Files: tasks.URLs(item), Delay: delay, CallbackURL: h.URL})
	p.kill()
	if took := time.Since(start); took >= delay {
		t.Fatalf("the worker was killed %v after the enqueue, after the delay: the test would prove nothing", took)
	}
	p = e.startWorkerProcess()
	testwait.For(t, 20*time.Second, "a refused delivery, waiting for its retry", func() bool {
		all, _ := h.deliveries()
		return len(all) >= 1 && e.callbackQueue().Retry >= 1
	})
	p.kill()
	h.setFailing(0)
	e.startWorkerProcess()
	testwait.For(t, 60*time.Second, "the callback, delivered by the third worker", func() bool { _, ok := h.deliveries(); return len(ok) == 1 })
	all, ok := h.deliveries()
	if b := ok[0].body; !ok[0].signed || b.ID != rc.ID || b.State != batching.Done || b.Purged != 1 {
		t.Errorf("delivery %s (signed %v)", ok[0].raw, ok[0].signed)
	}
	first, _ := firstCalls(e.sim.Calls(), item)
	if gap := first[item].Sub(start); gap < delay {
		t.Errorf("sent %v after the enqueue, before the delay", gap)
	}
	testwait.For(t, 5*time.Second, "the delivery's task to complete", func() bool { return e.callbackQueue().Completed == 1 })
	t.Logf("%d attempts, 1 delivered; sent %v after the enqueue (delay %v)", len(all), first[item].Sub(start).Round(time.Millisecond), delay)
}

package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/pipeline"
	"github.com/purgeq/purgeq/limits"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

// recorded is one Record the handler made.
type recorded struct {
	purged, dead []int
	reason       string
	resend       [][]string // items of each re-sent call
}

// fakeStore records what the handler asks of the outbox.
type fakeStore struct {
	recordedBefore bool
	inflight       map[string][]byte
	markErr        error
	records        []recorded
	unsent         int
	handedOff      []string
}

func (f *fakeStore) Recorded(context.Context, string) (bool, []batching.DeadEntry, error) {
	return f.recordedBefore, nil, nil
}

func (f *fakeStore) MarkSent(context.Context, string, string) (bool, error) { return true, f.markErr }

func (f *fakeStore) Unsent(context.Context, string) error { f.unsent++; return nil }

func (f *fakeStore) FirstFailure(context.Context, string) (time.Time, error) { return time.Now(), nil }

func (f *fakeStore) Record(_ context.Context, c *tasks.Call, purged, dead []int, fl batching.Failure, resend []*tasks.Call) ([]batching.DeadEntry, error) {
	r := recorded{purged: purged, dead: dead, reason: fl.Reason}
	for _, sub := range resend {
		r.resend = append(r.resend, sub.Items)
		if f.inflight == nil {
			f.inflight = map[string][]byte{}
		}
		b, _ := json.Marshal(sub)
		f.inflight[sub.ID] = b
	}
	f.records = append(f.records, r)
	var entries []batching.DeadEntry
	for _, i := range dead {
		entries = append(entries, batching.DeadEntry{ID: "d" + c.Items[i], Item: c.Items[i]})
	}
	return entries, nil
}

func (f *fakeStore) InFlight(_ context.Context, ids ...string) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, id := range ids {
		if b, ok := f.inflight[id]; ok {
			out[id] = b
		}
	}
	return out, nil
}

func (f *fakeStore) Handoff(_ context.Context, id string) error {
	f.handedOff = append(f.handedOff, id)
	delete(f.inflight, id)
	return nil
}

// fakeAPI answers every call with err (nil: accepted).
type fakeAPI struct {
	err   error
	calls int
}

// fakeRate is the Ratelimit every fake answer carries.
var fakeRate = &purge.RateInfo{Remaining: 7, Reset: 30 * time.Second}

func (a *fakeAPI) Purge(context.Context, string, purge.Batch) (purge.Accepted, error) {
	a.calls++
	if a.err != nil {
		if pe, ok := a.err.(*purge.Error); ok && pe.Status != 0 {
			pe.Rate = fakeRate
		}
		return purge.Accepted{}, a.err
	}
	return purge.Accepted{ID: "cf-1", Rate: fakeRate}, nil
}

// fakeLimiter grants or refuses every acquisition and records cooldowns.
type fakeLimiter struct {
	busy      time.Duration
	cooldowns []purge.Scope
	observed  []int // the remaining counts observed
}

func (l *fakeLimiter) Observe(_ context.Context, remaining int, _ time.Duration, _ time.Time) error {
	l.observed = append(l.observed, remaining)
	return nil
}

func (l *fakeLimiter) Acquire(context.Context, limits.Need) (limits.Result, error) {
	if l.busy > 0 {
		return limits.Result{Wait: l.busy, Blocker: "flex"}, nil
	}
	return limits.Result{OK: true, At: time.Now()}, nil
}

func (l *fakeLimiter) Cooldown(_ context.Context, s purge.Scope, d time.Duration) (time.Time, error) {
	l.cooldowns = append(l.cooldowns, s)
	return time.Now().Add(d), nil
}

func (l *fakeLimiter) CooldownFor(*purge.Error, limits.Need, time.Duration) time.Duration {
	return time.Minute
}

func callTask(t *testing.T, items ...string) *asynq.Task {
	t.Helper()
	c := tasks.Call{ID: "c1", Zone: "z", Kind: purge.Tags, Items: items}
	for range items {
		c.Sources = append(c.Sources, "r1")
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return asynq.NewTask(tasks.TypeCall, b)
}

// TestCallDecisions maps every outcome of a call onto what the handler
// records, re-sends and tells asynq.
func TestCallDecisions(t *testing.T) {
	permanent := func(items ...string) error {
		return &purge.Error{Class: purge.Permanent, Status: 400, Code: purge.CodeUnableToPurge, Message: "Unable to purge", Items: items}
	}
	tests := []struct {
		name     string
		items    []string
		apiErr   error
		store    fakeStore
		busy     time.Duration
		maxRetry int
		// what should happen
		wantErr      string // "", "wait", "transient"
		wantAPICalls int
		wantRecords  []recorded
		wantCooldown []purge.Scope
		wantHandoff  []string
		wantUnsent   int
	}{
		{name: "accepted", items: []string{"a", "b"}, wantAPICalls: 1,
			wantRecords: []recorded{{purged: []int{0, 1}}}},
		{name: "global 429 waits out a cooldown", items: []string{"a"}, apiErr: &purge.Error{Class: purge.RateLimited, Scope: purge.ScopeGlobal, Status: 429, Code: 971},
			wantErr: "wait", wantAPICalls: 1, wantCooldown: []purge.Scope{purge.ScopeGlobal}, wantUnsent: 1},
		{name: "transient within the budget is retried", items: []string{"a"}, apiErr: &purge.Error{Class: purge.Transient, Status: 502}, maxRetry: 1,
			wantErr: "transient", wantAPICalls: 1, wantUnsent: 1},
		{name: "transient past the budget dead-letters all", items: []string{"a", "b"}, apiErr: &purge.Error{Class: purge.Transient, Status: 502}, maxRetry: 0,
			wantAPICalls: 1, wantUnsent: 1, wantRecords: []recorded{{dead: []int{0, 1}, reason: "gave up after 1 attempts"}}},
		{name: "permanent naming one item dead-letters it and re-sends the rest", items: []string{"a", "b", "c"}, apiErr: permanent("b"),
			wantAPICalls: 1, wantUnsent: 1, wantRecords: []recorded{{dead: []int{1}, reason: "Cloudflare refused", resend: [][]string{{"a", "c"}}}},
			wantHandoff: []string{"c1r"}},
		{name: "permanent naming none splits the batch", items: []string{"a", "b", "c", "d"}, apiErr: permanent(),
			wantAPICalls: 1, wantUnsent: 1, wantRecords: []recorded{{reason: "Cloudflare refused", resend: [][]string{{"a", "b"}, {"c", "d"}}}},
			wantHandoff: []string{"c1a", "c1b"}},
		{name: "permanent naming none on one item dead-letters it", items: []string{"a"}, apiErr: permanent(),
			wantAPICalls: 1, wantUnsent: 1, wantRecords: []recorded{{dead: []int{0}, reason: "Cloudflare refused"}}},
		{name: "misconfigured dead-letters all with advice", items: []string{"a", "b"}, apiErr: &purge.Error{Class: purge.Misconfigured, Status: 404, Code: purge.CodeNoRoute},
			wantAPICalls: 1, wantUnsent: 1, wantRecords: []recorded{{dead: []int{0, 1}, reason: "fix PURGE_ZONES"}}},
		{name: "recorded before: no API call, the re-sent part is handed off", items: []string{"a", "b"},
			store: fakeStore{recordedBefore: true, inflight: map[string][]byte{"c1r": []byte(`{"id":"c1r"}`)}}, wantHandoff: []string{"c1r"}},
		{name: "busy limits wait without calling", items: []string{"a"}, busy: time.Minute, wantErr: "wait"},
		{name: "unreachable Redis waits", items: []string{"a"}, store: fakeStore{markErr: io.EOF}, wantErr: "wait"},
		{name: "a Redis answer refusing a command is a failure", items: []string{"a"}, store: fakeStore{markErr: errors.New("OOM command not allowed")}, wantErr: "OOM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store, api, lim := tt.store, &fakeAPI{err: tt.apiErr}, &fakeLimiter{busy: tt.busy}
			var enqueued []string
			acct := &pipeline.Account{Name: "default", Limiter: lim, API: api, Cooldown: time.Minute}
			h := &pipeline.CallHandler{Outbox: &store, Route: func(string) (*pipeline.Account, bool) { return acct, true }, InlineWait: time.Second, MaxRetry: tt.maxRetry,
				Enqueue: func(_ context.Context, id string, _ []byte) error { enqueued = append(enqueued, id); return nil },
				Archive: func(context.Context, []batching.DeadEntry) {},
				Done:    func() {},
				Observe: func(*tasks.Call, string, string, purge.Scope) {},
				Log:     zerolog.Nop()}
			err := h.ProcessTask(context.Background(), callTask(t, tt.items...))
			var w *pipeline.Wait
			var pe *purge.Error
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("error %v, want none", err)
			case tt.wantErr == "wait" && !errors.As(err, &w):
				t.Errorf("error %v, want a Wait", err)
			case tt.wantErr == "wait" && pipeline.IsFailure(err):
				t.Errorf("a Wait counts as a failure")
			case tt.wantErr == "transient" && (!errors.As(err, &pe) || !pipeline.IsFailure(err)):
				t.Errorf("error %v, want a transient failure for asynq to retry", err)
			case tt.wantErr != "" && tt.wantErr != "wait" && tt.wantErr != "transient" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || !pipeline.IsFailure(err)):
				t.Errorf("error %v, want a failure with %q", err, tt.wantErr)
			}
			if api.calls != tt.wantAPICalls {
				t.Errorf("%d API calls, want %d", api.calls, tt.wantAPICalls)
			}
			if len(store.records) != len(tt.wantRecords) {
				t.Fatalf("records %+v, want %+v", store.records, tt.wantRecords)
			}
			for i, want := range tt.wantRecords {
				got := store.records[i]
				if !slices.Equal(got.purged, want.purged) || !slices.Equal(got.dead, want.dead) || !strings.Contains(got.reason, want.reason) ||
					len(got.resend) != len(want.resend) {
					t.Errorf("record %+v, want %+v", got, want)
					continue
				}
				for j := range want.resend {
					if !slices.Equal(got.resend[j], want.resend[j]) {
						t.Errorf("re-sent %v, want %v", got.resend[j], want.resend[j])
					}
				}
			}
			// every answer's count of the window is kept
			if answered := api.calls; len(lim.observed) > answered || (answered > 0 && tt.apiErr == nil && len(lim.observed) != answered) {
				t.Errorf("observed %v after %d answers", lim.observed, answered)
			}
			if !slices.Equal(lim.cooldowns, tt.wantCooldown) {
				t.Errorf("cooldowns %v, want %v", lim.cooldowns, tt.wantCooldown)
			}
			slices.Sort(enqueued)
			if !slices.Equal(enqueued, tt.wantHandoff) || !slices.Equal(sorted(store.handedOff), tt.wantHandoff) {
				t.Errorf("enqueued %v, handed off %v, want %v", enqueued, store.handedOff, tt.wantHandoff)
			}
			if store.unsent != tt.wantUnsent {
				t.Errorf("%d unsent, want %d", store.unsent, tt.wantUnsent)
			}
		})
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

package limits_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/purgeq/purgeq/limits"
	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
)

// caller acquires need like the call handler does: on a wait, sleep it and
// ask again. It returns once granted, or when ctx ends.
func caller(ctx context.Context, l *limits.Limiter, need limits.Need) bool {
	for {
		r, err := l.Acquire(ctx, need)
		if err != nil {
			return false
		}
		if r.OK {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(r.Wait):
		}
	}
}

// callers runs n callers of need in a loop until stop is called, which
// waits for them; grants counts what they were granted.
func callers(ctx context.Context, l *limits.Limiter, n int, need limits.Need) (grants *atomic.Int64, stop func()) {
	grants = new(atomic.Int64)
	var wg sync.WaitGroup
	done := make(chan struct{})
	for range n {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if caller(ctx, l, need) {
					grants.Add(1)
				}
			}
		})
	}
	return grants, func() { close(done); wg.Wait() }
}

// TestFairAcrossLanes: eight calls of a busy zone wait for every token of
// the flex bucket; a lone call of another zone that starts waiting gets one
// of the next two tokens, not a place behind the eight.
func TestFairAcrossLanes(t *testing.T) {
	cfg := roomy(scopeName(t), rate.Per(1000, time.Second), 0)
	cfg.Flex = limits.Bucket{Rate: rate.Per(20, time.Second), Burst: 1}
	l := newLimiter(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	busyGrants, stop := callers(ctx, l, 8, limits.Need{Kind: purge.Tags, Items: 100, Lane: "busy.example"})
	for busyGrants.Load() < 10 { // the busy lane has been served for a while
		if ctx.Err() != nil {
			t.Fatal("the busy lane got no tokens")
		}
		time.Sleep(10 * time.Millisecond)
	}
	worst := int64(0)
	for range 5 {
		before := busyGrants.Load()
		if !caller(ctx, l, limits.Need{Kind: purge.Tags, Items: 1, Lane: "quiet.example"}) {
			t.Fatal("the quiet lane was never served")
		}
		worst = max(worst, busyGrants.Load()-before)
		// let the busy lane be served again before the next round
		for b := busyGrants.Load(); busyGrants.Load() < b+3; {
			time.Sleep(5 * time.Millisecond)
		}
	}
	cancel()
	stop()
	if worst > 2 {
		t.Errorf("the quiet lane waited behind %d busy calls; want at most 2", worst)
	}
}

// TestFairGlobalAcrossScopes: URL calls keep the global window full; a tag
// call whose bucket has a token takes the first global slot that frees
// instead of losing it to them again and again: it asks at most twice
// (refused while the window is full, granted when a slot frees).
func TestFairGlobalAcrossScopes(t *testing.T) {
	cfg := roomy(scopeName(t), rate.Per(10, time.Second), 0)
	cfg.Flex = limits.Bucket{Rate: rate.Per(4, time.Second), Burst: 1}
	l := newLimiter(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	urlGrants, stop := callers(ctx, l, 6, limits.Need{Kind: purge.Files, Items: 10, Lane: "files.example"})
	for urlGrants.Load() < 10 {
		if ctx.Err() != nil {
			t.Fatal("no URL call got a slot")
		}
		time.Sleep(10 * time.Millisecond)
	}
	tag := limits.Need{Kind: purge.Tags, Items: 1, Lane: "tags.example"}
	for round := range 4 {
		// from when the tag call's bucket holds a token
		for {
			r, err := l.Peek(ctx, tag)
			if err != nil {
				t.Fatal(err)
			}
			if r.BucketTokens >= 1 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		var blockers []string
		for {
			r, err := l.Acquire(ctx, tag)
			if err != nil {
				t.Fatal(err)
			}
			if r.OK {
				break
			}
			blockers = append(blockers, r.Blocker)
			time.Sleep(r.Wait)
		}
		if len(blockers) > 1 {
			t.Errorf("round %d: the tag call was refused %d times (%v); want at most once, while the window was full", round, len(blockers), blockers)
		}
	}
	cancel()
	stop()
}

// TestAccountsShareTheTokenWindowOnly: two accounts on one token have a
// bucket each, and one global window.
func TestAccountsShareTheTokenWindowOnly(t *testing.T) {
	token := scopeName(t)
	one := limits.Bucket{Rate: rate.Per(1, time.Hour), Burst: 1}
	a, b := roomy(token, rate.Per(3, time.Hour), 0), roomy(token, rate.Per(3, time.Hour), 0)
	a.Account, b.Account = "a", "b"
	a.Flex, b.Flex = one, one
	la, lb := newLimiter(t, a), newLimiter(t, b)
	ctx := context.Background()
	tag := limits.Need{Kind: purge.Tags, Items: 1}
	for i, step := range []struct {
		l    *limits.Limiter
		ok   bool
		want string
	}{{la, true, ""}, {la, false, "flex"}, {lb, true, ""}, {lb, false, "flex"}} {
		r, err := step.l.Acquire(ctx, tag)
		if err != nil || r.OK != step.ok || r.Blocker != step.want {
			t.Fatalf("step %d: %+v %v", i, r, err)
		}
	}
	// two slots taken of three: one left, for either account
	if r, _ := la.Acquire(ctx, limits.Need{Kind: purge.Files, Items: 1}); !r.OK {
		t.Fatalf("third slot: %+v", r)
	}
	if r, _ := lb.Acquire(ctx, limits.Need{Kind: purge.Files, Items: 1}); r.OK || r.Blocker != "global" {
		t.Errorf("account b past the shared window: %+v", r)
	}
	// a cooldown of a's bucket leaves b's alone; a global one stops both
	if _, err := la.Cooldown(ctx, purge.ScopeURL, time.Hour); err != nil {
		t.Fatal(err)
	}
	sa, _ := la.State(ctx)
	sb, _ := lb.State(ctx)
	if _, ok := sa.Cooldowns[purge.ScopeURL]; !ok || len(sb.Cooldowns) != 0 {
		t.Errorf("cooldowns a %v, b %v", sa.Cooldowns, sb.Cooldowns)
	}
}

// TestObserveCloudflareRemaining: Cloudflare said two calls remain for a
// while: the third waits though the configured window has room; a later
// observation that more remain never lifts the configured limit.
func TestObserveCloudflareRemaining(t *testing.T) {
	l := newLimiter(t, roomy(scopeName(t), rate.Per(5, time.Hour), 0))
	ctx := context.Background()
	need := limits.Need{Kind: purge.Tags, Items: 1}
	zeroth, _ := l.Acquire(ctx, need)
	first, _ := l.Acquire(ctx, need)
	// the answer to the first call: three remain (so two for us: one is
	// kept for the token's other users)
	if err := l.Observe(ctx, 3, time.Hour, first.At); err != nil {
		t.Fatal(err)
	}
	var last limits.Result
	for i := range 2 {
		if last, _ = l.Acquire(ctx, need); !last.OK {
			t.Fatalf("call %d: %+v", i+3, last)
		}
	}
	r, _ := l.Acquire(ctx, need)
	if r.OK || r.Blocker != "cloudflare" || r.Wait < 59*time.Minute {
		t.Fatalf("fifth call: %+v", r)
	}
	// the answer to an earlier call arriving late changes nothing
	if err := l.Observe(ctx, 1000, time.Hour, zeroth.At); err != nil {
		t.Fatal(err)
	}
	if r, _ := l.Acquire(ctx, need); r.OK {
		t.Fatalf("after a late answer to an earlier call: %+v", r)
	}
	// the answer to the latest call says plenty remain: the configured 5
	// still hold
	if err := l.Observe(ctx, 1000, time.Hour, last.At); err != nil {
		t.Fatal(err)
	}
	if r, _ := l.Acquire(ctx, need); !r.OK {
		t.Fatalf("fifth call after the latest answer: %+v", r)
	}
	if r, _ := l.Acquire(ctx, need); r.OK || r.Blocker != "global" {
		t.Errorf("sixth call: %+v (the configured 5 still hold)", r)
	}
}

// TestObserveReset: once the slot Cloudflare said frees next is free, one
// call goes, and no other until an answer says more.
func TestObserveReset(t *testing.T) {
	l := newLimiter(t, roomy(scopeName(t), rate.Per(100, time.Hour), 0))
	ctx := context.Background()
	need := limits.Need{Kind: purge.Tags, Items: 1}
	first, _ := l.Acquire(ctx, need)
	if err := l.Observe(ctx, 0, 200*time.Millisecond, first.At); err != nil {
		t.Fatal(err)
	}
	r, _ := l.Acquire(ctx, need)
	if r.OK || r.Blocker != "cloudflare" || r.Wait > 200*time.Millisecond {
		t.Fatalf("with none remaining: %+v", r)
	}
	time.Sleep(r.Wait)
	if r, _ := l.Acquire(ctx, need); !r.OK {
		t.Fatalf("once the slot freed: %+v", r)
	}
	if r, _ := l.Acquire(ctx, need); r.OK || r.Blocker != "cloudflare" {
		t.Errorf("a second call before the first's answer: %+v", r)
	}
}

// TestLargeCallNotStarved: calls of one URL keep the URL bucket empty; a
// call of 60 URLs of another lane that waits is served once the bucket
// holds 60, instead of losing every token to the small ones (it would
// never see 60 otherwise).
func TestLargeCallNotStarved(t *testing.T) {
	cfg := roomy(scopeName(t), rate.Per(1_000_000, time.Second), 0)
	cfg.URL = limits.Bucket{Rate: rate.Per(50, time.Second), Burst: 100}
	l := newLimiter(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	small, stop := callers(ctx, l, 8, limits.Need{Kind: purge.Files, Items: 1, Lane: "small.example"})
	for small.Load() < 130 { // the burst is gone: the bucket hovers near empty
		if ctx.Err() != nil {
			t.Fatal("the small calls got no tokens")
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	granted := caller(ctx, l, limits.Need{Kind: purge.Files, Items: 60, Lane: "big.example"})
	stop()
	if !granted {
		t.Fatalf("the call of 60 URLs was never served in %v", time.Since(start).Round(time.Millisecond))
	}
	t.Logf("the call of 60 URLs was served %v after it began to wait (60 URLs refill in 1.2 s)", time.Since(start).Round(time.Millisecond))
}
